"""Write synthetic Great Britain hydrology in the real raw-input formats (HadUK-Grid, CAMELS-GB).

``hydromae synth --out RAW_DIR [--start 2000-01-01] [--days 730] [--catchments 50]
[--seed 0]`` writes monthly HadUK-Grid-format NetCDF files of ``rainfall``, ``tas``,
``tasmax``, ``tasmin`` and soil moisture ``sm``; and, in ``RAW_DIR/data/`` laid out as the
CAMELS-GB EIDC release, one time-series CSV per catchment at real gauges with real areas,
the eight attribute tables, and the catchment boundaries as the release's shapefile (and
as GeoJSON); and ``preprocess.toml`` for ``hydromae preprocess``. Everything is a function
of the settings: the same seed gives byte-identical files. The model is in
docs/synthetic.md.

From Python: ``preprocessing.synth.generate(out, start=..., days=..., catchments=...,
seed=...)``.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from tqdm import tqdm

from preprocessing.synth import camels, layout
from preprocessing.synth.attributes import attribute_tables, landscape_rng
from preprocessing.synth.boundaries import write_geojson, write_shapefile
from preprocessing.synth.geography import (
    Catchment,
    Geography,
    load_gauges,
    make_geography,
    place_catchments,
    select_gauges,
)
from preprocessing.synth.hydrology import flow_gaps, route
from preprocessing.synth.landscape import make_landscape
from preprocessing.synth.model import DailyModel, Day
from preprocessing.synth.netcdf import VARIABLES, file_name, write_month

__all__ = ["GENERATOR_VERSION", "Summary", "SynthConfig", "generate"]

GENERATOR_VERSION = "1"
SPIN_UP_DAYS = 120
MAX_DAYS = 200 * 366


@dataclass
class SynthConfig:
    out: Path = field(metadata={"metavar": "DIR", "help": "RAW_DIR to write the files into"})
    start: str = field(default="2000-01-01", metadata={"help": "first day, YYYY-MM-DD"})
    days: int = field(default=730, metadata={"help": "number of days (>= 3)"})
    catchments: int = field(default=50, metadata={"help": "catchments at real gauges (1-671)"})
    seed: int = field(default=0, metadata={"help": "random seed (>= 0)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


@dataclass(frozen=True)
class Summary:
    """What :func:`generate` wrote: the directory, file count, period and catchments, and
    ``notes`` for the user (a split shorter than one window, which preprocessing refuses)."""

    out: Path
    files: int
    first: dt.date
    last: dt.date
    gauge_ids: tuple[int, ...]
    bytes: int
    notes: tuple[str, ...] = ()


def parse_start(start: str | dt.date) -> dt.date:
    if isinstance(start, dt.datetime):
        return start.date()
    if isinstance(start, dt.date):
        return start
    try:
        return dt.datetime.strptime(str(start), "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(f"start must be a date as YYYY-MM-DD, got {start!r}") from None


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return int(value)


def months(first: dt.date, days: int) -> list[tuple[dt.date, int]]:
    """Calendar-month pieces of the period: ``(first day, number of days)`` in order."""
    pieces, day, left = [], first, days
    while left > 0:
        nxt = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        n = min(left, (nxt - day).days)
        pieces.append((day, n))
        day, left = day + dt.timedelta(days=n), left - n
    return pieces


def catchment_weights(geo: Geography, catchments: list[Catchment]) -> sparse.csr_matrix:
    """``[C, land cells]`` averaging matrix: row c is 1/n over catchment c's cells."""
    flat_to_land = np.full(geo.land.size, -1, dtype=np.int64)
    flat_to_land[np.flatnonzero(geo.land.ravel())] = np.arange(int(geo.land.sum()))
    rows, cols, vals = [], [], []
    for i, c in enumerate(catchments):
        idx = flat_to_land[c.cells]
        rows.append(np.full(idx.size, i))
        cols.append(idx)
        vals.append(np.full(idx.size, 1.0 / idx.size))
    shape = (len(catchments), int(geo.land.sum()))
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape
    )


