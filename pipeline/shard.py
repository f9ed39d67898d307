"""The shard format: WebDataset tar files of whole windows, written and read by one module.

A shard holds whole windows (one WebDataset sample each), every window's members adjacent
and in the order of ``schema.SHARD_MEMBERS``: ``{key}.precip.npy``, ``.soil.npy``,
``.temp.npy`` ``[T, N_valid, p, p]``, ``.evap.npy``, ``.riverflow.npy`` ``[T, C]`` and
``.meta.json``: ``{"start": ISO date, "split": str, "crc32": {member: 8 hex digits}}``, the
``zlib.crc32`` of each of the window's five ``.npy`` members (their whole bytes, ``.npy``
header included). Headers are fixed (USTAR, mtime 0, uid/gid 0, empty owner names, mode
0644) and the checksums are functions of the bytes, so reruns write byte-identical shards.

The reader is strict where a general tar reader is lenient: every header's checksum is
verified, a stream that stops without the archive's end blocks is truncated (``tarfile``
stops silently at a damaged header in the middle of an archive), every ``.npy`` member's
bytes are checked against its crc32 before the window is decoded, and a window whose
members are not exactly the six expected ones, or fail their checksums, is reported and
dropped, never split into two partial samples. A damaged or truncated archive ends the
shard after every complete window before the damage. A shard whose ``meta.json`` carries
no checksums (written before dataset format 2) is refused. Members are read into one
uninitialised buffer each and decoded as zero-copy views, so a window costs one read of
its bytes and one pass of the checksum. A decoded window is::

    precip, soil, temp   [T, N_valid, p, p]  float32 (or the store's dtype), physical units
    evap, riverflow      [T, C]              float32, every catchment, NaN = missing
    meta                 {"start": ISO date, "split": str, "crc32": {member: hex}}
    __key__              "YYYYMMDD" (the window's start)
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.faults import BAD_WINDOW, CORRUPT, LoaderEvent, Report
from pipeline.files import atomic_file, encode_json, file_sha256
from pipeline.location import open_location, shard_label
from pipeline.npy import Buffer, NpyError, decode_npy_view, encode_npy
from pipeline.schema import (
    IMAGE_MODALITIES,
    SHARD_MEMBERS,
    SPLITS,
    VECTOR_MODALITIES,
    window_key,
)
from pipeline.window import ceil_div

BLOCK = 512  # tar block size, bytes
MEMBERS = frozenset(SHARD_MEMBERS)
# schema.SHARD_MEMBERS: the five .npy members (checksummed), then meta.json
ARRAY_MEMBERS, META_MEMBER = SHARD_MEMBERS[:-1], SHARD_MEMBERS[-1]
CHECKSUMS = "crc32"  # the meta.json key of the .npy members' checksums


class ShardError(Exception):
    """A shard's bytes are not a well-formed hydromae shard (reported as CORRUPT)."""


class WindowError(ShardError):
    """One window of a shard is malformed (reported as BAD_WINDOW and dropped).

    ``key``: the window's key (``YYYYMMDD``); ``problem``: what is wrong, naming the member.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"window {key!r}: {problem}")
        self.key, self.problem = key, problem


def member_checksum(data: bytes | Buffer) -> str:
    """The checksum ``meta.json`` records for a member: ``zlib.crc32`` of all its bytes, as
    8 lowercase hex digits (the fastest of the checksums measured; docs/loader.md has the
    figures)."""
    return f"{zlib.crc32(data):08x}"


# ------------------------------------------------------------------ writing
def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def encode_window(window: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
    """``(key, {member: bytes})`` of a window in the decoded layout (module docstring).

    ``window`` holds ``__key__``, ``meta`` (``start``, ``split``) and the five arrays
    (``[T, N_valid, p, p]`` images, ``[T, C]`` vectors); its ``meta.json`` gets each ``.npy``
    member's checksum.
    """
    key, meta = window["__key__"], window["meta"]
    if window_key(dt.date.fromisoformat(meta["start"])) != key:
        raise ValueError(f"window {key!r}: meta start {meta['start']} does not match the key")
    members = {m: encode_npy(window[m.removesuffix(".npy")]) for m in ARRAY_MEMBERS}
    sums = {member: member_checksum(data) for member, data in members.items()}
    members[META_MEMBER] = encode_json(
        {"start": meta["start"], "split": meta["split"], CHECKSUMS: sums}
    )
    return key, members


def write_shard(path: Path, windows: Iterable[dict[str, Any]]) -> dict:
    """Write windows (the decoded layout, see :func:`encode_window`) to ``path`` atomically,
    in the order given; return its manifest entry's ``name``, ``samples``, ``bytes`` and
    ``sha256``."""
    count = 0
    with (
        atomic_file(path) as fh,
        tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for window in windows:
            key, members = encode_window(window)
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


def _meta(key: str, data: Buffer) -> dict[str, Any]:
    """A window's ``meta.json``, checked: a JSON object with ``crc32`` checksums, a ``start``
    matching ``key`` and a known ``split``. No checksums at all is the shard's fault (an
    older format): ``ShardError``; anything else wrong is the window's: ``WindowError``."""
    try:
        meta = json.loads(bytes(data))
    except ValueError as err:
        raise WindowError(key, f"{META_MEMBER} is not JSON: {err}") from None
    if not isinstance(meta, dict):
        raise WindowError(key, f"{META_MEMBER} is not a JSON object")
    if CHECKSUMS not in meta:
        raise ShardError(
            f"window {key!r}: {META_MEMBER} has no {CHECKSUMS!r} checksums of its members: the "
            "shard was written in an older format (before dataset format 2); run hydromae "
            "preprocess again"
        )
    sums = meta[CHECKSUMS]
    if not isinstance(sums, dict) or set(sums) != set(ARRAY_MEMBERS):
        listed = sorted(sums) if isinstance(sums, dict) else sums
        raise WindowError(
            key, f"{META_MEMBER} lists checksums of {listed}, expected {list(ARRAY_MEMBERS)}"
        )
    try:
        start = dt.date.fromisoformat(meta["start"])
    except (KeyError, TypeError, ValueError):
        raise WindowError(key, f"{META_MEMBER} has no valid 'start'") from None
    if window_key(start) != key:
        raise WindowError(key, f"{META_MEMBER} start {start} does not match the key")
    if meta.get("split") not in SPLITS:
        raise WindowError(key, f"{META_MEMBER} split {meta.get('split')!r} is not one of {SPLITS}")
    return meta


