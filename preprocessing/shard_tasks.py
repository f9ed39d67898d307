"""The shards, one dask task per shard: windows cut from the store, written atomically.

Windows are read with the loader's own Zarr reader (``pipeline.store.ZarrWindows``), so a
window read from a shard and from the store is bit-identical, and written by the shard
format's writer (``pipeline.shard.write_shard``). A finished shard is journalled with its
manifest entry, so a resumed run skips it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import encode_json
from pipeline.npy import encode_npy
from pipeline.schema import MODALITIES, shard_name
from pipeline.shard import write_shard
from pipeline.store import ZarrWindows
from preprocessing.journal import Journal


@dataclass(frozen=True)
class ShardJob:
    windows: ZarrWindows  # the loader's own Zarr reader: shards and Zarr windows agree
    shard_dir: Path
    journal: Journal


def write_one_shard(job: ShardJob, split: str, index: int, starts: list[dt.date]) -> dict:
    name = shard_name(split, index)
    entry = f"shard-{name}"
    if job.journal.done(entry) and (job.shard_dir / name).exists():
        return job.journal.load(entry)

    def samples():
        for start in starts:
            window = job.windows.read(start)  # [T, N_valid, p, p] images, [T, C] vectors
            members = {f"{v}.npy": encode_npy(window[v]) for v in MODALITIES}
            members["meta.json"] = encode_json(window["meta"])
            yield window["__key__"], members

    result = write_shard(job.shard_dir / name, samples())
    result["split"] = split
    job.journal.record(entry, result)
    return result
