"""The synthetic generator (``hydromae synth``): formats, physics, determinism, errors."""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import itertools
import json
import tomllib
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
from matplotlib.path import Path as MplPath

from hydromae.cli import main as cli_main
from pipeline.landmask import load_land_mask, reference_mask_path
from preprocessing.gridfile import open_grid
from preprocessing.synth import generate
from preprocessing.synth.boundaries import cells_polygon, signed_area
from preprocessing.synth.geography import load_gauges
from preprocessing.synth.hydrology import flow_gaps
from preprocessing.synth.layout import split_periods

START = dt.date(2000, 1, 20)
DAYS = 62  # 2000-01-20 .. 2000-03-21: a partial, a full and a partial month
LAST = START + dt.timedelta(days=DAYS - 1)
N_CATCH = 4
SEED = 3
MONTHS = [("20000120", "20000131"), ("20000201", "20000229"), ("20000301", "20000321")]
GRID_VARS = {"rainfall": "rainfall", "tas": "tas", "tasmax": "tasmax", "tasmin": "tasmin"}
HEADER = (
    "date,precipitation,pet,temperature,discharge_spec,discharge_vol,peti,humidity,"
    "shortwave_rad,longwave_rad,windspeed"
)
CELL = 5000.0


def grid_file(raw: Path, var: str, month: int) -> Path:
    a, b = MONTHS[month]
    if var == "sm":
        return raw / f"sm_synthetic_5km_day_{a}-{b}.nc"
    return raw / f"{var}_hadukgrid_uk_5km_day_{a}-{b}.nc"


def read_all(raw: Path, var: str) -> np.ndarray:
    """``[time, y, x]`` of all months via the preprocessing reader (NaN over sea)."""
    parts = []
    for m in range(len(MONTHS)):
        da = open_grid(grid_file(raw, var, m), var)
        try:
            parts.append(da.values)
        finally:
            da.close()
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "raw"
    generate(out, start=START.isoformat(), days=DAYS, catchments=N_CATCH, seed=SEED, progress=False)
    return out


@pytest.fixture(scope="module")
def land() -> np.ndarray:
    return load_land_mask(reference_mask_path())


@pytest.fixture(scope="module")
def topo(raw) -> pd.DataFrame:
    return pd.read_csv(raw / "CAMELS_GB_topographic_attributes.csv")


@pytest.fixture(scope="module")
def series(raw, topo) -> dict[int, pd.DataFrame]:
    a, b = START.strftime("%Y%m%d"), LAST.strftime("%Y%m%d")
    return {
        gid: pd.read_csv(raw / f"CAMELS_GB_hydromet_timeseries_{gid}_{a}-{b}.csv")
        for gid in topo["gauge_id"]
    }


@pytest.fixture(scope="module")
def shapes(raw) -> dict[int, list]:
    collection = json.loads((raw / "CAMELS_GB_catchment_boundaries.geojson").read_text())
    return {
        f["properties"]["gauge_id"]: f["geometry"]["coordinates"] for f in collection["features"]
    }


def catchment_cells(rings: list, gauge_xy: tuple[float, float], land: np.ndarray) -> np.ndarray:
    """Boolean ``[H, W]``: cells whose centres fall in the polygon, else the gauge's cell."""
    h, w = land.shape
    yy, xx = np.meshgrid(
        -197500.0 + CELL * np.arange(h), -197500.0 + CELL * np.arange(w), indexing="ij"
    )
    inside = MplPath(np.asarray(rings[0])).contains_points(
        np.column_stack([xx.ravel(), yy.ravel()])
    )
    for hole in rings[1:]:
        inside &= ~MplPath(np.asarray(hole)).contains_points(
            np.column_stack([xx.ravel(), yy.ravel()])
        )
    cells = inside.reshape(h, w)
    if not cells.any():  # a disc smaller than a cell: the cell holding the gauge
        r = int(np.floor((gauge_xy[1] + 200000.0) / CELL))
        c = int(np.floor((gauge_xy[0] + 200000.0) / CELL))
        cells[r, c] = True
    return cells


