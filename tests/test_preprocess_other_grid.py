"""Preprocessing another grid: x/y dimensions, float32, NaN for sea, kelvin, a long table, discs."""

from __future__ import annotations

import datetime as dt
import tarfile

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import SMALL_H, SMALL_VALID, SMALL_W, small_land_mask

from pipeline import config
from pipeline.manifest import Manifest
from pipeline.npy import decode_npy
from pipeline.schema import SHARDS
from pipeline.store import open_store
from preprocessing.job import run_job
from preprocessing.plan import PreprocessConfig

DAYS = 40
START = dt.date(2001, 1, 1)


def write_grid(path, var, units, values):
    """``values [DAYS, 40, 30]`` on a 5 km grid from (0, 0), dims (time, y, x), float32."""
    ds = xr.Dataset(
        {var: (("time", "y", "x"), values.astype(np.float32), {"units": units})},
        coords={
            "time": pd.date_range(START, periods=DAYS, freq="D") + pd.Timedelta(hours=12),
            "y": 2500.0 + 5000.0 * np.arange(SMALL_H),
            "x": 2500.0 + 5000.0 * np.arange(SMALL_W),
        },
    )
    ds.to_netcdf(path, encoding={var: {"_FillValue": np.nan}})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    raw = tmp_path_factory.mktemp("other")
    rng = np.random.default_rng(0)
    land = small_land_mask()
    shape = (DAYS, SMALL_H, SMALL_W)
    fields = {
        "pr": ("mm/day", rng.gamma(0.5, 4.0, shape)),
        "t2m": ("K", 280.0 + rng.normal(0, 3, shape)),
        "swvl1": ("m3 m-3", rng.uniform(0.1, 0.4, shape)),
    }
    for var, (units, values) in fields.items():
        values[:, ~land] = np.nan
        write_grid(raw / f"{var}.nc", var, units, values)
    dates = [START + dt.timedelta(days=i) for i in range(DAYS)]
    table = pd.DataFrame(
        {
            "date": [d.isoformat() for d in dates] * 2,
            "gauge_id": ["A1"] * DAYS + ["B2"] * DAYS,
            "pet": rng.uniform(0, 3, 2 * DAYS),
            "discharge_vol": rng.uniform(0, 5, 2 * DAYS),
        }
    )
    table.loc[3, "discharge_vol"] = np.nan
    table.to_csv(raw / "series.csv", index=False)
    pd.DataFrame(
        {"gauge_id": ["A1", "B2"], "gauge_easting": [5000.0, 62000.0],
         "gauge_northing": [5000.0, 150000.0], "area": [150.0, 60.0]}
    ).to_csv(raw / "attributes.csv", index=False)  # fmt: skip
    cfg = config.load(
        PreprocessConfig,
        overrides=dict(
            precip=str(raw / "pr.nc"), precip_var="pr", temp=str(raw / "t2m.nc"),
            temp_var=["t2m"], soil=str(raw / "swvl1.nc"), soil_var="swvl1",
            catchments=str(raw / "series.csv"), attributes=[str(raw / "attributes.csv")],
            static_attributes=["area"], riverflow_column="discharge_vol",
            train="2001-01-01:2001-01-30", val="2001-01-31:2001-02-09",
            window=10, stride=5, samples_per_shard=4, out=raw / "dataset", progress=False,
        ),
    )  # fmt: skip
    run_job(cfg)
    return raw, fields


def test_another_grid_goes_through_configuration(dataset):
    raw, fields = dataset
    out = raw / "dataset"
    m = Manifest.read(out)
    assert (m.grid.height, m.grid.width) == (SMALL_H, SMALL_W)
    assert list(m.valid_patch_indices) == SMALL_VALID
    assert m.splits["train"].windows == 5 and m.splits["val"].windows == 1
    assert m.variables["temp"].units == "degC"
    assert m.variables["riverflow"].units == "m3/s"
    assert m.catchments.ids == ("A1", "B2") and m.catchments.boundaries == "discs"
    store = open_store(out)
    t = store["temp"].isel(time=3).values  # [N_store, p, p]
    land = ~np.isnan(t)
    expected = fields["t2m"][1][3].astype(np.float32).astype(np.float64) - 273.15
    stored = np.full((SMALL_H, SMALL_W), np.nan)
    for i, patch in enumerate(m.store_patch_indices):
        r, c = divmod(patch, 3)
        stored[r * 10 : r * 10 + 10, c * 10 : c * 10 + 10] = t[i]
    np.testing.assert_allclose(stored, expected.astype(np.float32), rtol=0, atol=1e-4)
    assert land.sum() == small_land_mask().sum()  # every land cell lies in a stored patch
    assert np.isnan(store["riverflow"].values[3, 0])
    with tarfile.open(out / SHARDS / m.shards[0].name) as tar:
        member = next(x for x in tar.getmembers() if x.name.endswith(".precip.npy"))
        assert decode_npy(tar.extractfile(member).read()).shape == (10, 7, 10, 10)
    weights = m.catchments.catchment_patch_weight
    assert set(weights[0]) == {0} and sum(weights[0].values()) < 1.0  # a disc over the coast
