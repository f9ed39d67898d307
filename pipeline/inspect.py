"""Summarise a dataset directory and validate it (``hydromae inspect DIR``).

Prints the manifest's summary (periods, windows and samples per split, catchments, the
patch table, normalisation statistics, bytes) and checks every shard's sha256, sample
count and members, and the Zarr store's shapes against the manifest. Exits non-zero,
naming each problem, on any corruption.
"""

from __future__ import annotations

import argparse
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import config
from pipeline.dataset import (
    IMAGE_VARS,
    SHARDS,
    SPLITS,
    STORE,
    VECTOR_VARS,
    file_sha256,
    read_manifest,
)

SAMPLE_MEMBERS = {f"{v}.npy" for v in (*IMAGE_VARS, *VECTOR_VARS)} | {"meta.json"}


@dataclass
class InspectConfig:
    data: Path = field(metadata={"flag": "data", "metavar": "DIR", "help": "dataset directory"})
    verify: bool = field(default=True, metadata={"help": "check checksums and the store"})


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, InspectConfig)


def check_shard(path: Path, entry: dict[str, Any]) -> list[str]:
    """Problems with one shard: missing, checksum, size, samples, members."""
    if not path.exists():
        return [f"{path}: missing"]
    problems = []
    if path.stat().st_size != entry["bytes"]:
        problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
    if file_sha256(path) != entry["sha256"]:
        problems.append(f"{path}: sha256 differs from the manifest's: the shard is corrupt")
    try:
        with tarfile.open(path) as tar:
            names = tar.getnames()
    except (tarfile.TarError, OSError) as err:
        return [*problems, f"{path}: not a readable tar: {err}"]
    samples: dict[str, set[str]] = {}
    for name in names:
        key, _, member = name.partition(".")
        samples.setdefault(key, set()).add(member)
    if len(samples) != entry["samples"]:
        problems.append(f"{path}: {len(samples)} samples, the manifest says {entry['samples']}")
    for key, members in samples.items():
        if members != SAMPLE_MEMBERS:
            problems.append(f"{path}: sample {key} has members {sorted(members)}")
    return problems


def check_store(directory: Path, manifest: dict[str, Any]) -> list[str]:
    import xarray as xr

    path = directory / STORE
    try:
        ds = xr.open_zarr(path)
    except Exception as err:  # any failure to open is a corrupt store
        return [f"{path}: cannot open it with xarray.open_zarr: {err}"]
    p = manifest["grid"]["patch_size"]
    days = manifest["period"]["days"]
    patches = len(manifest["store_patch_indices"])
    catchments = len(manifest["catchments"]["ids"])
    expected = {
        **{v: (days, patches, p, p) for v in IMAGE_VARS},
        **{v: (days, catchments) for v in VECTOR_VARS},
        "catchment_patch_weight": (catchments, patches),
    }
    problems = []
    for name, shape in expected.items():
        if name not in ds:
            problems.append(f"{path}: variable {name!r} is missing")
        elif tuple(ds[name].shape) != shape:
            problems.append(f"{path}: {name!r} has shape {tuple(ds[name].shape)}, expected {shape}")
    if "patch" in ds and ds["patch"].values.tolist() != manifest["store_patch_indices"]:
        problems.append(f"{path}: its patch numbers differ from the manifest's")
    return problems


def summary(manifest: dict[str, Any]) -> str:
    g, land = manifest["grid"], manifest["land_mask"]
    shards = manifest["shards"]
    lines = [
        f"hydromae dataset, format {manifest['format_version']}, written by hydromae "
        f"{manifest['software']['hydromae']}",
        f"period {manifest['period']['start']} .. {manifest['period']['end']} "
        f"({manifest['period']['days']} days), window {manifest['window']}, "
        f"stride {manifest['stride']}",
        f"grid {g['height']} x {g['width']} ({g['crs']}), {g['patch_size']} x {g['patch_size']} "
        f"patches: {land['fully_ocean']} fully ocean, {land['partially_land']} partially land, "
        f"{land['fully_land']} fully land, {land['valid']} valid at {manifest['land_threshold']}",
        f"store: {len(manifest['store_patch_indices'])} patches with land; shards: "
        f"{len(manifest['valid_patch_indices'])} valid patches",
        f"catchments: {len(manifest['catchments']['ids'])} "
        f"({manifest['catchments']['boundaries']}), static attributes "
        f"{manifest['catchments']['static_attributes']}",
        "splits:",
    ]
    for split in (s for s in SPLITS if s in manifest["splits"]):
        info = manifest["splits"][split]
        ss = [s for s in shards if s["split"] == split]
        lines.append(
            f"  {split:<5} {info['start']} .. {info['end']}: {info['windows']} windows, "
            f"{info['samples']} samples, {len(ss)} shards, "
            f"{sum(s['bytes'] for s in ss) / 1e6:.1f} MB"
        )
    lines.append("normalisation (training period, land pixels):")
    for name, s in manifest["normalization"].items():
        unit = manifest["variables"][name]["units"]
        lines.append(
            f"  {name:<9} {s['transform']:<5} mean {s['mean']:10.4f} std {s['std']:9.4f} "
            f"({s['count']} values; {unit})"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(InspectConfig, args)
    manifest = read_manifest(cfg.data)
    print(summary(manifest))
    if not cfg.verify:
        return 0
    problems = check_store(cfg.data, manifest)
    for entry in manifest["shards"]:
        problems += check_shard(cfg.data / SHARDS / entry["name"], entry)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"\nall {len(manifest['shards'])} shards and the store check out")
    return 0