# ----------------------------------------------------------------------------- files


def test_file_set(raw, topo):
    names = {p.name for p in raw.iterdir()}
    expected = {grid_file(raw, v, m).name for v in [*GRID_VARS, "sm"] for m in range(3)}
    a, b = START.strftime("%Y%m%d"), LAST.strftime("%Y%m%d")
    expected |= {f"CAMELS_GB_hydromet_timeseries_{g}_{a}-{b}.csv" for g in topo["gauge_id"]}
    expected |= {
        "CAMELS_GB_topographic_attributes.csv",
        "CAMELS_GB_climatic_attributes.csv",
        "CAMELS_GB_hydrologic_attributes.csv",
        "CAMELS_GB_catchment_boundaries.geojson",
        "preprocess.toml",
        "hydromae_synth.json",
    }
    assert names == expected
    assert len(topo) == N_CATCH


def test_netcdf_structure(raw, land):
    for var in [*GRID_VARS, "sm"]:
        path = grid_file(raw, var, 1)
        with netCDF4.Dataset(path) as ds:
            assert ds.data_model == "NETCDF4"
            assert ds.Conventions == "CF-1.7"
            assert "creation_date" not in ds.ncattrs() and "history" not in ds.ncattrs()
            assert "generator_version" in ds.ncattrs() and "source" in ds.ncattrs()
            assert dict(ds.dimensions.items()).keys() >= {
                "time", "projection_y_coordinate", "projection_x_coordinate", "bnds"
            }  # fmt: skip
            v = ds[var]
            assert v.dimensions == ("time", "projection_y_coordinate", "projection_x_coordinate")
            assert v.dtype == np.float64 and v.shape == (29, 290, 180)
            assert v.getncattr("_FillValue") == 1e20
            assert v.grid_mapping == "transverse_mercator"
            assert v.coordinates == "latitude longitude"
            assert v.units == {"rainfall": "mm", "sm": "m3 m-3"}.get(var, "degC")
            if var == "rainfall":
                assert v.cell_methods == "time: sum"
                assert v.standard_name == "lwe_thickness_of_precipitation_amount"
            v.set_auto_mask(False)
            data = v[:]
            assert np.all(data[:, ~land] == 1e20)
            assert np.all(np.isfinite(data[:, land])) and np.all(data[:, land] < 1e3)
            assert v.filters()["zlib"] and v.filters()["shuffle"]
            assert v.chunking() == [1, 290, 180]

            gm = ds["transverse_mercator"]
            assert gm.grid_mapping_name == "transverse_mercator"
            assert gm.semi_major_axis == 6377563.396 and gm.semi_minor_axis == 6356256.909
            assert gm.longitude_of_central_meridian == -2.0
            assert gm.latitude_of_projection_origin == 49.0
            assert gm.false_easting == 400000.0 and gm.false_northing == -100000.0
            assert gm.scale_factor_at_central_meridian == 0.9996012717
            assert gm.longitude_of_prime_meridian == 0.0

            for name, n, axis in (
                ("projection_x_coordinate", 180, "X"),
                ("projection_y_coordinate", 290, "Y"),
            ):
                c = ds[name]
                assert c.dtype == np.float64 and c.units == "m" and c.axis == axis
                assert c.standard_name == name and c.bounds == f"{name}_bnds"
                np.testing.assert_array_equal(c[:], -197500.0 + 5000.0 * np.arange(n))
                bnds = ds[f"{name}_bnds"][:]
                np.testing.assert_array_equal(bnds[:, 0], c[:] - 2500.0)
                np.testing.assert_array_equal(bnds[:, 1], c[:] + 2500.0)
            assert ds["projection_x_coordinate"][-1] == 697500.0
            assert ds["projection_y_coordinate"][-1] == 1247500.0

            lat, lon = ds["latitude"][:], ds["longitude"][:]
            assert ds["latitude"].dimensions == (
                "projection_y_coordinate",
                "projection_x_coordinate",
            )
            assert (
                ds["latitude"].units == "degrees_north" and ds["longitude"].units == "degrees_east"
            )
            assert lat[land].min() > 48.0 and lat[land].max() < 61.0
            assert lon[land].min() > -9.0 and lon[land].max() < 2.5
            assert np.all(np.diff(lat[:, 90]) > 0)  # row 0 south

            t = ds["time"]
            assert t.dtype == np.int64
            assert t.units == "hours since 1800-01-01 00:00:00" and t.calendar == "standard"
            assert t.bounds == "time_bnds"
            hours = t[:]
            assert np.all(hours % 24 == 12)
            np.testing.assert_array_equal(np.diff(hours), 24)
            dates = netCDF4.num2date(hours, t.units, t.calendar)
            assert dates[0].year == 2000 and dates[0].month == 2 and dates[0].day == 1
            assert dates[0].hour == 12
            tb = ds["time_bnds"][:]
            assert ds["time_bnds"].dtype == np.int64
            np.testing.assert_array_equal(tb[:, 0], hours - 12)
            np.testing.assert_array_equal(tb[:, 1], hours + 12)


