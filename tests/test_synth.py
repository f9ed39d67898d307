"""The synthetic generator (``hydromae synth``): formats, layout, physics, determinism, errors."""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
from matplotlib.path import Path as MplPath

from hydromae.cli import main as cli_main
from pipeline.landmask import load_land_mask, reference_mask_path
from preprocessing.camels_gb import ATTRIBUTE_COLUMNS
from preprocessing.gridfile import open_grid
from preprocessing.shapefile import BRITISH_NATIONAL_GRID_WKT, read_polygons
from preprocessing.synth import generate, signatures
from preprocessing.synth.attributes import attribute_tables, country, landscape_rng
from preprocessing.synth.boundaries import cells_polygon, signed_area
from preprocessing.synth.camels import HydrometSeries
from preprocessing.synth.geography import (
    load_gauges,
    make_geography,
    place_catchments,
    select_gauges,
)
from preprocessing.synth.hydrology import flow_gaps
from preprocessing.synth.landscape import make_landscape
from preprocessing.synth.layout import split_periods
from preprocessing.weights import read_boundaries

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
DATA = "data"
SHP = "data/CAMELS_GB_catchment_boundaries/CAMELS_GB_catchment_boundaries.shp"
GEOJSON = "data/CAMELS_GB_catchment_boundaries.geojson"
GROUPS = (
    "topographic", "climatic", "hydrologic", "hydrometry", "landcover", "soil", "hydrogeology",
    "humaninfluence",
)  # fmt: skip
# written by the generator before the CAMELS-GB layout and attributes changed (git 9881c10):
# the grids and the series must not change with them
BEFORE = {
    "rainfall_hadukgrid_uk_5km_day_20000201-20000229.nc": (
        "a360eea674a5645356f2b95dbaf6a6b165c8cb937636a88e9f4c895a55c34803"
    ),
    "CAMELS_GB_hydromet_timeseries_27049_20000120-20000321.csv": (
        "e46b1512f86e056e9c09fd206b6661bf0cd805426e06b90b28a5aab119d021e6"
    ),
    "CAMELS_GB_hydromet_timeseries_84019_20000120-20000321.csv": (
        "a57db6524c55619215bb539acc61a422ccd2eebb9f533dd57fae36165f289c3d"
    ),
}
BEFORE_RAINFALL_VALUES = "f93a1d217ff6cd4c92847c706840cf238c6a8326dc937d6eab63f6a8de779beb"
BEFORE_NC_PROPERTIES = "version=2,netcdf=4.10.1,hdf5=2.2.0"  # the libraries that wrote them


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
    return pd.read_csv(raw / DATA / "CAMELS_GB_topographic_attributes.csv")


def series_path(raw: Path, gid: int) -> Path:
    a, b = START.strftime("%Y%m%d"), LAST.strftime("%Y%m%d")
    return raw / DATA / "timeseries" / f"CAMELS_GB_hydromet_timeseries_{gid}_{a}-{b}.csv"


@pytest.fixture(scope="module")
def series(raw, topo) -> dict[int, pd.DataFrame]:
    return {gid: pd.read_csv(series_path(raw, gid)) for gid in topo["gauge_id"]}


@pytest.fixture(scope="module")
def shapes(raw) -> dict[int, list]:
    collection = json.loads((raw / GEOJSON).read_text())
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


def test_file_set_is_the_release_layout(raw, topo):
    """Grids at the top; CAMELS-GB in data/ exactly as the EIDC release lays it out."""
    names = {str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file()}
    expected = {grid_file(raw, v, m).name for v in [*GRID_VARS, "sm"] for m in range(3)}
    expected |= {str(series_path(raw, g).relative_to(raw)) for g in topo["gauge_id"]}
    expected |= {f"data/CAMELS_GB_{group}_attributes.csv" for group in GROUPS}
    expected |= {SHP[:-3] + ext for ext in ("shp", "shx", "dbf", "prj")}
    expected |= {GEOJSON, "preprocess.toml", "hydromae_synth.json"}
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
        path = series_path(raw, gid)
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


