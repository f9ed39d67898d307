"""The eight CAMELS-GB attribute tables of the synthetic catchments, columns as released.

:func:`attribute_tables` returns ``{group: DataFrame}`` with ``gauge_id`` and then exactly
the release's columns in its order (``preprocessing.camels_gb.ATTRIBUTE_COLUMNS``), rows
sorted by ``gauge_id`` as text (as in the release). Values are synthetic:

- derived from the series where CAMELS-GB derives them (climatic, hydrologic, part of
  hydrometry), **over the training period only**, so that a model given them as static
  inputs learns nothing of the validation or test flow;
- from the geography and the landscape fields (``preprocessing.synth.landscape``) over the
  catchment's cells (topographic, land cover, soils, hydrogeology);
- drawn per gauge (station type, rating uncertainty; abstractions, reservoirs) from
  ``numpy.random.SeedSequence(seed, spawn_key=(6, table, gauge_id))`` (table 1 and 2): the
  same gauge gets the same values whatever the other catchments.

Units as CAMELS-GB: mm/day, m, km2, m/km, %, days, m3/s, ML, g/cm3, cm/h.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from preprocessing.camels_gb import ATTRIBUTE_COLUMNS
from preprocessing.synth import signatures as sig
from preprocessing.synth.camels import HydrometSeries
from preprocessing.synth.geography import CELL_M, Catchment, Geography
from preprocessing.synth.landscape import (
    HYDROGEOLOGY,
    LAND_COVER,
    LAND_COVER_NAMES,
    SOIL_PROPERTIES,
    Landscape,
)

STREAM = 6  # spawn key of the attribute streams, after the generator's six
STRUCTURES = ("Flat V", "Crump", "Compound Crump", "Flume")
STATION_TYPES = (*STRUCTURES, "Velocity-area", "Ultrasonic", "Electromagnetic")
ABSTRACTION_USES = (
    "agriculture",
    "amenities",
    "energy",
    "environmental",
    "industry",
    "watersupply",
)
RESERVOIR_USES = ("he", "nav", "drain", "wr", "fs", "env", "nousedata")
UNCERTAINTY_QUANTILES = {5: 1.6, 25: 1.1, 50: 1.0, 75: 1.1, 95: 1.4, 99: 1.8}


def gauge_rng(seed: int, gauge_id: int, table: int) -> np.random.Generator:
    """The gauge's own stream for one table (1 hydrometry, 2 human influence): independent
    of every other gauge, of the other table and of the weather."""
    key = (STREAM, table, gauge_id)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def landscape_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(STREAM, 0)))


def country(easting: float, northing: float) -> str:
    """England, Wales or Scotland for a point (BNG m), by two straight borders: Solway to
    Berwick, and Dee to Severn. Coarse, but enough to say where abstraction data exist."""
    border = 566_000.0 + (easting - 317_000.0) * (655_000.0 - 566_000.0) / (395_000.0 - 317_000.0)
    if northing > max(border, 530_000.0):
        return "Scotland"
    march = 330_000.0 + (380_000.0 - northing) * (355_000.0 - 330_000.0) / (380_000.0 - 190_000.0)
    if 165_000.0 < northing < 400_000.0 and easting < march:
        return "Wales"
    return "England"


def _r(value: float, decimals: int = 2) -> float:
    return round(float(value), decimals) if np.isfinite(value) else float("nan")


def _table(group: str, rows: list[dict]) -> pd.DataFrame:
    """The group's table: gauge_id and the release's columns, rows sorted by id as text."""
    columns = ("gauge_id", *ATTRIBUTE_COLUMNS[group])
    for row in rows:
        if set(row) != set(columns):
            raise AssertionError(f"{group}: columns {sorted(set(row) ^ set(columns))} differ")
    table = pd.DataFrame(rows, columns=list(columns))
    order = sorted(range(len(table)), key=lambda i: str(table["gauge_id"].iloc[i]))
    return table.iloc[order].reset_index(drop=True)


# ------------------------------------------------------------------------- per table


def topographic(geo: Geography, catchments: list[Catchment]) -> list[dict]:
    """Gauge position and elevation statistics (m) of the catchment's cells; ``dpsbar``
    (m/km) is the mean gradient magnitude of the elevation, a stand-in for the mean drainage
    path slope."""
    elev = geo.elevation.ravel()
    gy, gx = np.gradient(geo.elevation, CELL_M / 1000.0)
    slope = np.hypot(gy, gx).ravel()
    rows = []
    for c in catchments:
        e = elev[c.cells]
        e_min, e10, e50, e90, e_max = np.quantile(e, (0.0, 0.1, 0.5, 0.9, 1.0))
        rows.append(
            {
                "gauge_id": c.gauge_id,
                "gauge_name": f"Synthetic catchment {c.gauge_id}",
                "gauge_lat": round(c.lat, 4),
                "gauge_lon": round(c.lon, 4),
                "gauge_easting": round(c.easting),
                "gauge_northing": round(c.northing),
                "gauge_elev": round(float(elev[c.gauge_cell]), 1),
                "area": round(c.area_km2, 2),
                "dpsbar": round(float(slope[c.cells].mean()), 1),
                "elev_mean": round(float(e.mean()), 1),
                "elev_min": round(float(e_min), 1),
                "elev_10": round(float(e10), 1),
                "elev_50": round(float(e50), 1),
                "elev_90": round(float(e90), 1),
                "elev_max": round(float(e_max), 1),
            }
        )
    return rows


def climatic(gauge_id: int, s: HydrometSeries, dates: pd.DatetimeIndex) -> dict:
    """Climate indices of the training days: high-precipitation days have P >= 5 p_mean,
    dry days P < 1 mm; frequencies in days a year, durations as mean run lengths (days),
    timings as the season with most such days; ``frac_snow`` the share of precipitation on
    days below 0 degC; ``p_seasonality`` after Woods (2009)."""
    p, t = s.precipitation, s.temperature
    high, low = p >= 5.0 * p.mean(), p < 1.0
    return {
        "gauge_id": gauge_id,
        "p_mean": _r(p.mean()),
        "pet_mean": _r(s.pet.mean()),
        "aridity": _r(s.pet.mean() / p.mean()) if p.mean() > 0 else float("nan"),
        "p_seasonality": _r(sig.p_seasonality(p, t, dates)),
        "frac_snow": _r(p[t < 0.0].sum() / p.sum()) if p.sum() > 0 else float("nan"),
        "high_prec_freq": _r(sig.per_year(high, p.size)),
        "high_prec_dur": _r(sig.mean_run(high)),
        "high_prec_timing": sig.timing(high, dates),
        "low_prec_freq": _r(sig.per_year(low, p.size)),
        "low_prec_dur": _r(sig.mean_run(low)),
        "low_prec_timing": sig.timing(low, dates),
    }


def hydrologic(gauge_id: int, s: HydrometSeries, dates: pd.DatetimeIndex) -> dict:
    """Flow signatures of the training days with flow (Addor et al. 2017): ``Q5``/``Q95``
    the 5% and 95% flow quantiles (a low and a high flow), high-flow days above 9 times the
    median, low-flow days below 0.2 times the mean, ``zero_q_freq`` the share of days
    without flow; ``baseflow_index`` the slow reservoir's share of the flow (the model's
    own), ``baseflow_index_ceh`` by the IH smoothed-minima method (gaps filled linearly)."""
    q_all = s.discharge_spec
    ok = np.isfinite(q_all)
    q, p = q_all[ok], s.precipitation[ok]
    if not q.size:
        return {"gauge_id": gauge_id} | dict.fromkeys(ATTRIBUTE_COLUMNS["hydrologic"], np.nan)
    high = np.where(ok, q_all > 9.0 * np.median(q), False)
    low = np.where(ok, q_all < 0.2 * q.mean(), False)
    return {
        "gauge_id": gauge_id,
        "q_mean": _r(q.mean()),
        "runoff_ratio": _r(q.mean() / p.mean()) if p.mean() > 0 else float("nan"),
        "stream_elas": _r(sig.stream_elasticity(q_all, s.precipitation, dates)),
        "slope_fdc": _r(sig.slope_fdc(q)),
        "baseflow_index": _r(s.slow[ok].sum() / q.sum()) if q.sum() > 0 else float("nan"),
        "baseflow_index_ceh": _r(sig.baseflow_index_ceh(sig.fill_gaps(q_all))),
        "hfd_mean": _r(sig.half_flow_date(q_all, dates)),
        "Q5": _r(np.quantile(q, 0.05), 3),
        "Q95": _r(np.quantile(q, 0.95), 3),
        "high_q_freq": _r(sig.per_year(high, q.size)),
        "high_q_dur": _r(sig.mean_run(high)),
        "low_q_freq": _r(sig.per_year(low, q.size)),
        "low_q_dur": _r(sig.mean_run(low)),
        "zero_q_freq": _r((q <= 0.0).mean(), 4),
    }


def hydrometry(
    c: Catchment, record: np.ndarray, train_flow: np.ndarray, dates: pd.DatetimeIndex, seed: int
) -> dict:
    """Station metadata. ``flow_period_*`` and ``flow_perc_complete`` (%) describe which days
    of the whole record (``record`` ``[time]``, NaN = missing) have flow: availability, not
    flow values. ``bankfull_flow`` (m3/s) scales the training period's 99.5% flow;
    ``structurefull_flow`` (m3/s) exists for gauging structures only; the rating
    uncertainties (%) depend on the station type, larger towards the extreme flows."""
    rng = gauge_rng(seed, c.gauge_id, 1)
    weights = np.array([3, 3, 1, 1, 3, 1, 1], dtype=float)
    if c.area_km2 > 500:
        weights[4:] *= 4.0  # large rivers: velocity-area and ultrasonic stations
    kind = STATION_TYPES[int(rng.choice(len(STATION_TYPES), p=weights / weights.sum()))]
    have = np.flatnonzero(np.isfinite(record))
    observed = train_flow[np.isfinite(train_flow)]
    bankfull = (
        np.quantile(observed, 0.995) * c.area_km2 / 86.4 * rng.uniform(0.8, 1.2)
        if observed.size
        else float("nan")
    )
    structure_scale = rng.uniform(0.6, 1.5)
    row = {
        "gauge_id": c.gauge_id,
        "station_type": kind,
        "flow_period_start": dates[have[0]].strftime("%Y-%m-%d") if have.size else None,
        "flow_period_end": dates[have[-1]].strftime("%Y-%m-%d") if have.size else None,
        "flow_perc_complete": _r(100.0 * have.size / (have[-1] - have[0] + 1))
        if have.size
        else float("nan"),
        "bankfull_flow": _r(bankfull),
        "structurefull_flow": _r(bankfull * structure_scale) if kind in STRUCTURES else np.nan,
    }
    base = {"Velocity-area": 10.0, "Ultrasonic": 8.0, "Electromagnetic": 8.0}.get(kind, 5.0)
    base *= rng.uniform(0.7, 1.3)
    for q, scale in UNCERTAINTY_QUANTILES.items():
        spread = rng.uniform(0.0, 1.0, 2)
        row[f"q{q}_uncert_upper"] = _r(base * scale * (1.0 + 0.2 * spread[0]))
        row[f"q{q}_uncert_lower"] = _r(-base * scale * (0.8 + 0.2 * spread[1]))
    row["quncert_meta"] = f"synthetic: bounds from a rating error model for a {kind} station"
    return row


def landcover(gauge_id: int, cells: np.ndarray, land: Landscape) -> dict:
    """Mean class shares over the cells (%), and the largest class's name."""
    shares = {k: float(land.cover[k].ravel()[cells].mean()) * 100.0 for k in LAND_COVER}
    top = max(LAND_COVER, key=lambda k: shares[k])
    return (
        {"gauge_id": gauge_id}
        | {f"{k}_perc": _r(v) for k, v in shares.items()}
        | {"dom_land_cover": LAND_COVER_NAMES[top]}
    )