def test_open_grid_reads_files_and_land_equals_mask(raw, land):
    for var in [*GRID_VARS, "sm"]:
        days = []
        for m in range(3):
            da = open_grid(grid_file(raw, var, m), var)
            try:
                values = da.values
                assert da.dims == ("time", "y", "x") and values.shape[1:] == (290, 180)
                days.extend(pd.DatetimeIndex(da["time"].values).floor("D"))
            finally:
                da.close()
            valid = np.isfinite(values)
            np.testing.assert_array_equal(valid.all(axis=0), land)
            np.testing.assert_array_equal(valid.any(axis=0), land)
        expected = pd.date_range(START, periods=DAYS, freq="D")
        assert list(days) == list(expected)


# --------------------------------------------------------------------------- physics


def test_temperature_mean_of_max_and_min(raw, land):
    tas, tmax, tmin = (read_all(raw, v)[:, land] for v in ("tas", "tasmax", "tasmin"))
    np.testing.assert_array_equal(tas, (tmax + tmin) / 2)
    assert np.all(tmax >= tmin)
    assert tmin.min() > -25.0 and tmax.max() < 30.0  # January to March in GB
    assert 0.0 < tas.mean() < 8.0


def test_rain_intermittent_and_wetter_in_the_west(raw, land):
    rain = read_all(raw, "rainfall")
    values = rain[:, land]
    assert values.min() >= 0.0
    dry = (values == 0.0).mean(axis=1)  # share of dry land cells each day
    assert 0.2 < dry.mean() < 0.9
    assert (dry > 0.5).sum() >= 5  # mostly dry days happen
    assert values.max() > 20.0
    x = -197500.0 + 5000.0 * np.arange(290 * 0 + 180)
    total = rain.sum(axis=0)
    west = total[:, x < 300_000][land[:, x < 300_000]].mean()
    east = total[:, x > 450_000][land[:, x > 450_000]].mean()
    assert west > 1.3 * east


def test_soil_bounded_and_responds_to_rain(raw, land):
    sm = read_all(raw, "sm")[:, land]
    rain = read_all(raw, "rainfall")[:, land]
    assert sm.min() >= 0.1 and sm.max() <= 0.45
    change = np.diff(sm, axis=0)  # [T-1, cells]
    corr = np.corrcoef(rain[1:].ravel(), change.ravel())[0, 1]
    assert corr > 0.3
    assert change[rain[1:] > 10.0].mean() > 0 > change[rain[1:] == 0.0].mean()


# ---------------------------------------------------------------------------- CAMELS