def test_attribute_tables_have_the_release_columns(raw, topo):
    total = 0
    for group in GROUPS:
        path = raw / DATA / f"CAMELS_GB_{group}_attributes.csv"
        header = path.read_text().splitlines()[0].split(",")
        assert header == ["gauge_id", *ATTRIBUTE_COLUMNS[group]], group
        table = pd.read_csv(path, dtype={"gauge_id": str})
        assert list(table["gauge_id"]) == sorted(table["gauge_id"])  # sorted as text
        assert set(table["gauge_id"]) == set(topo["gauge_id"].astype(str))
        total += len(header) - 1
    assert total == 145
    assert list(topo.columns[:8]) == [
        "gauge_id", "gauge_name", "gauge_lat", "gauge_lon", "gauge_easting", "gauge_northing",
        "gauge_elev", "area",
    ]  # fmt: skip


def test_attribute_values_are_plausible(raw, topo):
    gauges = load_gauges().set_index("gauge_id")
    for row in topo.itertuples():
        np.testing.assert_allclose(row.area, gauges.loc[row.gauge_id, "area_km2"], atol=0.01)
        assert row.elev_min <= row.elev_10 <= row.elev_50 <= row.elev_90 <= row.elev_max
        assert 49.5 < row.gauge_lat < 59.5 and -7 < row.gauge_lon < 2
    tables = {
        g: pd.read_csv(raw / DATA / f"CAMELS_GB_{g}_attributes.csv").set_index("gauge_id")
        for g in GROUPS
    }
    cover = tables["landcover"]
    shares = cover[[c for c in cover.columns if c.endswith("_perc")]]
    np.testing.assert_allclose(shares.sum(axis=1), 100.0, atol=0.05)
    assert all(cover.loc[g, "dom_land_cover"] for g in cover.index)
    geology = tables["hydrogeology"]
    np.testing.assert_allclose(geology.sum(axis=1), 100.0, atol=0.05)
    soil = tables["soil"]
    np.testing.assert_allclose(
        soil[["sand_perc", "silt_perc", "clay_perc"]].sum(axis=1), 100, atol=0.05
    )
    for name in ("bulkdens", "tawc", "porosity_cosby", "conductivity_cosby", "root_depth"):
        assert (soil[f"{name}_5"] <= soil[f"{name}_50"]).all()
        assert (soil[f"{name}_50"] <= soil[f"{name}_95"]).all()
        assert (soil[name] > 0).all()
    human = tables["humaninfluence"]
    for gid, row in topo.set_index("gauge_id").iterrows():
        england = country(row.gauge_easting, row.gauge_northing) == "England"
        assert np.isfinite(human.loc[gid, "surfacewater_abs"]) == england  # England only
    assert set(human["benchmark_catch"]) <= {"Y", "N"}
    clim = tables["climatic"]
    assert set(clim["high_prec_timing"].dropna()) <= {"djf", "mam", "jja", "son"}
    hydrometry = tables["hydrometry"]
    assert (hydrometry["q50_uncert_upper"] > 0).all() and (hydrometry["q50_uncert_lower"] < 0).all()


def test_attributes_from_series_use_the_training_period_only(raw, series):
    """Climatic and hydrologic attributes come from the training days: no val/test flow."""
    train_end = split_periods(START, DAYS)["train"][1]
    clim = pd.read_csv(raw / DATA / "CAMELS_GB_climatic_attributes.csv").set_index("gauge_id")
    hydro = pd.read_csv(raw / DATA / "CAMELS_GB_hydrologic_attributes.csv").set_index("gauge_id")
    for gid, table in series.items():
        train = table[pd.to_datetime(table["date"]).dt.date <= train_end]
        np.testing.assert_allclose(
            clim.loc[gid, "p_mean"], train["precipitation"].mean(), atol=6e-3
        )
        q = train["discharge_spec"].dropna()
        np.testing.assert_allclose(hydro.loc[gid, "q_mean"], q.mean(), atol=6e-3)
        np.testing.assert_allclose(hydro.loc[gid, "Q95"], np.quantile(q, 0.95), atol=2e-3)
        assert 0.0 < hydro.loc[gid, "baseflow_index"] < 1.0


