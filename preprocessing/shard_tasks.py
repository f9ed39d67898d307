"""The shards, one dask task per shard: windows cut from the store, written atomically.

Windows are read with the loader's own Zarr reader (``pipeline.store.ZarrWindows``), so a
window read from a shard and from the store is bit-identical, and written by the shard
format's writer (``pipeline.shard.write_shard``, which encodes each window and records its
members' checksums). A finished shard is journalled with its manifest entry, so a resumed
run skips it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from pipeline.schema import shard_name
from pipeline.shard import write_shard
from pipeline.store import ZarrWindows
from preprocessing.journal import Journal


@dataclass(frozen=True)
class ShardJob:
    windows: ZarrWindows  # the loader's own Zarr reader: shards and Zarr windows agree
    shard_dir: Path
    journal: Journal


def write_one_shard(job: ShardJob, split: str, index: int, starts: list[dt.date]) -> dict:
    """Write shard ``index`` of ``split`` (the windows at ``starts``, in order) unless the
    journal has it; return its manifest entry (``name``, ``samples``, ``bytes``, ``sha256``,
    ``split``)."""
    name = shard_name(split, index)
    entry = f"shard-{name}"
    if job.journal.done(entry) and (job.shard_dir / name).exists():
        return job.journal.load(entry)
    # each window: [T, N_valid, p, p] images, [T, C] vectors, meta {start, split}
    result = write_shard(job.shard_dir / name, (job.windows.read(start) for start in starts))
    result["split"] = split
    job.journal.record(entry, result)
    return result