def soil(gauge_id: int, cells: np.ndarray, land: Landscape) -> dict:
    """Texture means (%), and each hydraulic property's mean and 5/50/95th percentiles over
    the cells; ``*_missing`` (% of the catchment without data) is 0: the fields cover GB."""
    row: dict = {"gauge_id": gauge_id}
    for name, field in land.texture.items():
        row[f"{name}_perc"] = _r(field.ravel()[cells].mean())
        row[f"{name}_perc_missing"] = 0.0
    for name in SOIL_PROPERTIES:
        values = land.soil[name].ravel()[cells]
        row[name] = _r(values.mean(), 3)
        row[f"{name}_missing"] = 0.0
        for q in (5, 50, 95):
            row[f"{name}_{q}"] = _r(np.percentile(values, q), 3)
    return row


def hydrogeology(gauge_id: int, cells: np.ndarray, land: Landscape) -> dict:
    """Mean productivity class shares over the cells (%)."""
    return {"gauge_id": gauge_id} | {
        f"{k}_perc": _r(land.geology[k].ravel()[cells].mean() * 100.0) for k in HYDROGEOLOGY
    }


def humaninfluence(c: Catchment, cover: dict, geology: dict, seed: int) -> dict:
    """Abstractions and discharges (mm/day, England only: NaN elsewhere, as in CAMELS-GB),
    more where there are towns and crops, groundwater where the chalk is; reservoirs, more in
    larger and higher catchments, with capacity (ML) shared among uses (%) and the years of
    the first and last built. ``benchmark_catch`` is ``Y`` without reservoirs or large
    abstractions."""
    rng = gauge_rng(seed, c.gauge_id, 2)
    england = country(c.easting, c.northing) == "England"
    urban, crop = cover["urban_perc"], cover["crop_perc"]
    surface = 0.03 * (1.0 + urban / 5.0 + crop / 20.0) * rng.lognormal(0.0, 0.6)
    ground = 0.02 * (1.0 + geology["frac_high_perc"] / 10.0) * rng.lognormal(0.0, 0.6)
    discharges = 0.02 * (1.0 + urban / 3.0) * rng.lognormal(0.0, 0.5)
    uses = rng.dirichlet([3.0 + crop / 10.0, 1.0, 1.0, 0.5, 1.0, 4.0 + urban / 5.0]) * 100.0
    upland = 1.0 - (cover["crop_perc"] + cover["urban_perc"]) / 100.0
    reservoirs = int(rng.poisson(c.area_km2 / 300.0 * (0.3 + 1.5 * upland)))
    capacity = float(rng.lognormal(np.log(2000.0), 1.0, reservoirs).sum())
    shares = rng.dirichlet(np.ones(len(RESERVOIR_USES))) * 100.0 if reservoirs else np.zeros(7)
    years = np.sort(rng.integers(1850, 2006, reservoirs)) if reservoirs else None
    row = {
        "gauge_id": c.gauge_id,
        "benchmark_catch": "Y"
        if reservoirs == 0 and (not england or surface + ground < 0.05)
        else "N",
        "surfacewater_abs": _r(surface, 3) if england else np.nan,
        "groundwater_abs": _r(ground, 3) if england else np.nan,
        "discharges": _r(discharges, 3) if england else np.nan,
    }
    for use, share in zip(ABSTRACTION_USES, uses, strict=True):
        row[f"abs_{use}_perc"] = _r(share) if england else np.nan
    row["num_reservoir"] = reservoirs
    row["reservoir_cap"] = _r(capacity)
    for use, share in zip(RESERVOIR_USES, shares, strict=True):
        row[f"reservoir_{use}"] = _r(share)
    row["reservoir_year_first"] = int(years[0]) if years is not None else pd.NA
    row["reservoir_year_last"] = int(years[-1]) if years is not None else pd.NA
    return row