def test_hydrologic_attributes_ignore_the_held_out_flow():
    """Changing every flow after the training period changes no flow-derived attribute."""
    rng = np.random.default_rng(0)
    geo = make_geography(rng)
    cats = place_catchments(geo, select_gauges(load_gauges(), 2, rng))
    land = make_landscape(geo, landscape_rng(0))
    days = 1200
    dates = pd.date_range("2000-01-01", periods=days, freq="D")
    train = (dt.date(2000, 1, 1), dt.date(2002, 9, 30))

    def make(scale_after: float) -> list[HydrometSeries]:
        out = []
        for i in range(2):
            r = np.random.default_rng(i)
            flow = r.gamma(2.0, 1.0, days)
            flow[dates.date > train[1]] *= scale_after
            out.append(
                HydrometSeries(
                    *(r.gamma(2.0, 1.0, days) for _ in range(4)), discharge_spec=flow,
                    humidity=np.ones(days), shortwave_rad=np.ones(days),
                    longwave_rad=np.ones(days), windspeed=np.ones(days), slow=flow / 2,
                )
            )  # fmt: skip
        return out

    a = attribute_tables(geo, cats, make(1.0), dates, train, land, seed=0)
    b = attribute_tables(geo, cats, make(10.0), dates, train, land, seed=0)
    for group in GROUPS:
        pd.testing.assert_frame_equal(a[group], b[group])
    assert a["hydrologic"]["stream_elas"].notna().all()  # two complete water years
    assert a["hydrologic"]["hfd_mean"].notna().all()
    assert a["climatic"]["p_seasonality"].notna().all()


def test_geojson_boundaries(raw, topo, shapes):
    collection = json.loads((raw / GEOJSON).read_text())
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


def test_shapefile_boundaries_as_released(raw, topo, shapes):
    """The release's shapefile: Polygon records, ID_STRING and ID, British National Grid,
    the same polygons as the GeoJSON (outer rings clockwise, as shapefiles want)."""
    data = (raw / SHP).read_bytes()
    assert int.from_bytes(data[:4], "big") == 9994  # file code
    assert int.from_bytes(data[24:28], "big") * 2 == len(data)  # length in 16-bit words
    assert int.from_bytes(data[32:36], "little") == 5  # Polygon
    assert (raw / SHP).with_suffix(".prj").read_text() == BRITISH_NATIONAL_GRID_WKT
    shx = (raw / SHP).with_suffix(".shx").read_bytes()
    assert (len(shx) - 100) // 8 == N_CATCH
    read = read_polygons(raw / SHP)
    assert [f.attributes for f in read.features] == [
        {"ID_STRING": str(g), "ID": g} for g in topo["gauge_id"]
    ]
    for feature in read.features:
        (polygon,) = feature.polygons
        assert signed_area(polygon[0]) < 0  # clockwise in the file
        expected = np.asarray(shapes[feature.attributes["ID"]][0])
        np.testing.assert_array_equal(polygon[0][::-1], expected)
    ours = read_boundaries(raw / SHP)
    theirs = read_boundaries(raw / GEOJSON)
    assert ours.keys() == theirs.keys() == {str(g) for g in topo["gauge_id"]}


def test_shapefile_reads_as_gdal_reads_it(raw, topo):
    """GDAL (the optional ``geo`` extra) reads the shapefile: CRS, fields and geometry."""
    geopandas = pytest.importorskip("geopandas", reason="the optional geo extra is not installed")
    frame = geopandas.read_file(raw / SHP)
    assert frame.crs.to_epsg() == 27700
    assert list(frame["ID"]) == list(topo["gauge_id"])
    assert list(frame["ID_STRING"]) == [str(g) for g in topo["gauge_id"]]
    assert frame.geometry.is_valid.all()
    geojson = geopandas.read_file(raw / GEOJSON)
    assert all(a.equals(b) for a, b in zip(frame.geometry, geojson.geometry, strict=True))


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
    assert matches("attributes") == {f"CAMELS_GB_{k}_attributes.csv" for k in GROUPS}
    assert cfg["boundaries"] == SHP
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
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_grids_and_series_are_those_of_before(raw):
    """The CAMELS-GB layout and attributes took nothing from the grids' and series' random
    streams: the same seed gives the same rainfall and series files as before them."""
    timeseries = raw / DATA / "timeseries"
    for name in [n for n in BEFORE if n.endswith(".csv")]:
        assert _sha256(timeseries / name) == BEFORE[name], name
    rainfall = raw / "rainfall_hadukgrid_uk_5km_day_20000201-20000229.nc"
    with netCDF4.Dataset(rainfall) as ds:
        v = ds["rainfall"]
        v.set_auto_mask(False)
        values = np.ascontiguousarray(v[:], dtype="<f8").tobytes()
        written_by = ds.getncattr("_NCProperties")
    assert hashlib.sha256(values).hexdigest() == BEFORE_RAINFALL_VALUES
    if written_by != BEFORE_NC_PROPERTIES:  # netCDF-C records its versions in the file
        pytest.skip(f"file hash recorded with {BEFORE_NC_PROPERTIES}, these are {written_by}")
    assert _sha256(rainfall) == BEFORE[rainfall.name]


