"""Summarise a dataset directory and validate it (``hydromae inspect DIR``).

Prints the manifest's summary (periods, windows and samples per split, catchments, the
patch table, normalisation statistics, bytes), then checks every shard (size, sha256, and
every window through the loader's strict reader, per-window checksums included) and the
Zarr store (shapes, and every chunk's checksum) against the manifest (``pipeline.verify``).
Exits 1, naming each problem, on any corruption.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import config
from pipeline.manifest import Manifest
from pipeline.schema import SHARDS, SPLITS
from pipeline.verify import check_shard, check_store


@dataclass
class InspectConfig:
    data: Path = field(metadata={"flag": "data", "metavar": "DIR", "help": "dataset directory"})
    verify: bool = field(default=True, metadata={"help": "check checksums and the store"})


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, InspectConfig)


def summary(manifest: Manifest) -> str:
    g, land, period = manifest.grid, manifest.land_mask, manifest.period
    lines = [
        f"hydromae dataset, format {manifest.format_version}, written by hydromae "
        f"{manifest.software['hydromae']}",
        f"period {period.start} .. {period.end} ({period.days} days), window "
        f"{manifest.window}, stride {manifest.stride}",
        f"grid {g.height} x {g.width} ({g.crs}), {g.patch_size} x {g.patch_size} "
        f"patches: {land.fully_ocean} fully ocean, {land.partially_land} partially land, "
        f"{land.fully_land} fully land, {land.valid} valid at {manifest.land_threshold}",
        f"store: {len(manifest.store_patch_indices)} patches with land; shards: "
        f"{len(manifest.valid_patch_indices)} valid patches",
        f"catchments: {len(manifest.catchments.ids)} "
        f"({manifest.catchments.boundaries}), static attributes "
        f"{list(manifest.catchments.static_attributes)}",
        "splits:",
    ]
    for split in (s for s in SPLITS if s in manifest.splits):
        info = manifest.splits[split]
        ss = manifest.split_shards(split)
        lines.append(
            f"  {split:<5} {info.start} .. {info.end}: {info.windows} windows, "
            f"{info.samples} samples, {len(ss)} shards, "
            f"{sum(s.bytes for s in ss) / 1e6:.1f} MB"
        )
    lines.append("normalisation (training period, land pixels):")
    for name, s in manifest.normalization.items():
        unit = manifest.variables[name].units
        lines.append(
            f"  {name:<9} {s.transform:<5} mean {s.mean:10.4f} std {s.std:9.4f} "
            f"({s.count} values; {unit})"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(InspectConfig, args)
    manifest = Manifest.read(cfg.data)
    print(summary(manifest))
    if not cfg.verify:
        return 0
    problems = check_store(cfg.data, manifest)
    shape = manifest.window_shape()
    for entry in manifest.shards:
        problems += check_shard(cfg.data / SHARDS / entry.name, entry, shape)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"\nall {len(manifest.shards)} shards and the store check out")
    return 0
