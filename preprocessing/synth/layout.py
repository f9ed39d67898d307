"""What goes where in RAW_DIR: file globs, the chronological splits, ``preprocess.toml``, stamp.

The HadUK-Grid-format NetCDF files lie at the top of RAW_DIR; CAMELS-GB lies in ``data/``
exactly as the EIDC release lays it out (``preprocessing.camels_gb``): the eight attribute
tables, ``timeseries/``, and the boundaries as the release's shapefile folder, with a
GeoJSON copy beside it. ``preprocess.toml`` paths are relative to the TOML file's own
directory. The stamp ``hydromae_synth.json`` records the settings that made the
directory's files, so a rerun with the same settings rewrites them (identically) and other
settings are refused.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from pathlib import Path

from preprocessing import camels_gb
from preprocessing.synth.netcdf import RAINFALL, SOIL, TAS, TASMAX, TASMIN

STAMP = "hydromae_synth.json"
TOML = "preprocess.toml"
LAYOUT = "CAMELS-GB EIDC v1"  # in the stamp: directories of the older flat layout are refused
DATA = camels_gb.DATA
SERIES_DIR = f"{DATA}/{camels_gb.TIMESERIES}"
SERIES_GLOB = f"{SERIES_DIR}/{camels_gb.SERIES_GLOB}"
ATTRIBUTES_GLOB = f"{DATA}/{camels_gb.ATTRIBUTES_GLOB}"
BOUNDARIES_SHP = f"{DATA}/{camels_gb.BOUNDARIES_SHP}"
BOUNDARIES_GEOJSON = f"{DATA}/{camels_gb.BOUNDARIES}.geojson"
WINDOW = 90


def grid_glob(stem: str) -> str:
    return f"{stem}_*.nc"


def attribute_path(group: str) -> str:
    """``data/CAMELS_GB_{group}_attributes.csv``."""
    return f"{DATA}/{camels_gb.attribute_file(group)}"


GENERATED_GLOBS = (  # top-level names that hydromae synth writes
    *(grid_glob(s.stem) for s in (RAINFALL, TAS, TASMAX, TASMIN, SOIL)),
    DATA,
    camels_gb.SERIES_GLOB,  # the flat layout of earlier versions
    camels_gb.ATTRIBUTES_GLOB,
    f"{camels_gb.BOUNDARIES}.geojson",
    TOML,
    STAMP,
)


def split_periods(start: dt.date, days: int) -> dict[str, tuple[dt.date, dt.date]]:
    """Chronological train/val/test day ranges (inclusive) over ``days`` days from ``start``.

    val and test each take 15% of the days (rounded), raised to one 90-day window when the
    run leaves at least one window for train (``days >= 270``), and at least one day;
    train gets the rest (about 70%). Needs ``days >= 3``.
    """
    if days < 3:
        raise ValueError(f"days must be at least 3 for train/val/test splits, got {days}")
    held = max(1, round(0.15 * days))
    if days >= 3 * WINDOW:
        held = max(held, WINDOW)
    train = days - 2 * held
    bounds = {"train": (0, train), "val": (train, train + held), "test": (train + held, days)}
    return {
        name: (start + dt.timedelta(days=a), start + dt.timedelta(days=b - 1))
        for name, (a, b) in bounds.items()
    }


def short_splits(periods: dict[str, tuple[dt.date, dt.date]], window: int = WINDOW) -> str | None:
    """A warning naming the splits shorter than one ``window`` (which ``hydromae preprocess``
    refuses), or None when every split holds a window."""
    short = [
        f"{name} {a}:{b} ({(b - a).days + 1} days)"
        for name, (a, b) in periods.items()
        if (b - a).days + 1 < window
    ]
    if not short:
        return None
    return (
        f"split(s) {', '.join(short)} shorter than one {window}-day window: hydromae "
        f"preprocess will refuse them; generate --days {3 * window} or more, or preprocess "
        "with a smaller --window and your own --train/--val/--test"
    )


def preprocess_toml(periods: dict[str, tuple[dt.date, dt.date]]) -> str:
    """The text of ``preprocess.toml`` pointing ``hydromae preprocess`` at RAW_DIR's files
    (with a warning comment when a split is shorter than one window)."""

    def span(name: str) -> str:
        a, b = periods[name]
        return f'"{a.isoformat()}:{b.isoformat()}"'

    note = short_splits(periods)
    lines = [
        "# Written by `hydromae synth`: `hydromae preprocess --config` settings for these files.",
        "# Paths are relative to this file's directory.",
        *([f"# NOTE: {note}"] if note else []),
        f'precip = "{grid_glob(RAINFALL.stem)}"',
        'precip_var = "rainfall"',
        f'temp = "{grid_glob(TAS.stem)}"',
        'temp_var = "tas"',
        f'soil = "{grid_glob(SOIL.stem)}"',
        'soil_var = "sm"',
        f'catchments = "{SERIES_GLOB}"',
        f'attributes = "{ATTRIBUTES_GLOB}"',
        'evap_column = "pet"',
        'riverflow_column = "discharge_spec"',
        f'boundaries = "{BOUNDARIES_SHP}"',
        f"train = {span('train')}",
        f"val = {span('val')}",
        f"test = {span('test')}",
        f"window = {WINDOW}",
        f"stride = {WINDOW}",
        "land_threshold = 0.5",
        'out = "../dataset"',
    ]
    return "\n".join(lines) + "\n"


def stamp_text(settings: dict[str, object]) -> str:
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


def check_out_dir(out: Path, settings: dict[str, object]) -> None:
    """Refuse an output directory that holds generated files from other settings.

    Same settings (per the stamp): allowed, files are rewritten identically. Files that
    look generated but no stamp, or a stamp with other settings: ValueError. Unrelated
    files are left alone.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if not out.exists():
        return
    stamp = out / STAMP
    if stamp.exists():
        try:
            previous = json.loads(stamp.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != json.loads(stamp_text(settings)):
            raise ValueError(
                f"--out {out} already holds synthetic data made with other settings "
                f"({previous}); use an empty directory or delete it first"
            )
        return
    names = [p.name for p in out.iterdir()]
    clash = sorted(n for n in names if any(fnmatch.fnmatch(n, g) for g in GENERATED_GLOBS))
    if clash:
        raise ValueError(
            f"--out {out} already holds files like the generated ones ({clash[0]}, ...) but "
            f"no {STAMP}; use an empty directory or delete them first"
        )
