"""WebDataset shards with fixed tar headers, so that reruns are byte-identical.

A shard holds whole samples, each one's members adjacent and in a fixed order
(``{key}.precip.npy`` ... ``{key}.meta.json``); every member has mtime 0, uid/gid 0, empty
owner names and mode 0644. Shards are written to a temporary name, fsynced and renamed.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

from pipeline.dataset import atomic_file, balanced_ranges, file_sha256

MEMBER_ORDER = ("precip.npy", "soil.npy", "temp.npy", "evap.npy", "riverflow.npy", "meta.json")


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_shard(path: Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> dict:
    """Write ``(key, {member: bytes})`` samples to ``path``; return count, bytes and sha256."""
    count = 0
    with (
        atomic_file(path) as fh,
        tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for key, members in samples:
            if set(members) != set(MEMBER_ORDER):
                raise ValueError(f"sample {key}: members {sorted(members)} != {MEMBER_ORDER}")
            for member in MEMBER_ORDER:
                data = members[member]
                tar.addfile(_info(f"{key}.{member}", len(data)), io.BytesIO(data))
            count += 1
    return {
        "name": path.name,
        "samples": count,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def balanced_counts(total: int, per_shard: int) -> list[int]:
    """Split ``total`` samples into shards of at most ``per_shard``, counts differing by <= 1."""
    if total == 0:
        return []
    return [n for _, n in balanced_ranges(total, -(-total // per_shard))]
