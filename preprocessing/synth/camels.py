"""CAMELS-GB-format catchment files: daily hydromet time series and static attribute tables.

Series arrive as ``[time]`` arrays per catchment; attributes are one row per gauge keyed
by ``gauge_id``. Columns and units follow CAMELS-GB (Coxon et al. 2020).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from preprocessing.synth.geography import CELL_M, Catchment, Geography

HEADER = (
    "date",
    "precipitation",
    "pet",
    "temperature",
    "discharge_spec",
    "discharge_vol",
    "peti",
    "humidity",
    "shortwave_rad",
    "longwave_rad",
    "windspeed",
)
DECIMALS = {  # as published: 2 decimals, 3 for discharge
    "precipitation": 2,
    "pet": 2,
    "temperature": 2,
    "discharge_spec": 3,
    "discharge_vol": 3,
    "peti": 2,
    "humidity": 2,
    "shortwave_rad": 2,
    "longwave_rad": 2,
    "windspeed": 2,
}


@dataclass
class HydrometSeries:
    """One catchment's daily series, each ``[time]`` float64 in CAMELS-GB units.

    precipitation, pet, peti (mm/day); temperature (degC); discharge_spec (mm/day, NaN =
    missing); humidity (g/kg); shortwave_rad, longwave_rad (W/m2); windspeed (m/s);
    ``slow`` (mm/day) the slow-reservoir part of the flow before gaps, for attributes.
    """

    precipitation: np.ndarray
    pet: np.ndarray
    peti: np.ndarray
    temperature: np.ndarray
    discharge_spec: np.ndarray
    humidity: np.ndarray
    shortwave_rad: np.ndarray
    longwave_rad: np.ndarray
    windspeed: np.ndarray
    slow: np.ndarray


def series_name(gauge_id: int, first: dt.date, last: dt.date) -> str:
    return f"CAMELS_GB_hydromet_timeseries_{gauge_id}_{first:%Y%m%d}-{last:%Y%m%d}.csv"


def write_series(
    path: Path, dates: pd.DatetimeIndex, series: HydrometSeries, area_km2: float
) -> None:
    """One CSV with exactly the CAMELS-GB header; ``discharge_vol = spec * area / 86.4`` (m3/s)."""
    spec = np.round(series.discharge_spec, DECIMALS["discharge_spec"])
    table = pd.DataFrame(
        {
            "date": dates.strftime("%Y-%m-%d"),
            "precipitation": series.precipitation,
            "pet": series.pet,
            "temperature": series.temperature,
            "discharge_spec": spec,
            "discharge_vol": spec * area_km2 / 86.4,
            "peti": series.peti,
            "humidity": series.humidity,
            "shortwave_rad": series.shortwave_rad,
            "longwave_rad": series.longwave_rad,
            "windspeed": series.windspeed,
        },
        columns=list(HEADER),
    )
    for column, decimals in DECIMALS.items():
        table[column] = table[column].round(decimals)
    table.to_csv(path, index=False, na_rep="NaN", lineterminator="\n")


def _quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    return [float(v) for v in np.quantile(values, qs)]


def topographic_attributes(geo: Geography, catchments: list[Catchment]) -> pd.DataFrame:
    """CAMELS-GB topographic table: gauge position and elevation statistics (m, m/km, km2).

    ``dpsbar`` is the mean magnitude of the elevation gradient over the catchment's cells
    (m/km), a stand-in for the mean drainage path slope.
    """
    elev = geo.elevation.ravel()
    gy, gx = np.gradient(geo.elevation, CELL_M / 1000.0)
    slope = np.hypot(gy, gx).ravel()
    rows = []
    for c in catchments:
        e = elev[c.cells]
        e_min, e10, e50, e90, e_max = _quantiles(e, (0.0, 0.1, 0.5, 0.9, 1.0))
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
                "elev_min": round(e_min, 1),
                "elev_10": round(e10, 1),
                "elev_50": round(e50, 1),
                "elev_90": round(e90, 1),
                "elev_max": round(e_max, 1),
                "dpsbar": round(float(slope[c.cells].mean()), 1),
                "elev_mean": round(float(e.mean()), 1),
            }
        )
    return pd.DataFrame(rows)


def _runs(flags: np.ndarray) -> float:
    """Mean length (days) of runs of True in ``flags`` (0 when there are none)."""
    if not flags.any():
        return 0.0
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    d = np.diff(padded)
    return float(np.mean(np.flatnonzero(d == -1) - np.flatnonzero(d == 1)))


def climatic_attributes(ids: list[int], series: list[HydrometSeries]) -> pd.DataFrame:
    """CAMELS-GB climatic table from the generated series (mm/day, fractions, days).

    ``high_prec`` days have P >= 5 p_mean, ``low_prec`` days P < 1 mm; frequencies in days
    per year, durations as mean run lengths; ``frac_snow`` the share of precipitation that
    fell on days below 0 degC.
    """
    rows = []
    for gid, s in zip(ids, series, strict=True):
        p, years = s.precipitation, s.precipitation.size / 365.25
        high, low = p >= 5.0 * p.mean(), p < 1.0
        rows.append(
            {
                "gauge_id": gid,
                "p_mean": round(float(p.mean()), 3),
                "pet_mean": round(float(s.pet.mean()), 3),
                "aridity": round(float(s.pet.mean() / max(p.mean(), 1e-9)), 3),
                "frac_snow": round(float(p[s.temperature < 0.0].sum() / max(p.sum(), 1e-9)), 4),
                "high_prec_freq": round(float(high.sum() / years), 2),
                "high_prec_dur": round(_runs(high), 2),
                "low_prec_freq": round(float(low.sum() / years), 2),
                "low_prec_dur": round(_runs(low), 2),
            }
        )
    return pd.DataFrame(rows)


def hydrologic_attributes(ids: list[int], series: list[HydrometSeries]) -> pd.DataFrame:
    """CAMELS-GB hydrologic table from the observed (non-missing) flow days.

    q_mean (mm/day), runoff_ratio (q_mean / p_mean over the same days), baseflow_index
    (slow-reservoir share of the flow), Q5 and Q95 (the 5% and 95% flow quantiles, mm/day,
    as in CAMELS-GB: Q5 a low flow, Q95 a high flow), high_q_freq (days/yr above 9x the
    median), low_q_freq (days/yr below 0.2x the mean), zero_q_freq (share of zero days).
    """
    rows = []
    for gid, s in zip(ids, series, strict=True):
        ok = np.isfinite(s.discharge_spec)
        q, p, slow = s.discharge_spec[ok], s.precipitation[ok], s.slow[ok]
        years = max(q.size, 1) / 365.25
        rows.append(
            {
                "gauge_id": gid,
                "q_mean": round(float(q.mean()), 3),
                "runoff_ratio": round(float(q.mean() / max(p.mean(), 1e-9)), 3),
                "baseflow_index": round(float(slow.sum() / max(q.sum(), 1e-9)), 3),
                "Q5": round(float(np.quantile(q, 0.05)), 3),
                "Q95": round(float(np.quantile(q, 0.95)), 3),
                "high_q_freq": round(float((q > 9.0 * np.median(q)).sum() / years), 2),
                "low_q_freq": round(float((q < 0.2 * q.mean()).sum() / years), 2),
                "zero_q_freq": round(float((q <= 0.0).mean()), 4),
            }
        )
    return pd.DataFrame(rows)


def write_table(path: Path, table: pd.DataFrame) -> None:
    table.to_csv(path, index=False, lineterminator="\n")
