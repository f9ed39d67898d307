"""The shard format: WebDataset tar files of whole windows, written and read by one module.

A shard holds whole windows (one WebDataset sample each), every window's members adjacent
and in the order of ``schema.SHARD_MEMBERS``: ``{key}.precip.npy``, ``.soil.npy``,
``.temp.npy`` ``[T, N_valid, p, p]``, ``.evap.npy``, ``.riverflow.npy`` ``[T, C]`` and
``.meta.json`` (``{"start", "split"}``). Headers are fixed (USTAR, mtime 0, uid/gid 0,
empty owner names, mode 0644), so reruns write byte-identical shards.

The reader is strict where a general tar reader is lenient: every header's checksum is
verified, a stream that stops without the archive's end blocks is truncated (``tarfile``
stops silently at a damaged header in the middle of an archive), and a window whose
members are not exactly the six expected ones is reported and dropped, never split into
two partial samples. Members are read into one uninitialised buffer each and decoded as
zero-copy views, so a window costs one read of its bytes. A decoded window is::

    precip, soil, temp   [T, N_valid, p, p]  float32 (or the store's dtype), physical units
    evap, riverflow      [T, C]              float32, every catchment, NaN = missing
    meta                 {"start": ISO date, "split": str}
    __key__              "YYYYMMDD" (the window's start)
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.faults import BAD_WINDOW, CORRUPT, LoaderEvent, Report
from pipeline.files import atomic_file, file_sha256
from pipeline.location import open_location, shard_label
from pipeline.npy import Buffer, NpyError, decode_npy_view
from pipeline.schema import IMAGE_MODALITIES, SHARD_MEMBERS, VECTOR_MODALITIES, window_key
from pipeline.window import ceil_div

BLOCK = 512  # tar block size, bytes
MEMBERS = frozenset(SHARD_MEMBERS)


class ShardError(Exception):
    """A shard's bytes are not a well-formed hydromae shard (reported as CORRUPT)."""


# ------------------------------------------------------------------ writing
def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_shard(path: Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> dict:
    """Write ``(key, {member: bytes})`` samples to ``path`` atomically; return its manifest
    entry's ``name``, ``samples``, ``bytes`` and ``sha256``."""
    count = 0
    with (
        atomic_file(path) as fh,
        tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for key, members in samples:
            if set(members) != MEMBERS:
                raise ValueError(f"sample {key}: members {sorted(members)} != {SHARD_MEMBERS}")
            for member in SHARD_MEMBERS:
                data = members[member]
                tar.addfile(_info(f"{key}.{member}", len(data)), io.BytesIO(data))
            count += 1
    return {
        "name": path.name,
        "samples": count,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


# ------------------------------------------------------------------ decoding a window
@dataclass(frozen=True)
class WindowShape:
    """What a well-formed window holds: ``T`` days, ``N_valid`` patches of ``p x p``, ``C``."""

    days: int
    patches: int
    patch_size: int
    catchments: int

    def check(self, window: dict[str, Any]) -> None:
        p = self.patch_size
        for name in IMAGE_MODALITIES:
            if window[name].shape != (self.days, self.patches, p, p):
                raise ShardError(
                    f"{name} has shape {window[name].shape}, expected "
                    f"{(self.days, self.patches, p, p)}"
                )
        for name in VECTOR_MODALITIES:
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
            except NpyError as err:
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


# ------------------------------------------------------------------ reading a tar stream
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
        padded = ceil_div(info.size, BLOCK) * BLOCK
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


def read_shard(
    location: str | Path, shape: WindowShape | None = None, timeout: float = 60.0
) -> Iterator[dict[str, Any]]:
    """Every window of one shard, in order, by the strict reader; any fault raises.

    ``location``: a path or any URL ``pipeline.location.open_location`` takes; ``shape``
    (optional) also checks the arrays' shapes. A damaged or truncated archive, or a
    window with a missing, extra or malformed member, raises ``ShardError`` naming the
    shard and the problem, after the windows before it.
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