def test_same_seed_is_byte_identical_and_another_seed_differs(raw, tmp_path):
    again = tmp_path / "again"
    summary = generate(again, start=START, days=DAYS, catchments=N_CATCH, seed=SEED, progress=False)
    assert _digests(again) == _digests(raw)
    # 62 days: every split is shorter than one 90-day window, and the output says so
    (note,) = summary.notes
    assert "shorter than one 90-day window" in note
    assert all(f"{split} " in note for split in ("train", "val", "test"))
    assert (raw / "preprocess.toml").read_text().splitlines()[2] == f"# NOTE: {note}"

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
    series_glob = "data/timeseries/CAMELS_GB_hydromet_timeseries_*_20000101-20000103.csv"
    assert len(glob.glob(str(out / series_glob))) == 1
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


# ----------------------------------------------------------------- signatures


def _days(years: int) -> pd.DatetimeIndex:
    return pd.date_range("2000-10-01", periods=round(365.25 * years), freq="D")


def test_p_seasonality_sign_follows_the_wet_season():
    dates = _days(3)
    doy = np.asarray(dates.day_of_year, dtype=float)
    cycle = np.cos(2 * np.pi * (doy - 20) / 365.25)  # +1 on 20 January
    temp = 10.0 - 6.0 * cycle  # coldest on 20 January
    winter, summer = 3.0 * (1 + 0.4 * cycle), 3.0 * (1 - 0.4 * cycle)
    assert signatures.p_seasonality(winter, temp, dates) == pytest.approx(-0.4, abs=0.03)
    assert signatures.p_seasonality(summer, temp, dates) == pytest.approx(0.4, abs=0.03)
    assert abs(signatures.p_seasonality(np.full(doy.size, 3.0), temp, dates)) < 1e-9
    assert np.isnan(signatures.p_seasonality(winter[:200], temp[:200], dates[:200]))


def test_flow_signatures():
    rng = np.random.default_rng(0)
    steady = np.full(400, 2.0)
    assert signatures.slope_fdc(steady) == 0.0
    calm, flashy = rng.lognormal(0, 0.3, 400), rng.lognormal(0, 1.0, 400)
    assert signatures.slope_fdc(flashy) > signatures.slope_fdc(calm) > 0
    assert signatures.baseflow_index_ceh(steady) == pytest.approx(1.0)
    spikes = np.ones(400)
    spikes[::10] += 5.0
    bfi = signatures.baseflow_index_ceh(spikes)
    assert bfi == pytest.approx(400 / spikes.sum(), abs=0.02)  # the base of 1 mm/day
    spikes[::10] += 5.0
    assert signatures.baseflow_index_ceh(spikes) < bfi
    assert np.isnan(signatures.baseflow_index_ceh(steady[:10]))

    dates = _days(2)
    flow = np.ones(dates.size)
    assert signatures.half_flow_date(flow, dates) == pytest.approx(182, abs=1)
    early = np.where(dates.month == 10, 50.0, 0.1)
    assert signatures.half_flow_date(early, dates) < 31
    gappy = flow.copy()
    gappy[:100] = np.nan  # a year with a quarter of its days missing does not count
    assert np.isnan(signatures.half_flow_date(gappy[:365], dates[:365]))