def test_series_csv_format(raw, topo, series):
    real_ids = set(load_gauges()["gauge_id"])
    for gid, table in series.items():
        assert gid in real_ids
        a, b = START.strftime("%Y%m%d"), LAST.strftime("%Y%m%d")
        path = raw / f"CAMELS_GB_hydromet_timeseries_{gid}_{a}-{b}.csv"
        assert path.read_text().splitlines()[0] == HEADER
        assert list(table["date"]) == [
            d.strftime("%Y-%m-%d") for d in pd.date_range(START, periods=DAYS)
        ]
        flow_cols = ["discharge_spec", "discharge_vol"]
        assert not table.drop(columns=flow_cols).isna().any().any()
        np.testing.assert_array_equal(
            table["discharge_spec"].isna().values, table["discharge_vol"].isna().values
        )
        assert table["discharge_spec"].notna().sum() >= DAYS // 2
        area = float(topo.set_index("gauge_id").loc[gid, "area"])
        ok = table["discharge_spec"].notna()
        vol = table["discharge_spec"][ok] * area / 86.4
        np.testing.assert_allclose(table["discharge_vol"][ok], vol, atol=6e-4)
        assert (table["discharge_spec"][ok] > 0).all() and (table["pet"] >= 0).all()
        assert (table["peti"] >= table["pet"]).all()


def test_flow_gaps_kinds():
    rng = np.random.default_rng(0)
    gaps = np.array([flow_gaps(730, rng) for _ in range(200)])  # [gauges, days]
    missing = gaps.sum(axis=1)
    assert missing.max() <= 365
    longest = [
        max((len(r) for r in "".join("x" if g else "." for g in row).split(".")), default=0)
        for row in gaps
    ]
    assert sum(n >= 200 for n in longest) >= 20  # some gauges miss a long block
    scattered = (missing > 5) & (np.array(longest) < 30)
    assert scattered.sum() >= 20  # others have scattered gaps
    assert (missing <= 5).sum() >= 40  # and many are nearly complete
    np.testing.assert_array_equal(
        flow_gaps(730, np.random.default_rng(1)), flow_gaps(730, np.random.default_rng(1))
    )


def test_precip_and_temperature_are_grid_means(raw, land, topo, series, shapes):
    rain, tas = read_all(raw, "rainfall"), read_all(raw, "tas")
    for row in topo.itertuples():
        cells = catchment_cells(shapes[row.gauge_id], (row.gauge_easting, row.gauge_northing), land)
        assert land[cells].all()
        table = series[row.gauge_id]
        np.testing.assert_allclose(table["precipitation"], rain[:, cells].mean(axis=1), atol=5.1e-3)
        np.testing.assert_allclose(table["temperature"], tas[:, cells].mean(axis=1), atol=5.1e-3)


def test_flow_lags_rain_and_recedes(series):
    lags = range(-3, 7)
    peaks = []
    falling = []
    for table in series.values():
        p = table["precipitation"].values
        q = pd.Series(table["discharge_spec"].values).interpolate(limit_direction="both").values
        corr = [np.corrcoef(p[3 : DAYS - 6], q[3 + lag : DAYS - 6 + lag])[0, 1] for lag in lags]
        peaks.append(list(lags)[int(np.argmax(corr))])
        dry = (p[2:] < 0.5) & (p[1:-1] < 0.5) & (p[:-2] < 0.5)  # dry today and the two days before
        falling.append(np.mean(np.diff(q)[1:][dry] < 0) if dry.any() else 1.0)
    assert all(lag >= 1 for lag in peaks), peaks
    assert np.mean(falling) > 0.8, falling