def attribute_tables(
    geo: Geography,
    catchments: list[Catchment],
    series: list[HydrometSeries],
    dates: pd.DatetimeIndex,
    train: tuple[dt.date, dt.date],
    land: Landscape,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """``{group: table}`` for the eight CAMELS-GB groups; ``series[i]`` ``[time]`` on
    ``dates`` for ``catchments[i]``; ``train``: the training period (inclusive)."""
    keep = (dates.date >= train[0]) & (dates.date <= train[1])
    train_dates = dates[keep]
    rows: dict[str, list[dict]] = {group: [] for group in ATTRIBUTE_COLUMNS}
    rows["topographic"] = topographic(geo, catchments)
    for c, s in zip(catchments, series, strict=True):
        part = HydrometSeries(**{k: v[keep] for k, v in vars(s).items()})
        rows["climatic"].append(climatic(c.gauge_id, part, train_dates))
        rows["hydrologic"].append(hydrologic(c.gauge_id, part, train_dates))
        rows["hydrometry"].append(hydrometry(c, s.discharge_spec, part.discharge_spec, dates, seed))
        cover = landcover(c.gauge_id, c.cells, land)
        rows["landcover"].append(cover)
        rows["soil"].append(soil(c.gauge_id, c.cells, land))
        geology = hydrogeology(c.gauge_id, c.cells, land)
        rows["hydrogeology"].append(geology)
        rows["humaninfluence"].append(humaninfluence(c, cover, geology, seed))
    tables = {group: _table(group, group_rows) for group, group_rows in rows.items()}
    for column in ("reservoir_year_first", "reservoir_year_last", "num_reservoir"):
        tables["humaninfluence"][column] = tables["humaninfluence"][column].astype("Int64")
    return tables
