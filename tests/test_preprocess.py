"""hydromae preprocess and inspect, on synthetic data in the real formats."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from hydromae.cli import main
from pipeline import config
from pipeline.catchment import expand
from pipeline.collate import MultiScaleMaskedCollate
from pipeline.grid import PatchGrid, patchify
from pipeline.history import HISTORY_FEATURES, CatchmentHistory
from pipeline.manifest import Manifest
from pipeline.normalize import Normalizer
from pipeline.npy import decode_npy
from pipeline.schema import MODALITIES, SHARDS, STORE
from pipeline.shard import read_shard
from pipeline.store import image_grid, open_store
from preprocessing.catchments import read_series
from preprocessing.job import run_job
from preprocessing.plan import PreprocessConfig
from preprocessing.synth import generate

SPLITS = {
    "train": "2000-01-01:2000-02-19",  # 50 days: windows at days 0, 10, 20, 30
    "val": "2000-02-20:2000-03-10",  # 20 days: one window
    "test": "2000-03-11:2000-03-30",  # 20 days: one window
}
SETTINGS = dict(window=20, stride=10, samples_per_shard=3, progress=False, **SPLITS)


def make_config(raw: Path, out: Path, **overrides) -> PreprocessConfig:
    cfg = config.load(PreprocessConfig, raw / "preprocess.toml", {**SETTINGS, "out": out})
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def cli_args(raw: Path, out: Path, progress: bool = False) -> list[str]:
    args = ["preprocess", "--config", str(raw / "preprocess.toml"), "--out", str(out)]
    for key, value in SETTINGS.items():
        if key != "progress":
            args += ["--" + key.replace("_", "-"), str(value)]
    return [*args, "--progress" if progress else "--no-progress"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    generate(out, start="2000-01-01", days=90, catchments=3, seed=1, progress=False)
    return out


@pytest.fixture(scope="module")
def dataset(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "dataset"
    run_job(make_config(raw, out))
    return out


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------- contents
def test_directory_layout_and_manifest(dataset):
    m = Manifest.read(dataset)
    assert {"manifest.json", "land_mask.npy", "land_mask.pt", "store.zarr", "shards"} <= {
        p.name for p in dataset.iterdir()
    }
    assert not (dataset / ".journal").exists()
    assert m.land_mask.valid == 94 and len(m.valid_patch_indices) == 94
    assert {s: m.splits[s].windows for s in m.splits} == {"train": 4, "val": 1, "test": 1}
    assert m.splits["train"].samples == 4 * 3
    counts = sorted(s.samples for s in m.split_shards("train"))
    assert counts == [2, 2]  # 4 windows at most 3 a shard: balanced, not 3 + 1
    text = (dataset / "manifest.json").read_text()
    assert str(dt.date.today().year) not in text.replace("2000", "")  # no wall-clock time
    assert m.variables["precip"].units == "mm" and m.variables["temp"].units == "degC"
    assert m.normalization["precip"].transform == "log1p"
    assert m.normalization["riverflow"].transform == "log1p"
    assert m.catchments.boundaries == "polygons"


def test_store_holds_the_raw_grids_as_patches(raw, dataset):
    m = Manifest.read(dataset)
    ds = xr.open_zarr(dataset / STORE)
    assert ds["precip"].dims == ("time", "patch", "py", "px")
    assert ds.sizes["time"] == 90 and ds["patch"].values.tolist() == list(m.store_patch_indices)
    assert str(ds["time"].values[0])[:10] == "2000-01-01"
    with netCDF4.Dataset(raw / "rainfall_hadukgrid_uk_5km_day_20000201-20000229.nc") as nc:
        day = np.ma.filled(nc["rainfall"][4], np.nan)  # 2000-02-05: index 35
    grid = PatchGrid()
    expected = patchify(day.astype(np.float32), grid)[list(m.store_patch_indices)]
    np.testing.assert_array_equal(ds["precip"].isel(time=35).values, expected)
    assert ds["evap"].dims == ("time", "catchment") and ds.sizes["catchment"] == 3
    assert ds["catchment_patch_weight"].dims == ("catchment", "patch")


def test_store_images_come_back_on_the_british_national_grid(raw, dataset):
    m = Manifest.read(dataset)
    grid = image_grid(open_store(dataset), "precip", m)
    assert grid.dims == ("time", "y", "x") and grid.shape == (90, 290, 180)
    assert grid["x"].values[0] == -197500.0 and grid["y"].values[-1] == 1247500.0
    with netCDF4.Dataset(raw / "rainfall_hadukgrid_uk_5km_day_20000101-20000131.nc") as nc:
        day = np.ma.filled(nc["rainfall"][9], np.nan).astype(np.float32)
        np.testing.assert_array_equal(nc["projection_y_coordinate"][:], grid["y"].values)
    np.testing.assert_array_equal(grid.isel(time=9).values, day)  # NaN over sea too


def test_float16_images(raw, tmp_path):
    out = tmp_path / "half"
    run_job(make_config(raw, out, image_dtype="float16"))
    m = Manifest.read(out)
    assert open_store(out)["precip"].dtype == np.float16
    with tarfile.open(out / SHARDS / m.shards[0].name) as tar:
        member = next(x for x in tar.getmembers() if x.name.endswith(".temp.npy"))
        assert decode_npy(tar.extractfile(member).read()).dtype == np.float16


def test_webdataset_reads_the_shards_as_written(dataset):
    """The shards are WebDataset's format: its own reader (the reference) gives every window,
    in order, with the arrays hydromae's strict reader gives."""
    import webdataset

    for entry in Manifest.read(dataset).shards:
        path = dataset / SHARDS / entry.name
        ours = list(read_shard(path))
        theirs = list(webdataset.WebDataset(str(path), shardshuffle=False).decode())
        assert [s["__key__"] for s in theirs] == [w["__key__"] for w in ours]
        assert len(theirs) == entry.samples
        for sample, window in zip(theirs, ours, strict=True):
            assert sample["meta.json"] == window["meta"]
            for name in MODALITIES:
                np.testing.assert_array_equal(sample[f"{name}.npy"], window[name])


