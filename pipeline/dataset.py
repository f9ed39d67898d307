"""The dataset directory that ``hydromae preprocess`` writes and the loader reads.

    DIR/manifest.json        what is in the directory (written last; see below)
    DIR/land_mask.npy, .pt   bool [H, W], True = land
    DIR/store.zarr           Zarr v3: images (time, patch, py, px) over every patch with land,
                             vectors (time, catchment), static (catchment, attribute),
                             catchment_patch_weight (catchment, patch); physical units
    DIR/shards/{split}-{000000}.tar
                             WebDataset shards, one sample per window: {key}.precip.npy,
                             .soil.npy, .temp.npy [T, N_valid, p, p]; .evap.npy,
                             .riverflow.npy [T, C]; .meta.json

This module owns the names, the member encoding and the manifest's reading, so that the
writer (``preprocessing``) and the reader (``pipeline``) cannot drift apart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE = "store.zarr"
SHARDS = "shards"
LAND_MASK_NPY = "land_mask.npy"
LAND_MASK_PT = "land_mask.pt"
SPLITS = ("train", "val", "test")
IMAGE_VARS = ("precip", "soil", "temp")
VECTOR_VARS = ("evap", "riverflow")
CRS = "EPSG:27700"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def window_key(start: dt.date) -> str:
    """The WebDataset ``__key__`` of the window starting on ``start``: ``YYYYMMDD``."""
    return start.strftime("%Y%m%d")


def sample_key(start: dt.date, gauge_id: str) -> str:
    """The unique key of one (window, catchment) sample: ``YYYYMMDD-{gauge_id}``."""
    return f"{window_key(start)}-{gauge_id}"


def encode_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of an array (no pickles), identical for identical arrays."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, fixed separators, trailing newline."""
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file beside it, fsynced and renamed into place.

    Nothing half-written ever carries the final name; on an error the temporary file goes.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def atomic_write(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def parse_manifest(data: str | bytes, where: str) -> dict[str, Any]:
    """A manifest's JSON, checked for this hydromae's format version."""
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON: {err}") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{where}: format_version {version!r}, this hydromae reads {FORMAT_VERSION}"
        )
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a finished dataset directory; a clear error for anything else."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"{directory}: no {MANIFEST}: not a hydromae dataset, or its preprocessing has not "
            "finished (run hydromae preprocess again to complete it)"
        )
    return parse_manifest(path.read_bytes(), str(path))


def window_starts(first: dt.date, last: dt.date, window: int, stride: int) -> list[dt.date]:
    """Start days of the windows of ``window`` days, every ``stride`` days, that fit in
    ``first..last`` (both included): windows never straddle a split's end."""
    starts, day = [], first
    while day + dt.timedelta(days=window - 1) <= last:
        starts.append(day)
        day += dt.timedelta(days=stride)
    return starts


def balanced_ranges(total: int, parts: int) -> list[tuple[int, int]]:
    """``(start, count)`` of ``parts`` contiguous ranges covering ``total``, counts within 1."""
    base, extra = divmod(total, parts)
    out, start = [], 0
    for i in range(parts):
        n = base + (i < extra)
        out.append((start, n))
        start += n
    return out


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from ``start`` to ``end``, both included."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def open_store(directory: str | Path):
    """The dataset's Zarr store as a lazy ``xarray.Dataset`` (``xarray.open_zarr``)."""
    import xarray as xr

    return xr.open_zarr(Path(directory) / STORE)


def image_grid(store, name: str, manifest: dict[str, Any]):
    """An image variable back on its grid: ``(time, y, x)`` with British National Grid coordinates.

    ``store[name]`` is ``(time, patch, py, px)`` over the stored patches; patches not stored
    (all sea) come back as NaN. ``y`` and ``x`` are cell centres in metres, y ascending.
    Lazy: the result is a dask-backed DataArray when ``store`` is.
    """
    import dask.array
    import xarray as xr

    from pipeline.grid import PatchGrid, unpatchify

    g = manifest["grid"]
    grid = PatchGrid(g["height"], g["width"], g["patch_size"])
    patches = store[name]
    data = patches.data
    full = dask.array.full(
        (data.shape[0], grid.num_patches, grid.patch_size, grid.patch_size),
        np.nan,
        dtype=data.dtype,
        chunks=(data.chunksize[0] if hasattr(data, "chunksize") else data.shape[0], -1, -1, -1),
    )
    index = np.asarray(patches["patch"].values)
    full[:, index] = data
    (y0, dy), (x0, dx) = g["y"], g["x"]
    return xr.DataArray(
        unpatchify(full, grid),
        dims=("time", "y", "x"),
        coords={
            "time": store["time"],
            "y": ("y", y0 + dy * np.arange(grid.height), {"units": "m", "axis": "Y"}),
            "x": ("x", x0 + dx * np.arange(grid.width), {"units": "m", "axis": "X"}),
        },
        attrs={**patches.attrs, "crs": g["crs"]},
        name=name,
    )
