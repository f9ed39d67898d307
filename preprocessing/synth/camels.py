"""CAMELS-GB-format catchment files: daily hydromet time series and static attribute tables.

Series arrive as ``[time]`` arrays per catchment; attributes are one row per gauge keyed
by ``gauge_id`` (``preprocessing.synth.attributes`` computes them). Columns and units follow
CAMELS-GB (Coxon et al. 2020).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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


def write_table(path: Path, table: pd.DataFrame) -> None:
    """An attribute table as the release writes it: missing values as ``NaN``."""
    table.to_csv(path, index=False, na_rep="NaN", lineterminator="\n")