def test_shards_equal_the_store_bit_for_bit(dataset):
    m = Manifest.read(dataset)
    ds = xr.open_zarr(dataset / STORE)
    positions = m.store_positions()
    seen = []
    for entry in m.shards:
        with tarfile.open(dataset / SHARDS / entry.name) as tar:
            members = tar.getmembers()
            assert all(mem.mtime == 0 and mem.uid == 0 and mem.uname == "" for mem in members)
            data = {mem.name: tar.extractfile(mem).read() for mem in members}
        keys = list(dict.fromkeys(name.split(".")[0] for name in data))
        names = [mem.name for mem in members]
        for key in keys:  # a sample's members are adjacent
            idx = [i for i, n in enumerate(names) if n.startswith(key + ".")]
            assert idx == list(range(idx[0], idx[0] + 6))
            meta = json.loads(data[f"{key}.meta.json"])
            assert meta["split"] == entry.split
            start = dt.date.fromisoformat(meta["start"])
            t0 = (start - dt.date(2000, 1, 1)).days
            for var in ("precip", "soil", "temp"):
                shard = decode_npy(data[f"{key}.{var}.npy"])
                assert shard.shape == (20, 94, 10, 10) and shard.dtype == np.float32
                store = ds[var].isel(time=slice(t0, t0 + 20)).values[:, positions]
                np.testing.assert_array_equal(shard, store)
            for var in ("evap", "riverflow"):
                np.testing.assert_array_equal(
                    decode_npy(data[f"{key}.{var}.npy"]),
                    ds[var].isel(time=slice(t0, t0 + 20)).values,
                )
            seen.append((entry.split, meta["start"]))
    for split, start in seen:  # windows never straddle a split boundary
        a, b = (dt.date.fromisoformat(x) for x in SPLITS[split].split(":"))
        s = dt.date.fromisoformat(start)
        assert a <= s and s + dt.timedelta(days=19) <= b


