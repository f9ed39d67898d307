"""Shared fixtures: a small grid with a hand-made coast, HadUK-Grid-style NetCDF files, and a
small synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest

SMALL_H, SMALL_W, SMALL_P = 40, 30, 10  # 4 x 3 = 12 patches


def synth_dataset(tmp_path_factory, **settings) -> Path:
    """100 synthetic days of 3 catchments (``hydromae synth``, seed 2) preprocessed into
    20-day windows every 10 days, train and val splits; ``settings`` override the
    preprocessing's (``holdout_catchments=[...]``)."""
    from pipeline import config
    from preprocessing.job import run_job
    from preprocessing.plan import PreprocessConfig
    from preprocessing.synth import generate

    raw = tmp_path_factory.mktemp("raw")
    generate(raw, start="2000-01-01", days=100, catchments=3, seed=2, progress=False)
    out = tmp_path_factory.mktemp("data") / "dataset"
    cfg = config.load(
        PreprocessConfig,
        raw / "preprocess.toml",
        dict(out=out, window=20, stride=10, train="2000-01-01:2000-03-20",
             val="2000-03-21:2000-04-09", test=None, samples_per_shard=4, progress=False,
             **settings),
    )  # fmt: skip
    run_job(cfg)
    return out


@pytest.fixture(scope="session")
def held_out_dataset(tmp_path_factory) -> Path:
    """``synth_dataset`` with one of its 3 catchments held out of training (read only)."""
    return synth_dataset(tmp_path_factory, holdout_catchments=["1"])


def small_land_mask() -> np.ndarray:
    """``[40, 30]`` bool mask whose 12 patches have known land fractions.

    Patch (row-major) land cells: 0: 100, 1: 50, 2: 49, 3: 0, 4: 100, 5: 75,
    6: 1, 7: 100, 8: 0, 9: 60, 10: 100, 11: 0  -> valid at 0.5: 0, 1, 4, 5, 7, 9, 10.
    """
    counts = [100, 50, 49, 0, 100, 75, 1, 100, 0, 60, 100, 0]
    mask = np.zeros((SMALL_H, SMALL_W), dtype=bool)
    for patch, n in enumerate(counts):
        r, c = divmod(patch, SMALL_W // SMALL_P)
        block = np.zeros(SMALL_P * SMALL_P, dtype=bool)
        block[:n] = True
        mask[r * SMALL_P : (r + 1) * SMALL_P, c * SMALL_P : (c + 1) * SMALL_P] = block.reshape(
            SMALL_P, SMALL_P
        )
    return mask


SMALL_VALID = [0, 1, 4, 5, 7, 9, 10]


@pytest.fixture
def small_mask_path(tmp_path: Path) -> Path:
    path = tmp_path / "small_mask.npy"
    np.save(path, small_land_mask())
    return path


def write_haduk_file(
    path: Path,
    var: str,
    data: np.ndarray,
    first_day: int = 0,
    x0: float = -197500.0,
    y0: float = -197500.0,
) -> Path:
    """Write ``data [time, y, x]`` (NaN = sea) the way HadUK-Grid does: float64, fill 1e20."""
    days, height, width = data.shape
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("time", None)
        ds.createDimension("projection_y_coordinate", height)
        ds.createDimension("projection_x_coordinate", width)
        t = ds.createVariable("time", "i8", ("time",))
        t.units, t.calendar = "hours since 1800-01-01 00:00:00", "standard"
        t[:] = 1753152 + 24 * (first_day + np.arange(days)) + 12  # 2000-01-01 12:00 onwards
        y = ds.createVariable("projection_y_coordinate", "f8", ("projection_y_coordinate",))
        y.units = "m"
        y[:] = y0 + 5000.0 * np.arange(height)
        x = ds.createVariable("projection_x_coordinate", "f8", ("projection_x_coordinate",))
        x.units = "m"
        x[:] = x0 + 5000.0 * np.arange(width)
        v = ds.createVariable(
            var,
            "f8",
            ("time", "projection_y_coordinate", "projection_x_coordinate"),
            fill_value=1e20,
        )
        v.units = "degC"
        v[:] = np.ma.masked_invalid(data)
    return path
