"""Reading the dataset's Zarr store: lazily with xarray, or windows cut with zarr directly.

The store (``docs/dataset.md``; written by ``preprocessing.store``) holds images as
``(time, patch, py, px)`` over every patch with any land, vectors as ``(time, catchment)``,
in physical units, NaN = sea or missing. ``open_store`` gives it as an ``xarray.Dataset``;
``image_grid`` puts an image variable back on its ``(time, y, x)`` grid; ``ZarrWindows``
cuts the loader's windows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.grid import unpatchify
from pipeline.location import join
from pipeline.manifest import Manifest
from pipeline.schema import IMAGE_MODALITIES, STORE, VECTOR_MODALITIES, window_key


def open_store(directory: str | Path):
    """The dataset's Zarr store as a lazy ``xarray.Dataset`` (``xarray.open_zarr``)."""
    import xarray as xr

    return xr.open_zarr(Path(directory) / STORE)


def image_grid(store, name: str, manifest: Manifest):
    """An image variable back on its grid: ``(time, y, x)`` with British National Grid coordinates.

    ``store[name]`` is ``(time, patch, py, px)`` over the stored patches; patches not stored
    (all sea) come back as NaN. ``y`` and ``x`` are cell centres in metres, y ascending.
    Lazy: the result is a dask-backed DataArray when ``store`` is.
    """
    import dask.array
    import xarray as xr

    g = manifest.grid
    grid = g.patch_grid()
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
    (y0, dy), (x0, dx) = g.y, g.x
    return xr.DataArray(
        unpatchify(full, grid),
        dims=("time", "y", "x"),
        coords={
            "time": store["time"],
            "y": ("y", y0 + dy * np.arange(grid.height), {"units": "m", "axis": "Y"}),
            "x": ("x", x0 + dx * np.arange(grid.width), {"units": "m", "axis": "X"}),
        },
        attrs={**patches.attrs, "crs": g.crs},
        name=name,
    )


class ZarrWindows:
    """Windows cut from ``store.zarr`` at any start day, with ``zarr`` directly (no xarray).

    Opened lazily in the process that reads (each DataLoader worker opens its own). A
    window is ``images[t0 : t0 + T][:, valid positions]`` and ``vectors[t0 : t0 + T]``,
    the very operations that wrote the shards, so the two sources agree bit for bit.
    """

    def __init__(
        self,
        location: str,
        first_day: dt.date,
        days: int,
        store_patches: Any,
        valid_patches: Any,
        split: str,
    ) -> None:
        self.location = location
        self.first_day = first_day
        self.days = int(days)
        self.split = split
        store, valid = np.asarray(store_patches), np.asarray(valid_patches)
        self.positions = np.searchsorted(store, valid)
        self.all_positions = np.array_equal(store, valid)
        self._arrays: dict[str, Any] | None = None

    @classmethod
    def from_manifest(cls, source: str, manifest: Manifest, split: str) -> ZarrWindows:
        return cls(
            join(source, STORE),
            manifest.period.start,
            manifest.window,
            manifest.store_patch_indices,
            manifest.valid_patch_indices,
            split,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None  # each process opens its own store
        return state

    def _open(self) -> dict[str, Any]:
        if self._arrays is None:
            import zarr

            group = zarr.open_group(self.location, mode="r")
            arrays: dict[str, Any] = {name: group[name] for name in IMAGE_MODALITIES}
            for name in VECTOR_MODALITIES:  # [time, C]: small, read whole once
                arrays[name] = group[name][:]
            self._arrays = arrays
        return self._arrays

    def read(self, start: dt.date) -> dict[str, Any]:
        """The window starting on ``start`` (the shard reader's layout, ``pipeline.shard``)."""
        arrays = self._open()
        t0 = (start - self.first_day).days
        t1 = t0 + self.days
        window: dict[str, Any] = {
            "__key__": window_key(start),
            "meta": {"start": start.isoformat(), "split": self.split},
        }
        for name in IMAGE_MODALITIES:
            block = arrays[name][t0:t1]  # [T, N_store, p, p]
            window[name] = block if self.all_positions else block[:, self.positions]
        for name in VECTOR_MODALITIES:
            window[name] = arrays[name][t0:t1]
        return window