def test_attribute_tables(raw, topo, series):
    assert list(topo.columns) == [
        "gauge_id", "gauge_name", "gauge_lat", "gauge_lon", "gauge_easting", "gauge_northing",
        "gauge_elev", "area", "elev_min", "elev_10", "elev_50", "elev_90", "elev_max", "dpsbar",
        "elev_mean",
    ]  # fmt: skip
    gauges = load_gauges().set_index("gauge_id")
    for row in topo.itertuples():
        np.testing.assert_allclose(row.area, gauges.loc[row.gauge_id, "area_km2"], atol=0.01)
        assert row.elev_min <= row.elev_10 <= row.elev_50 <= row.elev_90 <= row.elev_max
        assert 49.5 < row.gauge_lat < 59.5 and -7 < row.gauge_lon < 2
    clim = pd.read_csv(raw / "CAMELS_GB_climatic_attributes.csv").set_index("gauge_id")
    hydro = pd.read_csv(raw / "CAMELS_GB_hydrologic_attributes.csv").set_index("gauge_id")
    assert {"p_mean", "pet_mean", "aridity"} <= set(clim.columns)
    assert {"q_mean", "runoff_ratio", "baseflow_index"} <= set(hydro.columns)
    for gid, table in series.items():
        np.testing.assert_allclose(
            clim.loc[gid, "p_mean"], table["precipitation"].mean(), atol=3e-3
        )
        q = table["discharge_spec"].dropna()
        np.testing.assert_allclose(hydro.loc[gid, "q_mean"], q.mean(), atol=3e-3)
        assert 0.0 < hydro.loc[gid, "baseflow_index"] < 1.0


