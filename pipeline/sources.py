"""Where the loader's windows come from: shard streams (local, URL, ``pipe:``) and the Zarr store.

Both sources give a window in one layout, the decode stage's output (DESIGN.md, physical
units, NaN kept)::

    precip, soil, temp   [T, N_valid, p, p]  float32 (or the store's dtype)
    evap, riverflow      [T, C]              float32, every catchment
    meta                 {"start": ISO date, "split": str}
    __key__              "YYYYMMDD" (the window's start)

The tar reader is strict where a general one is lenient: every header's checksum is
verified, a shard that ends early or holds fewer windows than its manifest says is
reported (``tarfile`` stops silently at a damaged header in the middle of an archive),
and a window whose members are not exactly the six expected ones is reported and dropped,
never split into two partial samples. Members are read into one uninitialised buffer each
and decoded as zero-copy views, so a window costs one read of its bytes.
:func:`read_shard` is the same reader for a whole shard when any fault should raise.

Problems are not raised: each becomes a :class:`LoaderEvent` passed to a ``report``
callback, so that the loader can skip, count and log them and keep every rank's batch
count equal.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import subprocess
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.dataset import (
    IMAGE_VARS,
    MANIFEST,
    STORE,
    VECTOR_VARS,
    parse_manifest,
    window_key,
)

BLOCK = 512
MEMBERS = frozenset({*(f"{v}.npy" for v in (*IMAGE_VARS, *VECTOR_VARS)), "meta.json"})
NPY_MAGIC = b"\x93NUMPY"

# kinds of LoaderEvent
RETRY = "retry"  # a shard could not be opened or read; trying again
UNREACHABLE = "unreachable"  # ... and gave up after the last retry: the shard is skipped
CORRUPT = "corrupt"  # a shard is truncated or damaged: the rest of it is skipped
BAD_WINDOW = "bad_window"  # one window lacks members or is malformed: it is skipped


@dataclass(frozen=True)
class LoaderEvent:
    """Something the loader skipped or retried, named by its shard (and window key)."""

    kind: str  # RETRY, UNREACHABLE, CORRUPT or BAD_WINDOW
    shard: str  # the shard's name, e.g. "train-000001.tar"
    detail: str

    def message(self) -> str:
        what = {
            RETRY: "retrying",
            UNREACHABLE: "unreachable, skipped",
            CORRUPT: "corrupt or truncated, rest of the shard skipped",
            BAD_WINDOW: "bad window skipped",
        }[self.kind]
        return f"shard {self.shard}: {what}: {self.detail}"


Report = Callable[[LoaderEvent], None]
Buffer = bytearray | np.ndarray  # a member's bytes (an ndarray is uint8, 1-D)


class ShardError(Exception):
    """A shard's bytes are not a well-formed hydromae shard (reported as CORRUPT)."""


# ------------------------------------------------------------------ locations
def is_url(location: str) -> bool:
    return location.startswith("pipe:") or "://" in location


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a directory or a URL."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def shard_label(location: str) -> str:
    """The shard's file name: ``train-000001.tar`` for a path, URL or ``pipe:`` command."""
    if location.startswith("pipe:"):
        tokens = location[5:].split()
        location = tokens[-1] if tokens else location
    path = urllib.parse.urlparse(location).path if "://" in location else location
    return Path(path).name