def decode_window(
    key: str, members: dict[str, Buffer], shape: WindowShape | None
) -> dict[str, Any]:
    """The decode stage: one window's members to arrays (views of the member bytes).

    Each ``.npy`` member's bytes are checked against the crc32 in ``meta.json`` before
    anything is decoded. ``shape`` (from the manifest) checks the arrays' shapes; None
    skips that check. A malformed window raises ``WindowError`` naming the member; a
    ``meta.json`` without checksums (an older shard format) raises ``ShardError``.
    """
    missing = sorted(MEMBERS - set(members))
    extra = sorted(set(members) - MEMBERS)
    if missing or extra:
        raise WindowError(
            key,
            "; ".join(filter(None, [missing and f"lacks {missing}", extra and f"has {extra}"])),
        )
    meta = _meta(key, members[META_MEMBER])
    for member in ARRAY_MEMBERS:
        got = member_checksum(members[member])
        if got != meta[CHECKSUMS][member]:
            raise WindowError(
                key,
                f"{member} fails its crc32 check ({META_MEMBER} says "
                f"{meta[CHECKSUMS][member]}, its {len(members[member])} bytes give {got})",
            )
    window: dict[str, Any] = {"__key__": key, "meta": meta}
    for member in ARRAY_MEMBERS:
        try:
            window[member.removesuffix(".npy")] = decode_npy_view(members[member])
        except NpyError as err:
            raise WindowError(key, f"{member}: {err}") from None
    if shape is not None:
        try:
            shape.check(window)
        except ShardError as err:
            raise WindowError(key, str(err)) from None
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
    read past but neither checksummed nor decoded. A malformed window (missing or extra
    members, a failed checksum, a bad shape) is reported (BAD_WINDOW, with its key) and
    skipped. A malformed or truncated archive raises ``ShardError`` after every complete
    window before the damage, including the one whose last member was read just before
    it. Returns (as the generator's value) the number of windows seen, good or bad.
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
        except WindowError as err:
            report(LoaderEvent(BAD_WINDOW, shard, err.problem, window=err.key))
            return None

    archive = tar_members(stream)
    while True:
        try:
            item = next(archive, None)
        except ShardError:
            # damage after a window's last member: that window is complete, keep it
            if key is not None and set(members) == MEMBERS:
                window = finish()
                if window is not None:
                    yield window
            raise
        if item is None:
            break
        name, data = item
        member_key, _, field = name.rsplit("/", 1)[-1].partition(".")
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
                        "its members are not adjacent; the later ones are dropped",
                        window=member_key,
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


class _Refused(Exception):
    """A window :func:`read_shard` refuses (it carries the event)."""

    def __init__(self, event: LoaderEvent) -> None:
        super().__init__(event.message())
        self.event = event


def _refuse(event: LoaderEvent) -> None:
    raise _Refused(event)


def read_shard(
    location: str | Path, shape: WindowShape | None = None, timeout: float = 60.0
) -> Iterator[dict[str, Any]]:
    """Every window of one shard, in order, by the strict reader; any fault raises.

    ``location``: a path or any URL ``pipeline.location.open_location`` takes; ``shape``
    (optional) also checks the arrays' shapes. A damaged or truncated archive, a window
    with a missing, extra or malformed member or a member that fails its crc32, or a
    shard without checksums (an older format) raises ``ShardError`` naming the shard,
    the window and the problem, after every complete, good window before it.
    """
    name = shard_label(str(location))
    with open_location(str(location), timeout) as stream:
        try:
            for _, window in shard_windows(stream, name, shape, _refuse):
                yield window
        except _Refused as refused:
            raise ShardError(refused.event.message()) from None
        except ShardError as err:
            raise ShardError(LoaderEvent(CORRUPT, name, str(err)).message()) from None
