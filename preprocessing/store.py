"""The Zarr v3 store: a skeleton made once, then one region per block of days, idempotently.

Layout (readable with plain ``xarray.open_zarr``): images ``(time, patch, py, px)`` over
every patch with any land, vectors ``(time, catchment)``, ``static (catchment, attribute)``,
``catchment_patch_weight (catchment, patch)``; a CF time coordinate; chunks of one window
in time; zstd, and a crc32c checksum per chunk. Values in physical units, NaN = sea or missing.
"""

from __future__ import annotations

import datetime as dt
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask.array
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from pipeline.files import named
from pipeline.schema import IMAGE_MODALITIES, MODALITIES, VECTOR_MODALITIES

LONG_NAMES = {
    "precip": "daily precipitation amount",
    "soil": "soil moisture",
    "temp": "daily mean air temperature",
    "evap": "catchment potential evaporation",
    "riverflow": "catchment riverflow",
}
STANDARD_NAMES = {"precip": "lwe_thickness_of_precipitation_amount", "temp": "air_temperature"}


@dataclass(frozen=True)
class StoreLayout:
    dates: list[dt.date]  # every stored day, consecutive
    patches: np.ndarray  # [N_store] patch numbers (every patch with land)
    patch_size: int
    image_dtype: str
    window: int
    gauge_ids: list[str]
    attributes: list[str]
    units: dict[str, str]


def create(
    path: Path,
    layout: StoreLayout,
    static: np.ndarray,
    weights: np.ndarray,
    evap: np.ndarray,
    riverflow: np.ndarray,
    attrs: dict[str, str],
) -> None:
    """Write the store's skeleton with its small variables; images are filled by blocks.

    Written under a temporary name and renamed, so a store that exists is a whole skeleton.
    """
    t, n, p = len(layout.dates), len(layout.patches), layout.patch_size
    c = len(layout.gauge_ids)
    image = dask.array.full(
        (t, n, p, p), np.nan, dtype=layout.image_dtype, chunks=(layout.window, n, p, p)
    )
    ds = xr.Dataset(
        {
            **{name: (("time", "patch", "py", "px"), image) for name in IMAGE_MODALITIES},
            "evap": (("time", "catchment"), evap),
            "riverflow": (("time", "catchment"), riverflow),
            "static": (("catchment", "attribute"), static.reshape(c, len(layout.attributes))),
            "catchment_patch_weight": (("catchment", "patch"), weights.astype(np.float32)),
        },
        coords={
            "time": pd.DatetimeIndex(layout.dates),
            "patch": layout.patches.astype(np.int64),
            "catchment": np.array(layout.gauge_ids, dtype=object),
            "attribute": np.array(layout.attributes, dtype=object),
        },
        attrs=attrs,
    )
    for name in MODALITIES:
        ds[name].attrs.update(units=layout.units[name], long_name=LONG_NAMES[name])
        if name in STANDARD_NAMES:
            ds[name].attrs["standard_name"] = STANDARD_NAMES[name]
    ds["catchment_patch_weight"].attrs.update(
        units="1", long_name="fraction of the catchment's area in the patch"
    )
    ds["patch"].attrs.update(long_name="patch number, row-major from the south-west")
    # zstd, then a crc32c of each compressed chunk: a damaged chunk fails on read, and
    # ``hydromae inspect`` reads every chunk
    compressor = {"compressors": [zarr.codecs.ZstdCodec(level=3), zarr.codecs.Crc32cCodec()]}
    encoding = {name: dict(compressor) for name in ds.data_vars}
    for name in IMAGE_MODALITIES:
        encoding[name]["chunks"] = (layout.window, n, p, p)
    for name in VECTOR_MODALITIES:
        encoding[name]["chunks"] = (layout.window, c)
    encoding["time"] = {
        "units": f"days since {layout.dates[0].isoformat()}",
        "calendar": "standard",
        "dtype": "int64",
    }
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with warnings.catch_warnings():  # consolidated metadata: not yet in the v3 spec, but it
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)  # saves remote readers time
        ds.to_zarr(
            tmp, mode="w", compute=False, zarr_format=3, consolidated=True, encoding=encoding
        )
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def write_images(path: Path, start: int, blocks: dict[str, np.ndarray]) -> None:
    """Write ``[T, N_store, p, p]`` blocks at time index ``start`` (chunk-aligned, idempotent)."""
    group = zarr.open_group(path, mode="r+", zarr_format=3)
    for name, block in blocks.items():
        try:
            group[name][start : start + block.shape[0]] = block
        except OSError as err:  # a full disk: say which array's chunks could not be written
            raise named(err, path / name) from None