# catchment-mean daily quantities gathered while the grids are written
_MEANS = ("rainfall", "tas", "tasmin", "pet", "fast", "slow", "radiation")


def _catchment_means(weights: sparse.csr_matrix, day: Day) -> np.ndarray:
    """``[C, len(_MEANS)]`` catchment averages of one day's land vectors."""
    return weights @ np.column_stack([getattr(day, name) for name in _MEANS])


def _series(
    c: Catchment, means: np.ndarray, wind: np.ndarray, elev_mean: float, rng: np.random.Generator
) -> camels.HydrometSeries:
    """Build one catchment's CAMELS-GB series from ``means`` ``[time, len(_MEANS)]``."""
    m = dict(zip(_MEANS, means.T, strict=True))
    rain, tas = m["rainfall"], m["tas"]
    cloud = 1.0 - np.exp(-rain / 3.0)
    delay = 0.5 + np.sqrt(c.area_km2) / 120.0
    k_fast = 0.7 + 0.3 * np.log10(max(c.area_km2, 1.0))
    k_slow = float(rng.uniform(20.0, 70.0))
    flow, slow = route(m["fast"], m["slow"], delay, k_fast, k_slow)
    dew = m["tasmin"] + 1.5 * cloud
    vapour = 0.6108 * np.exp(17.27 * dew / (dew + 237.3))  # kPa
    speed = np.hypot(wind[:, 0], wind[:, 1]) / 86.4  # km/day -> m/s
    return camels.HydrometSeries(
        precipitation=rain,
        pet=m["pet"],
        peti=m["pet"] * (1.0 + 0.3 * cloud),
        temperature=tas,
        discharge_spec=flow,
        humidity=622.0 * vapour / (101.3 - 0.378 * vapour),
        shortwave_rad=m["radiation"] * 1e6 / 86400.0 * (0.72 - 0.45 * cloud),
        longwave_rad=5.67e-8 * (tas + 273.15) ** 4 * (0.72 + 0.22 * cloud),
        windspeed=(0.6 * speed + 1.5) * (1.0 + 0.15 * cloud) * (1.0 + elev_mean / 1000.0),
        slow=slow,
    )


def _write_grids(
    out: Path,
    grids: dict[str, np.ndarray],
    month_first: dt.date,
    n: int,
    geo: Geography,
    source: str,
    extra: dict[str, str],
) -> list[Path]:
    """Write one month of every gridded variable (``[n, y, x]`` each); return the paths."""
    month_last = month_first + dt.timedelta(days=n - 1)
    paths = []
    for spec in VARIABLES:
        path = out / file_name(spec, month_first, month_last)
        write_month(path, spec, grids[spec.name], month_first, geo, source, extra)
        paths.append(path)
    return paths