def test_geojson_boundaries(raw, topo, shapes):
    collection = json.loads((raw / "CAMELS_GB_catchment_boundaries.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    assert "27700" in collection["crs"]["properties"]["name"]
    assert all(f["geometry"]["type"] == "Polygon" for f in collection["features"])
    assert set(shapes) == set(topo["gauge_id"])
    for row in topo.itertuples():
        rings = shapes[row.gauge_id]
        exterior = rings[0]
        assert exterior[0] == exterior[-1] and len(exterior) >= 4
        assert signed_area(exterior) > 0  # counter-clockwise
        assert MplPath(np.asarray(exterior)).contains_point((row.gauge_easting, row.gauge_northing))
        area = (signed_area(exterior) + sum(signed_area(h) for h in rings[1:])) / 1e6
        if row.area < 25.0:
            np.testing.assert_allclose(area, row.area, rtol=1e-3)
        else:
            assert abs(area - row.area) <= 12.5 + 1e-6
            xs = np.asarray(exterior)[:, 0]
            assert np.all((xs + 200_000.0) % 5000.0 == 0)  # cell edges


def test_cells_polygon_dissolves_with_holes():
    # a 3 x 3 block with the centre missing: one exterior, one hole
    width = 10
    cells = np.array([r * width + c for r in range(3) for c in range(3) if (r, c) != (1, 1)])
    rings = cells_polygon(cells, width)
    assert len(rings) == 2
    assert signed_area(rings[0]) == pytest.approx(9 * 25e6)
    assert signed_area(rings[1]) == pytest.approx(-25e6)
    assert len(rings[0]) == 5  # a square: four corners and the closing point
    # two cells touching only at a corner, joined around the back (a pinch)
    shape = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (1, 0)]
    rings = cells_polygon(np.array([r * width + c for r, c in shape]), width)
    total = sum(signed_area(r) for r in rings)
    assert total == pytest.approx(len(shape) * 25e6)
    assert sum(signed_area(r) > 0 for r in rings) == 1
    for ring in rings:
        assert len(set(map(tuple, ring[:-1]))) == len(ring) - 1  # simple: no repeated vertex


def test_preprocess_toml(raw):
    with open(raw / "preprocess.toml", "rb") as fh:
        cfg = tomllib.load(fh)
    assert set(cfg) == {
        "precip", "precip_var", "temp", "temp_var", "soil", "soil_var", "catchments",
        "attributes", "evap_column", "riverflow_column", "boundaries", "train", "val", "test",
        "window", "stride", "land_threshold", "out",
    }  # fmt: skip
    assert (cfg["precip_var"], cfg["temp_var"], cfg["soil_var"]) == ("rainfall", "tas", "sm")
    assert (cfg["evap_column"], cfg["riverflow_column"]) == ("pet", "discharge_spec")
    assert (cfg["window"], cfg["stride"], cfg["land_threshold"]) == (90, 90, 0.5)
    assert cfg["out"] == "../dataset"

    def matches(key: str) -> set[str]:
        assert not Path(cfg[key]).is_absolute()
        return {Path(p).name for p in glob.glob(str(raw / cfg[key]))}

    assert matches("precip") == {grid_file(raw, "rainfall", m).name for m in range(3)}
    assert matches("temp") == {grid_file(raw, "tas", m).name for m in range(3)}
    assert matches("soil") == {grid_file(raw, "sm", m).name for m in range(3)}
    assert len(matches("catchments")) == N_CATCH
    assert matches("attributes") == {
        f"CAMELS_GB_{k}_attributes.csv" for k in ("topographic", "climatic", "hydrologic")
    }
    assert matches("boundaries") == {"CAMELS_GB_catchment_boundaries.geojson"}
    spans = [
        [dt.date.fromisoformat(d) for d in cfg[k].split(":")] for k in ("train", "val", "test")
    ]
    assert spans[0][0] == START and spans[2][1] == LAST
    for (_, end), (nxt, _) in itertools.pairwise(spans):
        assert nxt == end + dt.timedelta(days=1)
    assert all(a <= b for a, b in spans)


def test_split_periods():
    lengths = {k: (b - a).days + 1 for k, (a, b) in split_periods(START, 730).items()}
    assert lengths["val"] >= 90 and lengths["test"] >= 90
    assert sum(lengths.values()) == 730 and 0.65 <= lengths["train"] / 730 <= 0.75
    lengths = {k: (b - a).days + 1 for k, (a, b) in split_periods(START, 3).items()}
    assert lengths == {"train": 1, "val": 1, "test": 1}


# ----------------------------------------------------------------- determinism and CLI


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_is_byte_identical_and_another_seed_differs(raw, tmp_path):
    again = tmp_path / "again"
    generate(again, start=START, days=DAYS, catchments=N_CATCH, seed=SEED, progress=False)
    assert _digests(again) == _digests(raw)

    other = tmp_path / "other"
    generate(other, start=START, days=DAYS, catchments=N_CATCH, seed=SEED + 1, progress=False)
    a = read_all(raw, "rainfall")
    b = read_all(other, "rainfall")
    assert not np.allclose(np.nan_to_num(a), np.nan_to_num(b))
    assert (
        _digests(other)[grid_file(raw, "tas", 0).name]
        != _digests(raw)[grid_file(raw, "tas", 0).name]
    )


def test_cli_runs_shows_progress_and_reruns(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--days", "3", "--catchments", "1", "--seed", "5"]
    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    assert "synth" in captured.err and "3/3" in captured.err  # the tqdm bar
    assert "wrote" in captured.out and str(out) in captured.out
    first = _digests(out)
    assert len(glob.glob(str(out / "CAMELS_GB_hydromet_timeseries_*_20000101-20000103.csv"))) == 1
    # same settings again: rewritten identically
    assert cli_main([*argv, "--no-progress"]) == 0
    assert _digests(out) == first
    # other settings into the same directory: refused, nothing touched
    assert cli_main(["synth", "--out", str(out), "--days", "3", "--seed", "6"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert _digests(out) == first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": 0}, "days"),
        ({"days": 2}, "days"),
        ({"days": 3.5}, "days must be an integer"),
        ({"catchments": 0}, "catchments"),
        ({"catchments": 672}, "catchments"),
        ({"seed": -1}, "seed"),
        ({"start": "2000-13-01"}, "start"),
        ({"start": "next tuesday"}, "start"),
        ({"start": "9999-12-01", "days": 100}, "calendar"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "bad", **{"progress": False, **kwargs})
    assert not (tmp_path / "bad").exists()


def test_refuses_foreign_generated_files(tmp_path, capsys):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "rainfall_hadukgrid_uk_5km_day_19990101-19990131.nc").write_bytes(b"")
    with pytest.raises(ValueError, match="already holds"):
        generate(out, days=3, catchments=1, progress=False)
    assert cli_main(["synth", "--out", str(out), "--start", "2000-02-30"]) == 2
    assert "start" in capsys.readouterr().err
