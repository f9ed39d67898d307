"""The command line: landmask from HadUK-Grid-style NetCDF, viz-mask, demo, typed config."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import torch
from conftest import write_haduk_file

from hydromae.cli import main
from hydromae.viz_mask import STRATEGIES
from pipeline import config
from pipeline.landmask import reference_mask_path


def gb_days(days: int, rng: np.random.Generator) -> np.ndarray:
    """``[days, 290, 180]`` temperatures over the reference land, NaN over sea."""
    land = np.load(reference_mask_path())
    data = rng.normal(9.0, 4.0, size=(days, *land.shape))
    data[:, ~land] = np.nan
    return data


def test_landmask_from_haduk_files_recovers_the_valid_cells(tmp_path, capsys):
    rng = np.random.default_rng(0)
    jan, feb = gb_days(3, rng), gb_days(2, rng)
    feb[1, 100, 50] = np.nan  # a land cell missing on one day is not land
    files = [
        write_haduk_file(tmp_path / "tas_hadukgrid_uk_5km_day_20000101-20000103.nc", "tas", jan),
        write_haduk_file(tmp_path / "tas_hadukgrid_uk_5km_day_20000201-20000202.nc", "tas", feb, 3),
    ]
    raw = netCDF4.Dataset(files[0])
    raw.set_auto_mask(False)
    assert raw["tas"][0, 0, 0] == 1e20  # written as HadUK-Grid does: fill value over sea
    raw.close()

    out = tmp_path / "mask"
    assert main(["landmask", "--from", str(tmp_path / "tas_*.nc"), "--out", str(out)]) == 0
    expected = np.load(reference_mask_path()).copy()
    expected[100, 50] = False
    np.testing.assert_array_equal(np.load(out / "land_mask.npy"), expected)
    pt = torch.load(out / "land_mask.pt", weights_only=True)
    assert pt.dtype == torch.bool and torch.equal(pt, torch.from_numpy(expected))
    printed = capsys.readouterr().out
    assert "fully ocean" in printed and "valid (land >= 0.5)" in printed


def test_landmask_table_of_the_reference_mask(capsys):
    assert main(["landmask", "--mask", str(reference_mask_path())]) == 0
    table = capsys.readouterr().out
    for label, count in [
        ("fully ocean", 367),
        ("partially land", 103),
        ("fully land", 52),
        ("valid (land >= 0.5)", 94),
    ]:
        assert any(
            line.strip().startswith(label) and f" {count} " in line for line in table.splitlines()
        )


def test_landmask_errors_name_the_file_and_variable(tmp_path, capsys):
    path = write_haduk_file(tmp_path / "rain.nc", "rainfall", gb_days(1, np.random.default_rng(1)))
    assert main(["landmask", "--from", str(path), "--var", "tas", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "rain.nc" in err and "'tas' not found" in err and "rainfall" in err
    assert not (tmp_path / "land_mask.npy").exists()  # nothing written on bad input

    other = write_haduk_file(tmp_path / "small.nc", "rainfall", np.zeros((1, 20, 10)))
    assert main(["landmask", "--from", str(path), str(other), "--var", "rainfall",
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    assert "small.nc" in capsys.readouterr().err

    assert main(["landmask", "--mask", str(reference_mask_path()), "--threshold", "2"]) == 2
    assert "--threshold: must be at most 1.0" in capsys.readouterr().err
    assert main(["landmask", "--from", str(tmp_path / "nothing*.nc"), "--out", "x"]) == 2
    assert "no file matches" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_viz_mask_draws_every_strategy(tmp_path, strategy):
    png = tmp_path / "mask_visualization_with_legend.png"
    args = ["viz-mask", "--mask", str(reference_mask_path()), "--out", str(png)]
    assert main([*args, "--strategy", strategy]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_console_script_help_lists_commands():
    exe = Path(sys.executable).with_name("hydromae")
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for command in ("landmask", "viz-mask", "demo"):
        assert command in done.stdout
    done = subprocess.run([str(exe), "landmask", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "default: 0.5" in done.stdout


def test_demo_runs_end_to_end(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--batch-size", "2", "--days", "200", "--catchments", "3"]
    args += ["--workers", "0", "--window", "30", "--steps", "4"]
    assert main(["demo", *args]) == 0
    out = capsys.readouterr().out
    assert "70..70 of 94 valid" in out and "22..22 of 30" in out
    assert "no NaN in the batch tensors: True" in out
    assert "shards and the store check out" in out
    assert "masked RMSE in physical units, test split" in out
    assert "(missing!)" not in out
    assert (tmp_path / "dataset" / "manifest.json").exists()
    for picture in ("mask_visualization_with_legend.png", "synthetic_quicklook.png",
                    "run/training_curves.png", "evaluation/masked_day_maps.png",
                    "evaluation/hydrograph.png"):  # fmt: skip
        assert (tmp_path / picture).stat().st_size > 10_000, picture


@dataclass
class _Example:
    name: str
    days: int = 90
    ratio: float = 0.75
    files: list[str] = field(default_factory=list)
    out: Path | None = None
    fast: bool = False


def test_config_layers_defaults_toml_and_flags(tmp_path):
    import argparse

    toml = tmp_path / "c.toml"
    toml.write_text('name = "a"\ndays = 30\nratio = 1\nfiles = "x.nc"\nout = "dir"\n')
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, _Example)
    cfg = config.from_args(_Example, parser.parse_args(["--config", str(toml), "--days", "60"]))
    assert cfg == _Example("a", 60, 1.0, ["x.nc"], Path("dir"), False)
    with pytest.raises(ValueError, match="unknown key 'dayz'"):
        toml.write_text("dayz = 3\n")
        config.load(_Example, toml)
    with pytest.raises(ValueError, match=r"key 'days'.*expected int"):
        toml.write_text('name = "a"\ndays = "many"\n')
        config.load(_Example, toml)
    with pytest.raises(ValueError, match=r"missing required setting.*--name"):
        config.load(_Example)