def test_stream_elasticity_recovers_a_power_law():
    dates = _days(6)
    years = signatures.water_years(dates)
    assert len(years) == 6 and all(len(y) in (365, 366) for y in years)
    p = np.empty(dates.size)
    for i, year in enumerate(years):
        p[year] = 2.0 * (1.0 + 0.04 * (i - 2.5))
    flow = 0.5 * p**2.0  # elasticity 2
    assert signatures.stream_elasticity(flow, p, dates) == pytest.approx(2.0, abs=0.05)
    assert np.isnan(signatures.stream_elasticity(flow[:400], p[:400], dates[:400]))


def test_timing_and_runs():
    dates = pd.date_range("2001-01-01", periods=365, freq="D")
    flags = np.asarray(dates.month == 7)
    assert signatures.timing(flags, dates) == "jja"
    assert signatures.timing(np.zeros(365, dtype=bool), dates) is None
    assert signatures.mean_run(np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], dtype=bool)) == 2.0
    assert np.isnan(signatures.mean_run(np.zeros(5, dtype=bool)))


# ----------------------------------------------------------------- neuralhydrology

NH_PYTHON = Path(
    os.environ.get(
        "HYDROMAE_NEURALHYDROLOGY_PYTHON",
        Path(__file__).resolve().parents[1] / ".peers" / "neuralhydrology" / "bin" / "python",
    )
)
NH_SCRIPT = """
import json, sys
from pathlib import Path
from neuralhydrology.datasetzoo.camelsgb import (
    load_camels_gb_attributes, load_camels_gb_timeseries,
)
series_dir, attributes_dir, basins = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
out = {"series": {}}
for basin in basins:
    df = load_camels_gb_timeseries(series_dir, basin)
    out["series"][basin] = {
        "columns": list(df.columns), "days": len(df), "first": str(df.index[0].date()),
        "last": str(df.index[-1].date()), "freq": df.index.inferred_freq,
        "flow_nan": int(df["discharge_spec"].isna().sum()),
        "flow_sum": float(df["discharge_spec"].sum()),
    }
attrs = load_camels_gb_attributes(attributes_dir, basins)
out["attributes"] = {
    "shape": list(attrs.shape), "index": list(attrs.index),
    "area": attrs["area"].tolist(), "p_mean": attrs["p_mean"].tolist(),
}
print(json.dumps(out))
"""


def test_neuralhydrology_reads_the_release_layout(raw, topo, series, tmp_path):
    """neuralhydrology's own CAMELS-GB loaders read the output: the series as they lie, the
    attributes after the one move the real release needs too (the CSVs into data/attributes/).
    neuralhydrology pulls torch and more, so it runs in its own interpreter."""
    if not NH_PYTHON.exists():
        pytest.skip(
            f"no neuralhydrology interpreter at {NH_PYTHON}: set HYDROMAE_NEURALHYDROLOGY_PYTHON "
            "or create it with `python3 -m venv .peers/neuralhydrology && .peers/neuralhydrology"
            "/bin/pip install torch==2.13.0 neuralhydrology`"
        )
    moved = tmp_path / "data"
    shutil.copytree(raw / DATA, moved)
    (moved / "attributes").mkdir()
    for path in moved.glob("CAMELS_GB_*_attributes.csv"):
        path.rename(moved / "attributes" / path.name)
    basins = [str(g) for g in topo["gauge_id"]]
    done = subprocess.run(
        [str(NH_PYTHON), "-c", NH_SCRIPT, str(raw / DATA), str(moved), *basins],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for basin in basins:
        got, table = result["series"][basin], series[int(basin)]
        assert got["columns"] == HEADER.split(",")[1:]
        assert (got["days"], got["first"], got["last"]) == (DAYS, str(START), str(LAST))
        assert got["freq"] == "D"
        assert got["flow_nan"] == table["discharge_spec"].isna().sum()
        assert got["flow_sum"] == pytest.approx(table["discharge_spec"].sum())
    attrs = result["attributes"]
    assert attrs["shape"] == [N_CATCH, 145] and attrs["index"] == basins
    np.testing.assert_allclose(attrs["area"], topo["area"])
