"""Physical ranges of the inputs: a value outside its variable's range is a fault, not data.

One table for every reader: the grids check each block of days they read (after the
conversion to the project's units), the catchment reader checks the series it aligns. A
value exactly NaN is *missing*, never out of range; an infinite value is out of range.

The bounds are wide on purpose. They catch wrong units and broken files (temperature in
kelvin labelled ``degC``, precipitation in kg m-2 s-1 labelled mm, fill values that were not
declared) and never real weather: the UK records are 341 mm of rain in a day (Honister
2009), 40.3 and -27.2 degC; the largest CAMELS-GB flows are about 200 mm/day and 1,000 m3/s;
daily Penman-Monteith PET can dip below 0 in winter. ``hydromae synth`` output lies well
inside every range (tested).

Soil moisture comes in many units; it is checked where the units are known:
``m3 m-3``, ``m3/m3``, ``m**3 m**-3`` (ERA5), ``1`` and ``fraction`` in [0, 1]; ``kg m-2``,
``kg/m2``, ``kg m**-2`` and ``mm`` in [0, 5000] (a column of water, any layer depth); ``%``
and ``percent`` in [0, 100]. Soil moisture in other units is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PhysicalRange:
    """Inclusive bounds ``[low, high]`` of a variable in ``units``."""

    low: float
    high: float
    units: str

    def describe(self) -> str:
        return f"[{self.low:g}, {self.high:g}] {self.units}"

    def outside(self, value: float) -> str:
        """The message fragment for a value out of this range."""
        return f"{value:.6g} {self.units} is outside the physical range {self.describe()}"


_FRACTION = PhysicalRange(0.0, 1.0, "")
_WATER_COLUMN = PhysicalRange(0.0, 5000.0, "")
_PERCENT = PhysicalRange(0.0, 100.0, "")


def _in(units: str, template: PhysicalRange) -> PhysicalRange:
    return PhysicalRange(template.low, template.high, units)


# image modality -> {the modality's units in the project: range}
IMAGE_RANGES: dict[str, dict[str, PhysicalRange]] = {
    "precip": {"mm": PhysicalRange(0.0, 1000.0, "mm")},
    "temp": {"degC": PhysicalRange(-60.0, 60.0, "degC")},
    "soil": {
        **{u: _in(u, _FRACTION) for u in ("m3 m-3", "m3/m3", "m**3 m**-3", "1", "fraction")},
        **{u: _in(u, _WATER_COLUMN) for u in ("kg m-2", "kg/m2", "kg m**-2", "mm")},
        **{u: _in(u, _PERCENT) for u in ("%", "percent")},
    },
}

# CAMELS-GB time-series column -> range (in the column's CAMELS-GB units)
COLUMN_RANGES: dict[str, PhysicalRange] = {
    "precipitation": PhysicalRange(0.0, 1000.0, "mm/day"),
    "pet": PhysicalRange(-10.0, 30.0, "mm/day"),
    "peti": PhysicalRange(-10.0, 30.0, "mm/day"),
    "temperature": PhysicalRange(-60.0, 60.0, "degC"),
    "discharge_spec": PhysicalRange(0.0, 2000.0, "mm/day"),
    "discharge_vol": PhysicalRange(0.0, 50000.0, "m3/s"),
}


def image_range(modality: str, units: str) -> PhysicalRange | None:
    """The range of an image modality in the project's ``units``; None where unknown."""
    return IMAGE_RANGES.get(modality, {}).get(units)


def column_range(column: str) -> PhysicalRange | None:
    """The range of a CAMELS-GB series column; None for other columns."""
    return COLUMN_RANGES.get(column)


def first_outside(values: np.ndarray, limits: PhysicalRange) -> tuple[int, ...] | None:
    """Index of the first value (C order) outside ``limits``, or None. NaN is never outside."""
    with np.errstate(invalid="ignore"):
        bad = (values < limits.low) | (values > limits.high)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), values.shape))