def generate(
    out: str | Path,
    start: str | dt.date = "2000-01-01",
    days: int = 730,
    catchments: int = 50,
    seed: int = 0,
    progress: bool = True,
) -> Summary:
    """Write the synthetic raw inputs into ``out`` and return a :class:`Summary`.

    Raises ValueError for bad settings (days < 3, catchments outside 1-671, a negative
    seed, an unparseable start) or an ``out`` that holds files generated with other settings.
    """
    first = parse_start(start)
    days = _check_int("days", days, 3, MAX_DAYS)
    n_catch = _check_int("catchments", catchments, 1, 671)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    try:
        last = first + dt.timedelta(days=days - 1)
        spin_start = first - dt.timedelta(days=SPIN_UP_DAYS)
    except OverflowError:
        raise ValueError(f"start {first} with days {days} runs past the calendar") from None
    out = Path(out)
    settings = {
        "generator": "hydromae synth",
        "generator_version": GENERATOR_VERSION,
        "start": first.isoformat(),
        "days": days,
        "catchments": n_catch,
        "seed": seed,
        "layout": layout.LAYOUT,
    }
    layout.check_out_dir(out, settings)
    periods = layout.split_periods(first, days)
    out.mkdir(parents=True, exist_ok=True)
    # the stamp goes first, so an interrupted run can be rerun with the same settings
    (out / layout.STAMP).write_text(layout.stamp_text(settings), encoding="utf-8")
    source = f"hydromae synth v{GENERATOR_VERSION} (synthetic, seed {seed}); not observations"
    extra = {"generator_version": f"hydromae-synth {GENERATOR_VERSION}", "seed": str(seed)}

    bar = tqdm(total=days, desc="synth: setup", unit="day", disable=not progress)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    geo_rng, pick_rng, rain_rng, temp_rng, route_rng, gap_rng = streams
    geo = make_geography(geo_rng)
    cats = place_catchments(geo, select_gauges(load_gauges(), n_catch, pick_rng))
    weights = catchment_weights(geo, cats)
    model = DailyModel(geo, rain_rng, temp_rng)
    bar.set_description(f"synth: {SPIN_UP_DAYS} spin-up days")
    for i in range(SPIN_UP_DAYS):
        model.step(spin_start + dt.timedelta(days=i))
    bar.set_description("synth")

    land = geo.land
    means = np.empty((days, len(cats), len(_MEANS)))
    wind = np.empty((days, 2))
    written: list[Path] = []
    t = 0
    # One writer thread compresses month m while month m + 1 is simulated (netCDF4 releases
    # the GIL); at most two months of grids are held. Only that thread touches netCDF.
    pending: Future | None = None
    with ThreadPoolExecutor(max_workers=1) as writer, bar:
        for month_first, n in months(first, days):
            grids = {spec.name: np.full((n, *land.shape), np.nan) for spec in VARIABLES}
            for d in range(n):
                day = model.step(month_first + dt.timedelta(days=d))
                for spec in VARIABLES:
                    grids[spec.name][d][land] = getattr(day, spec.name)
                means[t] = _catchment_means(weights, day)
                wind[t] = day.wind
                t += 1
                bar.update()
            if pending is not None:
                written += pending.result()
            pending = writer.submit(_write_grids, out, grids, month_first, n, geo, source, extra)
        if pending is not None:
            written += pending.result()

    dates = pd.date_range(first, periods=days, freq="D")
    elev = geo.elevation.ravel()
    (out / layout.SERIES_DIR).mkdir(parents=True, exist_ok=True)
    series = []
    for i, c in enumerate(cats):
        s = _series(c, means[:, i], wind, float(elev[c.cells].mean()), route_rng)
        s.discharge_spec = np.where(flow_gaps(days, gap_rng), np.nan, s.discharge_spec)
        path = out / layout.SERIES_DIR / camels.series_name(c.gauge_id, first, last)
        camels.write_series(path, dates, s, c.area_km2)
        written.append(path)
        series.append(s)

    landscape = make_landscape(geo, landscape_rng(seed))
    tables = attribute_tables(geo, cats, series, dates, periods["train"], landscape, seed)
    for group, table in tables.items():
        path = out / layout.attribute_path(group)
        camels.write_table(path, table)
        written.append(path)
    shp = out / layout.BOUNDARIES_SHP
    shp.parent.mkdir(exist_ok=True)
    written += write_shapefile(shp, cats, geo.shape[1])
    write_geojson(out / layout.BOUNDARIES_GEOJSON, cats, geo.shape[1])
    (out / layout.TOML).write_text(layout.preprocess_toml(periods), encoding="utf-8")
    written += [out / layout.BOUNDARIES_GEOJSON, out / layout.TOML, out / layout.STAMP]
    note = layout.short_splits(periods)
    return Summary(
        out=out,
        files=len(written),
        first=first,
        last=last,
        gauge_ids=tuple(c.gauge_id for c in cats),
        bytes=sum(p.stat().st_size for p in written),
        notes=(note,) if note else (),
    )
