"""Checks of a dataset directory against its manifest: every shard and the Zarr store.

``check_shard`` compares a shard with its manifest entry (size, sha256) and reads it with
the loader's strict reader; ``check_store`` checks the store's variables and shapes and
reads every chunk (each carries a crc32c checksum). Each returns the problems
found, as lines naming the file; an empty list means the piece checks out.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from pipeline.files import file_sha256
from pipeline.manifest import Manifest, ShardEntry
from pipeline.schema import IMAGE_MODALITIES, STORE, VECTOR_MODALITIES
from pipeline.shard import ShardError, WindowShape, read_shard


def check_shard(path: Path, entry: ShardEntry, shape: WindowShape | None = None) -> list[str]:
    """Problems with one shard: missing, size, sha256, and every window as the loader's strict
    reader sees it (members, headers, per-window checksums, shapes, the window count)."""
    if not path.exists():
        return [f"{path}: missing"]
    problems = []
    if path.stat().st_size != entry.bytes:
        problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {entry.bytes}")
    if file_sha256(path) != entry.sha256:
        problems.append(f"{path}: sha256 differs from the manifest's: the shard is corrupt")
    windows = 0
    try:
        for _ in read_shard(path, shape):
            windows += 1
    except ShardError as err:
        return [*problems, f"{path}: {err}"]
    if windows != entry.samples:
        problems.append(f"{path}: {windows} windows, the manifest says {entry.samples}")
    return problems


def check_store(directory: Path, manifest: Manifest) -> list[str]:
    """Problems with the store: unreadable, a variable missing or of the wrong shape, a chunk
    whose checksum fails (every chunk of every array is read, one at a time)."""
    import zarr

    path = directory / STORE
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as err:  # any failure to open is a corrupt store
        return [f"{path}: cannot open it as a Zarr group: {err}"]
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
        if name not in group:
            problems.append(f"{path}: variable {name!r} is missing")
        elif tuple(group[name].shape) != shape:
            problems.append(f"{path}: {name!r} has shape {group[name].shape}, expected {shape}")
    for name in sorted(group.array_keys()):
        problems += check_chunks(path, name, group[name])
    if "patch" in group and group["patch"][:].tolist() != list(manifest.store_patch_indices):
        problems.append(f"{path}: its patch numbers differ from the manifest's")
    return problems


def check_chunks(path: Path, name: str, array) -> list[str]:
    """Read every chunk of a Zarr array; each one that fails (checksum, codec, missing data
    that should be there) is a problem naming the array and the chunk."""
    problems = []
    for index in itertools.product(*(range(n) for n in array.cdata_shape)):
        try:
            array.blocks[index]
        except Exception as err:  # a failing codec raises many types; each is a damaged chunk
            problems.append(f"{path}/{name}: chunk {'.'.join(map(str, index))} is damaged: {err}")
    return problems
