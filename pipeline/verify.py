"""Checks of a dataset directory against its manifest: every shard and the Zarr store.

``check_shard`` compares a shard with its manifest entry (size, sha256, sample count,
members); ``check_store`` the store's variables and shapes. Each returns the problems
found, as lines naming the file; an empty list means the piece checks out.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from pipeline.files import file_sha256
from pipeline.manifest import Manifest, ShardEntry
from pipeline.schema import IMAGE_MODALITIES, SHARD_MEMBERS, STORE, VECTOR_MODALITIES


def check_shard(path: Path, entry: ShardEntry) -> list[str]:
    """Problems with one shard: missing, checksum, size, samples, members."""
    if not path.exists():
        return [f"{path}: missing"]
    problems = []
    if path.stat().st_size != entry.bytes:
        problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {entry.bytes}")
    if file_sha256(path) != entry.sha256:
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
    if len(samples) != entry.samples:
        problems.append(f"{path}: {len(samples)} samples, the manifest says {entry.samples}")
    for key, members in samples.items():
        if members != set(SHARD_MEMBERS):
            problems.append(f"{path}: sample {key} has members {sorted(members)}")
    return problems


def check_store(directory: Path, manifest: Manifest) -> list[str]:
    """Problems with the store: unreadable, a variable missing or of the wrong shape."""
    import xarray as xr

    path = directory / STORE
    try:
        ds = xr.open_zarr(path)
    except Exception as err:  # any failure to open is a corrupt store
        return [f"{path}: cannot open it with xarray.open_zarr: {err}"]
    p = manifest.grid.patch_size
    days = manifest.period.days
    patches = len(manifest.store_patch_indices)
    catchments = len(manifest.catchments.ids)
    expected = {
        **{v: (days, patches, p, p) for v in IMAGE_MODALITIES},
        **{v: (days, catchments) for v in VECTOR_MODALITIES},
        "catchment_patch_weight": (catchments, patches),
    }
    problems = []
    for name, shape in expected.items():
        if name not in ds:
            problems.append(f"{path}: variable {name!r} is missing")
        elif tuple(ds[name].shape) != shape:
            problems.append(f"{path}: {name!r} has shape {tuple(ds[name].shape)}, expected {shape}")
    if "patch" in ds and ds["patch"].values.tolist() != list(manifest.store_patch_indices):
        problems.append(f"{path}: its patch numbers differ from the manifest's")
    return problems