def test_normalisation_statistics_match_numpy(raw, dataset):
    m = Manifest.read(dataset)
    land = np.load(dataset / "land_mask.npy")
    train = xr.concat(
        [xr.open_dataset(p)["rainfall"] for p in sorted(raw.glob("rainfall_*.nc"))], dim="time"
    ).sel(time=slice("2000-01-01", "2000-02-19T23:59"))
    values = train.values[:, land].astype(np.float32).astype(np.float64)  # as stored
    values = np.log1p(values[np.isfinite(values)])
    stats = m.normalization["precip"]
    assert stats.count == values.size == 50 * land.sum()
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std == pytest.approx(values.std(), rel=1e-10)
    flow = pd.concat(
        [
            pd.read_csv(p, index_col="date")["discharge_spec"].loc["2000-01-01":"2000-02-19"]
            for p in sorted(raw.glob("data/timeseries/CAMELS_GB_hydromet_timeseries_*.csv"))
        ]
    ).to_numpy(np.float32)
    flow = np.log1p(flow[np.isfinite(flow)].astype(np.float64))
    assert m.normalization["riverflow"].mean == pytest.approx(flow.mean(), rel=1e-12)
    assert m.normalization["riverflow"].std == pytest.approx(flow.std(), rel=1e-10)


def test_normalizer_round_trips_numpy_and_torch(dataset):
    norm = Manifest.read(dataset).normalizer()
    x = np.array([0.0, 0.5, 3.0, 40.0], dtype=np.float64)
    z = norm.normalize("precip", x)
    s = norm.stats["precip"]
    np.testing.assert_allclose(z, (np.log1p(x) - s.mean) / s.std)
    np.testing.assert_allclose(norm.denormalize("precip", z), x, rtol=1e-12, atol=1e-12)
    t = torch.tensor(x, dtype=torch.float32)
    zt = norm.normalize("precip", t)
    assert zt.dtype == torch.float32 and zt.device == t.device
    torch.testing.assert_close(norm.denormalize("precip", zt), t, rtol=1e-5, atol=1e-5)
    assert Normalizer.from_state_dict(norm.state_dict()).stats == norm.stats
    temp = norm.normalize("temp", np.array([10.0]))
    assert temp[0] == pytest.approx((10.0 - norm.stats["temp"].mean) / norm.stats["temp"].std)


def test_temperature_from_tasmax_and_tasmin(raw, dataset, tmp_path):
    other = tmp_path / "minmax"
    run_job(
        make_config(
            raw,
            other,
            temp=str(raw / "tasm*_hadukgrid_uk_5km_day_*.nc"),
            temp_var=["tasmax", "tasmin"],
        )
    )
    a = xr.open_zarr(dataset / STORE)["temp"].values
    b = xr.open_zarr(other / STORE)["temp"].values
    np.testing.assert_allclose(a, b, atol=1e-5, equal_nan=True)


def test_long_table_equals_per_gauge_files(raw, tmp_path):
    files = sorted(raw.glob("data/timeseries/CAMELS_GB_hydromet_timeseries_*.csv"))
    frames = []
    for path in files:
        frame = pd.read_csv(path)
        frame.insert(1, "gauge_id", path.name.split("_")[4])
        frames.append(frame)
    long = tmp_path / "long.csv"
    pd.concat(frames).to_csv(long, index=False)
    dates = [dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(90)]
    a, b = read_series(files, dates), read_series([long], dates)
    assert a.gauge_ids == b.gauge_ids
    np.testing.assert_array_equal(a.riverflow, b.riverflow)
    np.testing.assert_array_equal(a.evap, b.evap)


def test_catchment_weights_from_polygons_and_discs(raw, dataset, tmp_path):
    m = Manifest.read(dataset)
    disc = tmp_path / "disc"
    run_job(make_config(raw, disc, boundaries=None))
    d = Manifest.read(disc)
    assert d.catchments.boundaries == "discs"
    for poly, circle in zip(
        m.catchments.catchment_patch_weight,
        d.catchments.catchment_patch_weight,
        strict=True,
    ):
        assert sum(poly.values()) == pytest.approx(1.0, abs=1e-5)
        assert sum(circle.values()) <= 1.0 + 1e-5
        assert set(poly) & set(circle)  # the disc overlaps the catchment's patches


