"""Faults in the raw inputs, each met with one clear error; the CAMELS-GB release as input.

Real files throughout: NetCDF written with netCDF4 and damaged on disk, CSVs, GeoJSON and
shapefiles. Each fault class asserts the exception type and that the message names the
file, the variable or column, and the problem; the damaged NetCDF and the kelvin grid also
go through ``hydromae preprocess`` (exit code 2, one line on stderr, no traceback).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import small_land_mask, write_haduk_file

from hydromae.cli import main
from pipeline import config
from preprocessing import camels_gb
from preprocessing.catchments import (
    CatchmentInputError,
    read_attributes,
    read_series,
    static_matrix,
)
from preprocessing.gridfile import GridFileError, valid_everywhere
from preprocessing.grids import index_source
from preprocessing.plan import PlanError, PreprocessConfig, make_plan
from preprocessing.ranges import COLUMN_RANGES, IMAGE_RANGES, first_outside
from preprocessing.shapefile import Field, ShapefileError, read_polygons, write_polygons
from preprocessing.synth import generate
from preprocessing.weights import BoundaryError, read_boundaries

DAYS = 30
START = dt.date(2000, 1, 1)
DATES = [START + dt.timedelta(days=i) for i in range(DAYS)]
GAUGES = {"1001": (-175000.0, -175000.0, 100.0), "2002": (-150000.0, -110000.0, 400.0)}
SERIES = "CAMELS_GB_hydromet_timeseries_{}_20000101-20000130.csv"
HEADER = [
    "date", "precipitation", "pet", "temperature", "discharge_spec", "discharge_vol", "peti",
    "humidity", "shortwave_rad", "longwave_rad", "windspeed",
]  # fmt: skip
SQUARE = np.array([[-160e3, -120e3], [-140e3, -120e3], [-140e3, -100e3], [-160e3, -100e3]])


# ------------------------------------------------------------------ real files


def write_grid(path: Path, var: str, units: str, values: np.ndarray, zlib: bool = False) -> Path:
    """``values [DAYS, 40, 30]`` (NaN = sea) as HadUK-Grid writes them, with ``units``;
    ``zlib``: compressed in one chunk a day, as the Met Office's files are."""
    write_haduk_file(path, var, values)
    if zlib:
        ds = xr.load_dataset(path)
        ds.to_netcdf(
            path, encoding={var: {"zlib": True, "complevel": 4, "chunksizes": (1, 40, 30)}}
        )
    with netCDF4.Dataset(path, "a") as ds:
        ds[var].units = units
    return path


