"""The coupled daily model: weather over the grid, then evaporation and soil on land cells.

One :class:`DailyModel` steps day by day and returns :class:`Day`, the land-cell vectors
``[cells]`` (land cells in row-major order of the ``[y, x]`` grid) of everything written,
already quantised to the stored precision.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from preprocessing.synth.geography import Geography
from preprocessing.synth.hydrology import SoilBucket, extraterrestrial_radiation, oudin_pet
from preprocessing.synth.weather import RainModel, TemperatureModel

RAIN_QUANTUM = 2.0**-7  # mm; binary steps keep float64 exact and compress well
TEMP_QUANTUM = 2.0**-7  # degC
SOIL_QUANTUM = 2.0**-12  # m3 m-3


def quantise(values: np.ndarray, quantum: float) -> np.ndarray:
    """Round to a multiple of a power-of-two ``quantum`` (exact in float64)."""
    return np.round(values / quantum) * quantum


@dataclass
class Day:
    """One day on the land cells, each ``[cells]`` float64.

    rainfall (mm), tas/tasmax/tasmin (degC), sm (m3 m-3) as written to the grids; pet (mm/day,
    Oudin); fast/slow runoff (mm/day) from the soil bucket; radiation (MJ m-2 day-1,
    extraterrestrial); wind (eastward, northward) steering wind in km/day.
    """

    rainfall: np.ndarray
    tas: np.ndarray
    tasmax: np.ndarray
    tasmin: np.ndarray
    sm: np.ndarray
    pet: np.ndarray
    fast: np.ndarray
    slow: np.ndarray
    radiation: np.ndarray
    wind: tuple[float, float]


class DailyModel:
    """Rain -> temperature -> Oudin PET -> soil bucket, one day per :meth:`step`."""

    def __init__(
        self, geo: Geography, rain_rng: np.random.Generator, temp_rng: np.random.Generator
    ):
        self.land = geo.land.ravel()
        self.lat = geo.lat.ravel()[self.land]
        self.rain = RainModel(geo, rain_rng)
        self.temp = TemperatureModel(geo, temp_rng)
        self.soil = SoilBucket(size=int(self.land.sum()))

    def step(self, day: dt.date) -> Day:
        doy = day.timetuple().tm_yday
        rain_grid, wind = self.rain.step(doy)
        tas_grid, half_grid = self.temp.step(doy, rain_grid)
        rain = quantise(rain_grid.ravel()[self.land], RAIN_QUANTUM)
        tas = quantise(tas_grid.ravel()[self.land], TEMP_QUANTUM)
        half = quantise(half_grid.ravel()[self.land], TEMP_QUANTUM)
        radiation = extraterrestrial_radiation(self.lat, doy)
        pet = oudin_pet(radiation, tas)
        fast, slow, _ = self.soil.step(rain, pet)
        sm = quantise(self.soil.theta(), SOIL_QUANTUM)
        return Day(
            rainfall=rain,
            tas=tas,
            tasmax=tas + half,
            tasmin=tas - half,
            sm=sm,
            pet=pet,
            fast=fast,
            slow=slow,
            radiation=radiation,
            wind=wind,
        )