def test_a_catchments_rain_is_the_mean_over_its_own_cells_as_in_its_camels_gb_file(raw, dataset):
    """The pixel weights sum to the patch weights, and the catchment rainfall hydromae reads
    (``pipeline.history``: the mean over the catchment's own cells) is the CAMELS-GB file's
    precipitation, the mean over the same cells, to the file's two decimals. The mean of
    whole 50 km patches would not be."""
    m = Manifest.read(dataset)
    table = m.catchment_table()
    np.testing.assert_allclose(table.pixels.sum(-1), table.weight, atol=1e-5)
    rain = CatchmentHistory.read(str(dataset / STORE), m, 1).series[..., 0]  # [time, C]
    assert HISTORY_FEATURES[0] == "precip"
    whole = np.isclose(table.weight.sum(-1), 1.0, atol=1e-4)  # every cell on a valid patch
    # synth outlines a catchment under one cell as a disc, which straddles cells its record
    # does not average; the others' outlines are their cells
    cells = (table.pixels > 0).sum((1, 2))
    compared = np.flatnonzero(whole & (cells > 2))
    assert compared.size
    for c in compared:
        (path,) = (raw / "data" / "timeseries").glob(f"*_{m.catchments.ids[c]}_*.csv")
        camels = pd.read_csv(path)["precipitation"].to_numpy()
        np.testing.assert_allclose(rain[: len(camels), c], camels, atol=0.0051)