def grids(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Plausible precipitation (mm), temperature (degC) and soil moisture (m3 m-3)."""
    land = small_land_mask()
    shape = (DAYS, *land.shape)
    fields = {
        "rainfall": rng.gamma(0.6, 4.0, shape),
        "tas": 5.0 + rng.normal(0.0, 3.0, shape),
        "sm": rng.uniform(0.1, 0.4, shape),
    }
    for values in fields.values():
        values[:, ~land] = np.nan
    return fields


def series_frame(rng: np.random.Generator) -> pd.DataFrame:
    table = pd.DataFrame({c: rng.uniform(0.5, 3.0, DAYS) for c in HEADER[1:]})
    table["temperature"] = rng.normal(5.0, 3.0, DAYS)
    table.insert(0, "date", [d.isoformat() for d in DATES])
    return table


def write_release(data: Path, rng: np.random.Generator) -> None:
    """A small CAMELS-GB release ``data/`` folder: series, two attribute tables, shapefile."""
    (data / camels_gb.TIMESERIES).mkdir(parents=True)
    for gauge in GAUGES:
        path = data / camels_gb.TIMESERIES / SERIES.format(gauge)
        series_frame(rng).to_csv(path, index=False, na_rep="NaN")
    pd.DataFrame(
        {
            "gauge_id": list(GAUGES),
            "gauge_name": ["River One at A", "River Two at B"],
            "gauge_easting": [v[0] for v in GAUGES.values()],
            "gauge_northing": [v[1] for v in GAUGES.values()],
            "area": [v[2] for v in GAUGES.values()],
        }
    ).to_csv(data / camels_gb.attribute_file("topographic"), index=False)
    pd.DataFrame(
        {"gauge_id": list(GAUGES), "p_mean": [2.1, 3.4], "high_prec_timing": ["djf", "son"]}
    ).to_csv(data / camels_gb.attribute_file("climatic"), index=False)
    shp = data / camels_gb.BOUNDARIES_SHP
    shp.parent.mkdir()
    disc = [np.column_stack([-175e3 + 5e3 * np.cos(t), -175e3 + 5e3 * np.sin(t)]) for t in [
        np.linspace(0, 2 * np.pi, 33)
    ]]  # fmt: skip
    write_polygons(
        shp,
        [[disc], [[np.vstack([SQUARE, SQUARE[:1]])]]],
        [Field("ID_STRING", "C", 10), Field("ID", "N", 10)],
        [("1001", 1001), ("2002", 2002)],
    )


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """Grids at the top of ``raw/``, the release in ``raw/release/data/``."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    raw.mkdir()
    for var, values in grids(rng).items():
        units = {"rainfall": "mm", "tas": "degC", "sm": "m3 m-3"}[var]
        write_grid(raw / f"{var}_grid.nc", var, units, values, zlib=var == "rainfall")
    write_release(raw / "release" / "data", rng)
    return raw


def settings(raw: Path, out: Path, **overrides) -> dict:
    data = raw / "release" / "data"
    return {
        "precip": str(raw / "rainfall_grid.nc"), "precip_var": "rainfall",
        "temp": str(raw / "tas_grid.nc"), "temp_var": ["tas"],
        "soil": str(raw / "sm_grid.nc"), "soil_var": "sm",
        "catchments": str(data / camels_gb.TIMESERIES / "*.csv"),
        "attributes": [str(data / "CAMELS_GB_*_attributes.csv")],
        "static_attributes": ["area", "p_mean"],
        "train": "2000-01-01:2000-01-20", "val": "2000-01-21:2000-01-30",
        "window": 10, "stride": 10, "out": str(out), "progress": False,
        # one task at a time: a run that fails leaves no other task reading netCDF behind it
        # (dask returns at the first error while the other threads finish their tasks)
        "workers": 1,
    } | overrides  # fmt: skip


def cli(raw: Path, out: Path, **overrides) -> list[str]:
    args = ["preprocess"]
    for key, value in settings(raw, out, **overrides).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif value is not None:
            args += [flag, *(map(str, value) if isinstance(value, list) else [str(value)])]
    return args


def run_cli(args: list[str], capfd) -> tuple[int, str]:
    """Exit code and everything written to the stderr file descriptor (C libraries too)."""
    code = main(args)
    return code, capfd.readouterr().err


def assert_one_line(err: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err


# ------------------------------------------------------------- a. damaged NetCDF


def damage(path: Path, var: str) -> int:
    """Overwrite 64 bytes inside ``path``'s compressed data (its size kept) so that the
    file still opens but reading ``var`` fails; return the offset. Each candidate offset,
    from the middle on, is checked by reading with netCDF4 itself."""
    good = path.read_bytes()
    for offset in range(len(good) // 2, len(good) - 64, 509):
        bad = bytearray(good)
        bad[offset : offset + 64] = bytes(64)
        path.write_bytes(bytes(bad))
        try:
            ds = netCDF4.Dataset(path)
        except OSError:
            continue  # that hit the metadata: the file does not even open
        try:
            ds[var][:]
        except RuntimeError:
            return offset
        finally:
            ds.close()
    path.write_bytes(good)
    raise AssertionError(f"no 64-byte damage from the middle of {path} breaks reading {var}")


def test_damaged_netcdf_names_file_variable_and_days(raw):
    path = raw / "rainfall_grid.nc"
    size = path.stat().st_size
    damage(path, "rainfall")
    assert path.stat().st_size == size
    source = index_source("precip", [path], ["rainfall"])  # metadata still reads
    with pytest.raises(GridFileError) as caught:
        source.read(DATES)
    message = str(caught.value)
    assert str(path) in message and "'rainfall'" in message
    assert f"{DAYS} day(s) from 2000-01-01" in message
    assert "cannot read the data" in message and "damaged" in message
    with pytest.raises(GridFileError, match=re.escape(str(path)) + ".*'rainfall'.*damaged"):
        valid_everywhere([path], "rainfall", progress=False)


def test_damaged_netcdf_through_the_command(raw, tmp_path, capfd):
    damage(raw / "rainfall_grid.nc", "rainfall")
    code, err = run_cli(cli(raw, tmp_path / "out"), capfd)
    assert code == 2
    assert_one_line(err)
    assert "rainfall_grid.nc" in err and "'rainfall'" in err and "damaged" in err
    assert re.search(r"10 day\(s\) from 2000-01-(01|11|21)", err), err  # the block's first day
    assert not (tmp_path / "out" / "manifest.json").exists()


# ------------------------------------------------------------- c. physical ranges


def test_kelvin_labelled_degc_through_the_command(raw, tmp_path, capfd):
    values = grids(np.random.default_rng(1))["tas"] + 273.15  # kelvin ...
    write_grid(raw / "tas_grid.nc", "tas", "degC", values)  # ... labelled degC
    code, err = run_cli(cli(raw, tmp_path / "out"), capfd)
    assert code == 2
    assert_one_line(err)
    assert "tas_grid.nc" in err and re.search(r"'tas' on 2000-01-[0-3]\d: 2\d\d\.\d+ degC", err)
    assert "outside the physical range [-60, 60] degC" in err and "units" in err


@pytest.mark.parametrize(
    ("modality", "var", "units", "value", "limits"),
    [
        ("precip", "rainfall", "mm", -3.0, "[0, 1000] mm"),
        ("precip", "rainfall", "kg m-2 s-1", 0.5, "[0, 1000] mm"),  # 43200 mm/day
        ("soil", "sm", "m3 m-3", 35.0, "[0, 1] m3 m-3"),  # percent labelled a fraction
        ("soil", "sm", "%", 140.0, "[0, 100] %"),
        ("soil", "sm", "kg m-2", 9000.0, "[0, 5000] kg m-2"),
        ("temp", "tas", "degC", -9999.0, "[-60, 60] degC"),  # an undeclared missing marker
    ],
)
def test_grid_value_out_of_range(tmp_path, modality, var, units, value, limits):
    values = np.zeros((DAYS, 40, 30))  # in range in every unit
    values[:, ~small_land_mask()] = np.nan  # sea: NaN is missing, never out of range
    values[7, 3, 4] = value
    path = write_grid(tmp_path / f"{var}.nc", var, units, values)
    source = index_source(modality, [path], [var], units if modality == "soil" else None)
    source.read(DATES[:7])  # the days before are fine
    with pytest.raises(GridFileError) as caught:
        source.read(DATES)
    message = str(caught.value)
    assert str(path) in message and f"'{var}'" in message and "on 2000-01-08" in message
    assert f"outside the physical range {limits}" in message
    assert "y = -182500, x = -177500" in message  # where


def test_soil_in_unknown_units_is_not_range_checked(tmp_path):
    values = np.full((DAYS, 40, 30), 123456.0)
    path = write_grid(tmp_path / "sm.nc", "sm", "furlongs", values)
    read = index_source("soil", [path], ["sm"], "furlongs").read(DATES)
    assert read.max() == np.float32(123456.0)


def test_synthetic_data_lie_inside_every_range(tmp_path):
    """``hydromae synth`` output passes: grids and series, over every day written."""
    raw = tmp_path / "synth"
    generate(raw, days=100, catchments=3, seed=4, progress=False)
    days = [START + dt.timedelta(days=i) for i in range(100)]
    for modality, stem, var, units in (
        ("precip", "rainfall", "rainfall", None),
        ("temp", "tas", "tas", None),
        ("temp", "tasmax", "tasmax", None),
        ("soil", "sm", "sm", "m3 m-3"),
    ):
        source = index_source(modality, sorted(raw.glob(f"{stem}_*.nc")), [var], units)
        assert IMAGE_RANGES[modality].get(source.units) is not None
        source.read(days)  # raises if anything is out of range
    for path in sorted((raw / "data" / "timeseries").glob("*.csv")):
        table = pd.read_csv(path)
        for column, limits in COLUMN_RANGES.items():
            assert first_outside(table[column].to_numpy(), limits) is None, (path, column)


def test_series_out_of_range(raw):
    files = sorted((raw / "release" / "data" / "timeseries").glob("*.csv"))
    table = pd.read_csv(files[1])
    table.loc[12, "discharge_spec"] = 5000.0
    table.loc[3, "temperature"] = 290.0  # not read: not checked
    table.to_csv(files[1], index=False)
    read_series(files, DATES[:12])  # before the bad day: fine
    with pytest.raises(CatchmentInputError) as caught:
        read_series(files, DATES)
    message = str(caught.value)
    assert str(files[1]) in message and "'discharge_spec'" in message
    assert "on 2000-01-13" in message and "5000 mm/day" in message and "[0, 2000]" in message
    table.loc[12, "discharge_spec"] = np.nan
    table.loc[20, "pet"] = -50.0
    table.to_csv(files[1], index=False)
    with pytest.raises(CatchmentInputError, match=r"'pet' on 2000-01-21: -50 mm/day.*\[-10, 30\]"):
        read_series(files, DATES)


# ------------------------------------------------------------- d. non-numeric values


def set_cell(line: str, column: str, text: str) -> str:
    cells = line.split(",")
    cells[HEADER.index(column)] = text
    return ",".join(cells)


def test_text_in_a_series_column(raw):
    files = sorted((raw / "release" / "data" / "timeseries").glob("*.csv"))
    lines = files[0].read_text().splitlines()  # line i + 1 holds 2000-01-{i:02d}
    lines[5] = set_cell(lines[5], "discharge_spec", "abc")
    for i, missing in ((5, ""), (6, "NaN"), (7, "nan")):  # missing values, not errors
        lines[i] = set_cell(lines[i], "pet", missing)
    files[0].write_text("\n".join(lines) + "\n")
    with pytest.raises(CatchmentInputError) as caught:
        read_series(files, DATES)
    message = str(caught.value)
    assert str(files[0]) in message and "'discharge_spec'" in message
    assert "line 6" in message and "2000-01-05" in message and "'abc' is not a number" in message
    lines[5] = set_cell(lines[5], "discharge_spec", "1.5")
    files[0].write_text("\n".join(lines) + "\n")
    records = read_series(files, DATES)
    assert np.isnan(records.evap[4:7, 0]).all() and np.isfinite(records.evap[:4, 0]).all()


def test_text_in_a_long_table_names_the_gauge(tmp_path):
    table = pd.concat(
        [series_frame(np.random.default_rng(i)).assign(gauge_id=g) for i, g in enumerate("AB")]
    )
    table["pet"] = table["pet"].astype(object)
    table.iloc[DAYS + 2, table.columns.get_loc("pet")] = "1,5"
    path = tmp_path / "long.csv"
    table.to_csv(path, index=False)
    with pytest.raises(
        CatchmentInputError, match=r"long.csv: column 'pet', line 34 .*gauge B.*'1,5'"
    ):
        read_series([path], DATES)


def test_text_in_a_requested_static_attribute(raw):
    data = raw / "release" / "data"
    topo = data / camels_gb.attribute_file("topographic")
    table = pd.read_csv(topo, dtype={"gauge_id": str})
    table["area"] = table["area"].astype(object)
    table.loc[1, "area"] = "big"
    table.to_csv(topo, index=False)
    paths = sorted(data.glob("CAMELS_GB_*_attributes.csv"))
    joined = read_attributes(paths, list(GAUGES))
    ok = static_matrix(joined, ["p_mean", "gauge_easting"], paths)  # strings not requested
    np.testing.assert_allclose(ok[:, 0], [2.1, 3.4])
    with pytest.raises(CatchmentInputError) as caught:
        static_matrix(joined, ["p_mean", "area"], paths)
    message = str(caught.value)
    assert str(topo) in message and "'area'" in message and "gauge 2002" in message
    assert "'big' is not a number" in message
    with pytest.raises(CatchmentInputError, match="'high_prec_timing', gauge 1001: 'djf'"):
        static_matrix(joined, ["high_prec_timing"], paths)


# ------------------------------------------------------------- b. GeoJSON faults


def write_geojson(path: Path, features: list[dict]) -> Path:
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::27700"}}
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))
    return path


def square_feature(properties: dict | None) -> dict:
    ring = np.vstack([SQUARE, SQUARE[:1]]).tolist()
    geometry = {"type": "Polygon", "coordinates": [ring]}
    return {"type": "Feature", "properties": properties, "geometry": geometry}


@pytest.mark.parametrize("geometry", ["null", "missing"])
def test_geojson_feature_without_geometry(tmp_path, geometry):
    feature = square_feature({"gauge_id": 2002})
    if geometry == "null":
        feature["geometry"] = None
    else:
        del feature["geometry"]
    path = write_geojson(tmp_path / "b.geojson", [square_feature({"gauge_id": 1001}), feature])
    with pytest.raises(BoundaryError) as caught:
        read_boundaries(path)
    message = str(caught.value)
    assert str(path) in message and "gauge 2002" in message and "no geometry" in message


def test_geojson_feature_without_properties(tmp_path):
    path = write_geojson(
        tmp_path / "b.geojson", [square_feature({"gauge_id": 1}), square_feature(None)]
    )
    with pytest.raises(BoundaryError, match=r"b.geojson: feature 1 has no attributes \(None\)"):
        read_boundaries(path)


def test_geojson_gauge_from_camels_fields_and_duplicates(tmp_path):
    path = write_geojson(
        tmp_path / "b.geojson",
        [square_feature({"ID_STRING": "2002", "ID": 2002}), square_feature({"ID": 1001.0})],
    )
    polygons = read_boundaries(path)
    assert set(polygons) == {"2002", "1001"}
    np.testing.assert_array_equal(polygons["2002"][0][0][:4], SQUARE)
    write_geojson(path, [square_feature({"gauge_id": 7}), square_feature({"ID": 7})])
    with pytest.raises(BoundaryError, match="gauge 7 has more than one feature"):
        read_boundaries(path)


# ------------------------------------------------------------- shapefiles


def test_shapefile_round_trip_with_holes_parts_and_zip(tmp_path):
    outer = np.array([[0, 0], [0, 9e3], [9e3, 9e3], [9e3, 0], [0, 0]], dtype=float)  # clockwise
    hole = np.array([[3e3, 3e3], [6e3, 3e3], [6e3, 6e3], [3e3, 6e3], [3e3, 3e3]], dtype=float)
    island = np.array([[20e3, 0], [30e3, 0], [30e3, 5e3], [20e3, 0]], dtype=float)  # ccw
    shp = tmp_path / "b.shp"
    fields = [Field("ID_STRING", "C", 8), Field("ID", "N", 8), Field("AREA", "N", 12, 3)]
    write_polygons(shp, [[[outer, hole], [island]]], fields, [("x1", 41, 12.5)])
    (feature,) = read_polygons(shp).features
    assert feature.attributes == {"ID_STRING": "x1", "ID": 41, "AREA": 12.5}
    first, second = feature.polygons
    np.testing.assert_array_equal(first[0], outer)
    assert len(first) == 2 and len(second) == 1  # the hole stays with its outer ring
    assert {tuple(p) for p in first[1]} == {tuple(p) for p in hole}
    assert read_boundaries(shp)["x1"][1][0].shape == (4, 2)
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for suffix in (".shp", ".shx", ".dbf", ".prj"):
            z.write(shp.with_suffix(suffix), f"b/b{suffix}")
    zipped = read_boundaries(archive)
    np.testing.assert_array_equal(zipped["x1"][0][0], read_boundaries(shp)["x1"][0][0])


def test_shapefile_in_another_crs_is_transformed(tmp_path):
    lonlat = np.array([[-1.0, 52.0], [-1.0, 52.1], [-0.9, 52.1], [-0.9, 52.0], [-1.0, 52.0]])
    shp = tmp_path / "wgs84.shp"
    wkt = (
        'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
        'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]'
    )
    write_polygons(shp, [[[lonlat]]], [Field("gauge_id", "C", 4)], [("g",)], wkt=wkt)
    ring = read_boundaries(shp)["g"][0][0]
    assert 465_000 < ring[:, 0].min() < ring[:, 0].max() < 480_000  # BNG eastings
    assert 230_000 < ring[:, 1].min() < ring[:, 1].max() < 250_000  # and northings


def test_shapefile_faults(tmp_path):
    shp = tmp_path / "b.shp"
    ring = np.vstack([SQUARE, SQUARE[:1]])
    write_polygons(shp, [[[ring]], [[ring + 5e4]]], [Field("ID", "N", 6)], [(1,), (2,)])
    good = shp.read_bytes()
    shp.write_bytes(good[:-40])
    with pytest.raises(ShapefileError, match=re.escape(str(shp)) + ".*truncated"):
        read_boundaries(shp)
    # a null shape (type 0) in place of the second record: no geometry for gauge 2
    first_len = int.from_bytes(good[104:108], "big") * 2
    null = good[: 100 + 8 + first_len] + (2).to_bytes(4, "big") + (2).to_bytes(4, "big")
    null += (0).to_bytes(4, "little")
    shp.write_bytes(null[:24] + (len(null) // 2).to_bytes(4, "big") + null[28:])
    with pytest.raises(BoundaryError, match=r"b.shp: gauge 2: .*no geometry"):
        read_boundaries(shp)
    shp.write_bytes(good)
    write_polygons(tmp_path / "other.shp", [[[ring]]], [Field("ID", "N", 6)], [(1,)])
    shp.with_suffix(".dbf").write_bytes((tmp_path / "other.dbf").read_bytes())
    with pytest.raises(ShapefileError, match="2 shapes but 1 rows"):
        read_boundaries(shp)
    shp.with_suffix(".dbf").unlink()
    with pytest.raises(ShapefileError, match=r"b.dbf is missing"):
        read_boundaries(shp)


# ------------------------------------------------------------- e. splits shorter than a window


def test_plan_refuses_splits_without_windows(raw, tmp_path):
    cfg = config.load(PreprocessConfig, overrides=settings(raw, tmp_path / "o", window=15))
    with pytest.raises(PlanError) as caught:
        make_plan(cfg)
    message = str(caught.value)
    assert "--val 2000-01-21:2000-01-30 is 10 days" in message and "--train" not in message
    assert "one window of 15 days" in message and "--window 10 or less" in message
    cfg = config.load(
        PreprocessConfig, overrides=settings(raw, tmp_path / "o", window=25, val=None)
    )
    with pytest.raises(PlanError, match=r"--train 2000-01-01:2000-01-20 is 20 days.*window of 25"):
        make_plan(cfg)
    make_plan(config.load(PreprocessConfig, overrides=settings(raw, tmp_path / "o")))


def test_short_synthetic_run_is_refused_by_preprocess(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert main(["synth", "--out", str(raw), "--days", "120", "--catchments", "2"]) == 0
    capsys.readouterr()
    code = main(["preprocess", "--config", str(raw / "preprocess.toml"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--train 2000-01-01:2000-03-24 is 84 days" in err
    assert "--val 2000-03-25:2000-04-11 is 18 days" in err and "window of 90 days" in err
    assert not (tmp_path / "dataset").exists()  # nothing written


# ------------------------------------------------------------- the release as input


def test_locate_the_release_from_its_top_or_data_folder(raw):
    top = raw / "release"
    for folder in (top, top / "data"):
        release = camels_gb.locate(folder)
        assert release.data == top / "data"
        assert release.boundaries == top / "data" / camels_gb.BOUNDARIES_SHP
    with pytest.raises(camels_gb.CamelsReleaseError, match=re.escape(str(raw)) + ".*timeseries"):
        camels_gb.locate(raw)


def test_camels_gb_setting_fills_the_inputs(raw, tmp_path):
    top = raw / "release"
    given = settings(raw, tmp_path / "o", catchments=None, attributes=[], camels_gb=str(top))
    plan = make_plan(config.load(PreprocessConfig, overrides=given))
    assert [p.name for p in plan.catchment_files] == [SERIES.format(g) for g in GAUGES]
    assert {p.name for p in plan.attribute_files} == {
        camels_gb.attribute_file("topographic"), camels_gb.attribute_file("climatic"),
    }  # fmt: skip
    assert plan.boundaries == top / "data" / camels_gb.BOUNDARIES_SHP
    assert set(read_boundaries(plan.boundaries)) == set(GAUGES)
    # explicit settings win over the release
    only = str(top / "data" / "timeseries" / SERIES.format("1001"))
    geojson = write_geojson(tmp_path / "b.geojson", [square_feature({"gauge_id": 1001})])
    plan = make_plan(
        config.load(
            PreprocessConfig,
            overrides=given | {"catchments": only, "boundaries": str(geojson)},
        )
    )
    assert [p.name for p in plan.catchment_files] == [SERIES.format("1001")]
    assert plan.boundaries == geojson
    # the release as it ships: boundaries still zipped
    shp = top / "data" / camels_gb.BOUNDARIES_SHP
    with zipfile.ZipFile(top / "data" / camels_gb.BOUNDARIES_ZIP, "w") as z:
        for path in sorted(shp.parent.iterdir()):
            z.write(path, f"{camels_gb.BOUNDARIES}/{path.name}")
    for path in list(shp.parent.iterdir()):
        path.unlink()
    shp.parent.rmdir()
    plan = make_plan(config.load(PreprocessConfig, overrides=given))
    assert plan.boundaries == top / "data" / camels_gb.BOUNDARIES_ZIP
    assert set(read_boundaries(plan.boundaries)) == set(GAUGES)


def test_preprocess_runs_on_the_release_folder(raw, tmp_path, capsys):
    out = tmp_path / "dataset"
    args = cli(raw, out, catchments=None, attributes=None)
    args += ["--camels-gb", str(raw / "release" / "data")]
    assert main(args) == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["catchments"]["ids"] == list(GAUGES)
    np.testing.assert_allclose(
        manifest["catchments"]["static"], [[100.0, 2.1], [400.0, 3.4]], rtol=1e-6
    )
    assert manifest["settings"]["camels_gb"].endswith("release/data")


def test_neither_catchments_nor_release(raw, tmp_path):
    cfg = config.load(PreprocessConfig, overrides=settings(raw, tmp_path / "o", catchments=None))
    with pytest.raises(PlanError, match="--catchments, or --camels-gb"):
        make_plan(cfg)