class _PipeStream(io.RawIOBase):
    """The stdout of a ``pipe:`` command; a failing command is an ``OSError`` at EOF."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.proc = subprocess.Popen(
            command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.proc.stdout.readinto(buffer)
        if n == 0:
            code = self.proc.wait()
            if code != 0:
                err = self.proc.stderr.read().decode(errors="replace").strip()
                raise OSError(f"pipe:{self.command} exited with {code}: {err[-300:]}")
        return n

    def close(self) -> None:
        if not self.closed:
            self.proc.stdout.close()
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stderr.close()
        super().close()


def open_location(location: str, timeout: float = 60.0) -> BinaryIO:
    """A binary stream: a local path, ``file://``, ``http(s)://``, ``pipe:CMD`` or fsspec URL.

    HTTP uses the standard library (no extra dependency); other schemes (``s3://``,
    ``gs://``, ...) go through ``fsspec`` and need its plugin for that scheme installed
    (``s3://``: ``pip install "hydromae[s3]"``); without it, an ``ImportError`` says so.
    """
    if location.startswith("pipe:"):
        return io.BufferedReader(_PipeStream(location[5:]), buffer_size=1 << 20)
    if location.startswith(("http://", "https://")):
        return urllib.request.urlopen(location, timeout=timeout)
    if location.startswith("file://"):
        location = urllib.parse.urlparse(location).path
    if "://" in location:
        return _open_fsspec(location)
    return open(location, "rb", buffering=1 << 20)


def _open_fsspec(location: str) -> BinaryIO:
    """``location`` opened by ``fsspec``; a missing plugin is an ``ImportError`` naming it."""
    scheme = location.split("://", 1)[0]
    try:
        import fsspec

        return fsspec.open(location, "rb").open()
    except ImportError as err:
        if scheme in ("s3", "s3a"):
            hint = 's3:// needs s3fs: pip install "hydromae[s3]"'
        else:
            hint = f"{scheme}:// needs fsspec and its plugin for {scheme}:// installed"
        raise ImportError(f"cannot open {location}: {hint} ({err})") from err


def retry_delays(retries: int, backoff: float) -> list[float]:
    """Seconds to wait before each retry: ``backoff``, doubled each time."""
    return [backoff * 2**i for i in range(retries)]


def read_location(location: str, retries: int = 3, backoff: float = 0.5, timeout: float = 60.0):
    """All bytes at ``location``, retried on ``OSError`` (bounded, with backoff)."""
    for delay in [*retry_delays(retries, backoff), None]:
        try:
            with open_location(location, timeout) as fh:
                return fh.read()
        except FileNotFoundError:
            raise
        except OSError:
            if delay is None:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


def load_manifest(source: str, retries: int = 3, backoff: float = 0.5) -> dict[str, Any]:
    """The manifest of a dataset directory or of a dataset served at a URL."""
    if not is_url(source):
        from pipeline.dataset import read_manifest

        return read_manifest(source)
    location = join(source, MANIFEST)
    return parse_manifest(read_location(location, retries, backoff), location)


# ------------------------------------------------------------------ decode
@functools.lru_cache(maxsize=64)
def npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of an ``.npy`` header (magic included), parsed once.

    Every window of a dataset has the same few headers, so the parse (a ``literal_eval``)
    is cached by their bytes.
    """
    fp = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except ValueError as err:
        raise ShardError(f"bad .npy header: {err}") from None
    if dtype.hasobject:
        raise ShardError("object arrays are not allowed")
    return shape, fortran, dtype


def decode_npy_view(buf: Buffer) -> np.ndarray:
    """An ``.npy`` member as a view of its bytes (no copy; writable, as the buffer is)."""
    if bytes(buf[:6]) != NPY_MAGIC or len(buf) < 10:
        raise ShardError("not an .npy member (bad magic)")
    major = int(buf[6])
    size_bytes = 2 if major == 1 else 4
    header_len = int.from_bytes(bytes(buf[8 : 8 + size_bytes]), "little")
    offset = 8 + size_bytes + header_len
    shape, fortran, dtype = npy_header(bytes(buf[:offset]))
    count = int(np.prod(shape, dtype=np.int64))
    if offset + count * dtype.itemsize != len(buf):
        raise ShardError(
            f".npy member holds {len(buf) - offset} data bytes, its header says "
            f"{count * dtype.itemsize}"
        )
    array = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")


@dataclass(frozen=True)
class WindowShape:
    """What a well-formed window holds: ``T`` days, ``N_valid`` patches of ``p x p``, ``C``."""

    days: int
    patches: int
    patch_size: int
    catchments: int

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> WindowShape:
        return cls(
            int(manifest["window"]),
            len(manifest["valid_patch_indices"]),
            int(manifest["grid"]["patch_size"]),
            len(manifest["catchments"]["ids"]),
        )

    def check(self, window: dict[str, Any]) -> None:
        p = self.patch_size
        for name in IMAGE_VARS:
            if window[name].shape != (self.days, self.patches, p, p):
                raise ShardError(
                    f"{name} has shape {window[name].shape}, expected "
                    f"{(self.days, self.patches, p, p)}"
                )
        for name in VECTOR_VARS:
            if window[name].shape != (self.days, self.catchments):
                raise ShardError(
                    f"{name} has shape {window[name].shape}, expected "
                    f"{(self.days, self.catchments)}"
                )


def decode_window(
    key: str, members: dict[str, Buffer], shape: WindowShape | None
) -> dict[str, Any]:
    """The decode stage: one window's members to arrays (views of the member bytes).

    ``shape`` (from the manifest) checks the arrays' shapes; None skips that check.
    """
    missing = sorted(MEMBERS - set(members))
    extra = sorted(set(members) - MEMBERS)
    if missing or extra:
        raise ShardError(
            f"window {key!r}: "
            + ("; ".join(filter(None, [missing and f"lacks {missing}", extra and f"has {extra}"])))
        )
    window: dict[str, Any] = {"__key__": key}
    for field, data in members.items():
        name = field.rsplit(".", 1)[0]
        if field.endswith(".json"):
            try:
                window[name] = json.loads(bytes(data))
            except ValueError as err:
                raise ShardError(f"window {key!r}: {field} is not JSON: {err}") from None
        else:
            try:
                window[name] = decode_npy_view(data)
            except ShardError as err:
                raise ShardError(f"window {key!r}: {field}: {err}") from None
    try:
        start = dt.date.fromisoformat(window["meta"]["start"])
    except (KeyError, TypeError, ValueError):
        raise ShardError(f"window {key!r}: meta.json has no valid 'start'") from None
    if window_key(start) != key:
        raise ShardError(f"window {key!r}: meta start {start} does not match the key")
    if shape is not None:
        try:
            shape.check(window)
        except ShardError as err:
            raise ShardError(f"window {key!r}: {err}") from None
    return window


# ------------------------------------------------------------------ tar streams
def _read_exact(stream: BinaryIO, size: int, fresh: bool = False) -> Buffer:
    """Exactly ``size`` bytes (fewer only at end of stream).

    A ``bytearray``, or with ``fresh`` an uninitialised ``[size]`` uint8 array: no zero
    fill, and numpy asks for huge pages for large ones (fewer page faults).
    """
    buf: Buffer = np.empty(size, dtype=np.uint8) if fresh else bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return buf if got == size else buf[:got]


def tar_members(stream: BinaryIO) -> Iterator[tuple[str, Buffer]]:
    """``(name, data)`` of each regular file of a tar stream; ``ShardError`` if malformed.

    Every header's checksum is verified; an archive must end with its zero blocks (a
    stream that simply stops is truncated).
    """
    while True:
        header = _read_exact(stream, BLOCK)
        if len(header) < BLOCK:
            raise ShardError("truncated: the stream ends without the archive's end blocks")
        if header.count(0) == BLOCK:
            return  # end of archive
        try:
            info = tarfile.TarInfo.frombuf(bytes(header), "utf-8", "surrogateescape")
        except tarfile.HeaderError as err:
            raise ShardError(f"damaged tar header: {err}") from None
        padded = -(-info.size // BLOCK) * BLOCK
        if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            data = _read_exact(stream, info.size, fresh=True)
            if len(data) < info.size:
                raise ShardError(f"truncated inside member {info.name!r}")
            if padded > info.size and len(_read_exact(stream, padded - info.size)) < (
                padded - info.size
            ):
                raise ShardError(f"truncated after member {info.name!r}")
            yield info.name, data
        elif info.type == tarfile.DIRTYPE:
            continue
        else:
            raise ShardError(
                f"member {info.name!r} has tar type {info.type!r}; shards hold plain files "
                "(USTAR) only"
            )


def shard_windows(
    stream: BinaryIO,
    shard: str,
    shape: WindowShape | None,
    report: Report,
    keep: Callable[[int], bool] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(position in the shard, window)`` of one shard stream, in order (the decode stage).

    ``keep(i)`` says whether the ``i``-th window of the shard is wanted: the others are
    read past but not decoded. A malformed window is reported (BAD_WINDOW) and skipped; a
    malformed archive raises ``ShardError`` after the windows before the damage. Returns
    (as the generator's value) the number of windows seen, good or bad.
    """
    seen: set[str] = set()
    key: str | None = None
    members: dict[str, Buffer] = {}
    index = 0

    def finish() -> tuple[int, dict[str, Any]] | None:
        nonlocal index
        i, index = index, index + 1
        if keep is not None and not keep(i):
            return None
        try:
            return i, decode_window(key, members, shape)
        except ShardError as err:
            report(LoaderEvent(BAD_WINDOW, shard, str(err)))
            return None

    for name, data in tar_members(stream):
        base = name.rsplit("/", 1)[-1]
        member_key, _, field = base.partition(".")
        if member_key != key:
            if key is not None:
                window = finish()
                if window is not None:
                    yield window
            if member_key in seen:
                report(
                    LoaderEvent(
                        BAD_WINDOW,
                        shard,
                        f"window {member_key!r}: its members are not adjacent; the later ones "
                        "are dropped",
                    )
                )
            seen.add(member_key)
            key, members = member_key, {}
        if field in members:
            raise ShardError(f"window {key!r}: member {field!r} appears twice")
        members[field] = data
    if key is not None:
        window = finish()
        if window is not None:
            yield window
    return index


def stream_shard(
    location: str,
    expected: int,
    shape: WindowShape,
    report: Report,
    first: int = 0,
    limit: int | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 60.0,
) -> Iterator[dict[str, Any]]:
    """Windows ``first`` to ``limit - 1`` of the shard at ``location``, with fault reports.

    Windows before ``first`` are read past, not decoded; reading stops after ``limit``.
    Opening and reading are retried on ``OSError`` up to ``retries`` times with exponential
    backoff (a retry after a partial read resumes after the windows already given); after
    the last retry the shard is reported UNREACHABLE. A malformed archive, or one that
    ends before ``min(expected, limit)`` windows (the manifest's count), is reported
    CORRUPT. Nothing is raised: the caller pads what is missing.
    """
    name = shard_label(location)
    limit = expected if limit is None else limit
    nxt = first  # the next window to give
    delays = retry_delays(retries, backoff)
    attempt = 0
    while nxt < limit:
        try:
            with open_location(location, timeout) as stream:
                windows = shard_windows(
                    stream, name, shape, report, keep=lambda i, lo=nxt: lo <= i < limit
                )
                while nxt < limit:
                    try:
                        position, window = next(windows)
                    except StopIteration as stop:
                        if stop.value < min(expected, limit):
                            report(
                                LoaderEvent(
                                    CORRUPT,
                                    name,
                                    f"ends after {stop.value} window(s), the manifest says "
                                    f"{expected}",
                                )
                            )
                        return
                    nxt = position + 1
                    yield window
                return
        except ShardError as err:
            report(LoaderEvent(CORRUPT, name, str(err)))
            return
        except (OSError, EOFError) as err:
            if attempt >= len(delays):
                report(
                    LoaderEvent(UNREACHABLE, name, f"{location}: after {retries} retries: {err}")
                )
                return
            report(LoaderEvent(RETRY, name, f"{location}: attempt {attempt + 1} failed: {err}"))
            time.sleep(delays[attempt])
            attempt += 1


def read_shard(
    location: str | Path, shape: WindowShape | None = None, timeout: float = 60.0
) -> Iterator[dict[str, Any]]:
    """Every window of one shard, in order, by the strict reader; any fault raises.

    ``location``: a path or any URL :func:`open_location` takes; ``shape`` (optional)
    also checks the arrays' shapes. A damaged or truncated archive, or a window with a
    missing, extra or malformed member, raises ``ShardError`` naming the shard and the
    problem, after the windows before it.
    """
    name = shard_label(str(location))
    events: list[LoaderEvent] = []
    with open_location(str(location), timeout) as stream:
        try:
            for _, window in shard_windows(stream, name, shape, events.append):
                if events:
                    break
                yield window
        except ShardError as err:
            raise ShardError(LoaderEvent(CORRUPT, name, str(err)).message()) from None
    if events:
        raise ShardError(events[0].message())


# ------------------------------------------------------------------ the Zarr store
class ZarrWindows:
    """Windows cut from ``store.zarr`` at any start day, with ``zarr`` directly (no xarray).

    Opened lazily in the process that reads (each DataLoader worker opens its own). A
    window is ``images[t0 : t0 + T][:, valid positions]`` and ``vectors[t0 : t0 + T]``,
    the very operations that wrote the shards, so the two sources agree bit for bit.
    """

    def __init__(
        self,
        location: str,
        first_day: dt.date,
        days: int,
        store_patches: Any,
        valid_patches: Any,
        split: str,
    ) -> None:
        self.location = location
        self.first_day = first_day
        self.days = int(days)
        self.split = split
        store, valid = np.asarray(store_patches), np.asarray(valid_patches)
        self.positions = np.searchsorted(store, valid)
        self.all_positions = np.array_equal(store, valid)
        self._arrays: dict[str, Any] | None = None

    @classmethod
    def from_manifest(cls, source: str, manifest: dict[str, Any], split: str) -> ZarrWindows:
        return cls(
            join(source, STORE),
            dt.date.fromisoformat(manifest["period"]["start"]),
            manifest["window"],
            manifest["store_patch_indices"],
            manifest["valid_patch_indices"],
            split,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None  # each process opens its own store
        return state

    def _open(self) -> dict[str, Any]:
        if self._arrays is None:
            import zarr

            group = zarr.open_group(self.location, mode="r")
            arrays: dict[str, Any] = {name: group[name] for name in IMAGE_VARS}
            for name in VECTOR_VARS:  # [time, C]: small, read whole once
                arrays[name] = group[name][:]
            self._arrays = arrays
        return self._arrays

    def read(self, start: dt.date) -> dict[str, Any]:
        arrays = self._open()
        t0 = (start - self.first_day).days
        t1 = t0 + self.days
        window: dict[str, Any] = {
            "__key__": window_key(start),
            "meta": {"start": start.isoformat(), "split": self.split},
        }
        for name in IMAGE_VARS:
            block = arrays[name][t0:t1]  # [T, N_store, p, p]
            window[name] = block if self.all_positions else block[:, self.positions]
        for name in VECTOR_VARS:
            window[name] = arrays[name][t0:t1]
        return window