# ----------------------------------------------------------------- resumable, distributed
def test_killed_runs_resume_to_byte_identical_output(raw, dataset, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "hydromae", *cli_args(raw, out)]
    for stage in ("block-", "shard-"):  # kill once among the images, once among the shards
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if list((out / ".journal").glob(f"{stage}*.json")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, (
            f"the run ended before it could be killed at {stage}"
        )
        assert not (out / "manifest.json").exists()  # nothing half-done looks complete
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert tree_bytes(out) == tree_bytes(dataset)
    assert not list(out.rglob("*.tmp"))
    a, b = xr.open_zarr(out / STORE), xr.open_zarr(dataset / STORE)
    xr.testing.assert_identical(a.load(), b.load())
    # a finished dataset is left alone by a rerun
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert tree_bytes(out) == tree_bytes(dataset)


def test_runs_on_a_dask_distributed_cluster(raw, dataset, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        cfg = make_config(raw, tmp_path / "dist", scheduler=cluster.scheduler_address)
        run_job(cfg)
    assert tree_bytes(tmp_path / "dist") == tree_bytes(dataset)


# ----------------------------------------------------------------- bad input
@pytest.fixture
def raw_copy(raw, tmp_path) -> Path:
    """A directory of links to the raw files, to break one of them."""
    copy = tmp_path / "raw"
    for path in raw.rglob("*"):
        if path.is_file():
            link = copy / path.relative_to(raw)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return copy


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_missing_variable_names_file_and_variable(raw_copy, tmp_path, capsys):
    code, err = run_cli(
        [*cli_args(raw_copy, tmp_path / "o"), "--precip-var", "precipitation"], capsys
    )
    assert code == 2 and "rainfall_hadukgrid" in err and "'precipitation' not found" in err


def test_missing_and_duplicated_days(raw_copy, tmp_path, capsys):
    feb = raw_copy / "rainfall_hadukgrid_uk_5km_day_20000201-20000229.nc"
    dup = raw_copy / "rainfall_hadukgrid_uk_5km_day_20000201-20000229_copy.nc"
    shutil.copy(feb, dup)
    code, err = run_cli(cli_args(raw_copy, tmp_path / "o"), capsys)
    assert code == 2 and "duplicated day" in err and "rainfall" in err
    dup.unlink()
    feb.unlink()
    code, err = run_cli(cli_args(raw_copy, tmp_path / "o"), capsys)
    assert code == 2 and "'rainfall' has no file for 29 day(s)" in err and "2000-02-01" in err


def test_unknown_units_and_wrong_grid(raw, raw_copy, tmp_path, capsys):
    jan = raw_copy / "tas_hadukgrid_uk_5km_day_20000101-20000131.nc"
    real = jan.resolve()
    jan.unlink()
    shutil.copy(real, jan)
    with netCDF4.Dataset(jan, "a") as nc:
        nc["tas"].units = "furlongs"
    code, err = run_cli(cli_args(raw_copy, tmp_path / "o"), capsys)
    assert (
        code == 2
        and "tas_hadukgrid_uk_5km_day_20000101" in err
        and "unknown units 'furlongs'" in err
    )

    small = tmp_path / "small"
    small.mkdir()
    ds = xr.open_dataset(raw_copy / "sm_synthetic_5km_day_20000101-20000131.nc")
    ds.isel(projection_y_coordinate=slice(0, 100)).to_netcdf(small / "sm_small.nc")
    ds.close()
    code, err = run_cli([*cli_args(raw, tmp_path / "o2"), "--soil", str(small / "sm_*.nc")], capsys)
    assert code == 2 and "sm_small.nc" in err and "differs from the temperature grid" in err


def test_gauge_without_data(raw_copy, tmp_path, capsys):
    path = sorted(raw_copy.glob("data/timeseries/CAMELS_GB_hydromet_timeseries_*.csv"))[0]
    frame = pd.read_csv(path)
    frame[["pet", "discharge_spec"]] = np.nan
    path.unlink()
    frame.to_csv(path, index=False)
    code, err = run_cli(cli_args(raw_copy, tmp_path / "o"), capsys)
    assert code == 2 and path.name in err and "no data" in err


def test_bad_input_never_damages_a_finished_dataset(raw, dataset, tmp_path, capsys):
    out = tmp_path / "kept"
    shutil.copytree(dataset, out)
    before = tree_bytes(out)
    code, err = run_cli([*cli_args(raw, out), "--stride", "5"], capsys)
    assert code == 2 and "other settings" in err
    code, err = run_cli([*cli_args(raw, out), "--precip-var", "nope"], capsys)
    assert code == 2
    assert tree_bytes(out) == before


# ----------------------------------------------------------------- inspect
def test_inspect_validates_and_names_corruption(dataset, tmp_path, capsys):
    assert main(["inspect", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "4 windows" in out and "check out" in out
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    shard = sorted((broken / SHARDS).glob("train-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["inspect", str(broken)]) == 1
    out = capsys.readouterr().out
    assert shard.name in out and "sha256" in out
    (broken / SHARDS / "val-000000.tar").unlink()
    assert main(["inspect", str(broken)]) == 1
    assert "val-000000.tar: missing" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "nothing")]) == 2


def test_progress_is_shown(raw, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hydromae", *cli_args(raw, tmp_path / "p", progress=True)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert done.returncode == 0, done.stderr
    assert "images" in done.stderr and "shards" in done.stderr and "100%" in done.stderr


def test_windows_expand_to_catchment_samples_that_collate(dataset):
    m = Manifest.read(dataset)
    table = m.catchment_table()
    windows = list(read_shard(dataset / SHARDS / m.shards[0].name))
    assert len(windows) == m.shards[0].samples
    samples = expand(windows[0], table)
    assert [s["catchment_index"] for s in samples] == [0, 1, 2]
    assert samples[0]["precip"] is samples[1]["precip"]  # the window is read once, shared
    assert np.shares_memory(samples[1]["evap"], windows[0]["evap"])
    start = dt.date.fromisoformat(windows[0]["meta"]["start"])
    assert samples[2]["sample_key"] == f"{start:%Y%m%d}-{table.ids[2]}"
    assert samples[0]["doy"][0] == start.timetuple().tm_yday and samples[0]["doy"].dtype == np.int16
    np.testing.assert_array_equal(samples[2]["riverflow"], windows[0]["riverflow"][:, 2])
    assert table.weight.shape == (3, 94) and table.static.shape == (3, 3)
    collate = MultiScaleMaskedCollate(
        seq_len=20, land_mask_path=dataset / "land_mask.pt", patch_indices=m.valid_patch_indices
    )
    batch = collate(samples)
    assert batch["precip"].shape == (3, 20, 94, 100) and batch["catchment_weight"].shape == (3, 94)
    assert torch.equal(batch["catchment_weight"], torch.from_numpy(table.weight))


def test_a_catchment_that_covers_no_stored_patch_is_named(tmp_path, capsys):
    """Gauge 7003's catchment lies in no patch with enough land to be valid: preprocess
    says so once, by gauge id, and keeps its series."""
    raw, out = tmp_path / "raw", tmp_path / "data"
    assert main(["synth", "--out", str(raw), "--days", "60", "--catchments", "10"]) == 0
    capsys.readouterr()
    args = ["--config", str(raw / "preprocess.toml"), "--out", str(out), "--window", "5"]
    assert main(["preprocess", *args, "--stride", "5"]) == 0
    said = capsys.readouterr().out
    assert said.count("cover no valid land patch") == 1
    assert "1 of 10 catchment(s)" in said and said.rstrip().find(": 7003") > 0
    table = Manifest.read(out).catchment_table()
    row = table.ids.index("7003")
    assert not table.weight[row].any() and table.weight.sum(1)[np.arange(10) != row].all()
