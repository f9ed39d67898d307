"""Writing daily grids as HadUK-Grid-format monthly NetCDF-4 files.

Layout of every file (as the Met Office's HadUK-Grid v1.x daily 5 km files):
``{var}(time, projection_y_coordinate, projection_x_coordinate)`` float64 with
``_FillValue = 1e20`` over sea, y ascending (row 0 south); ``projection_[xy]_coordinate``
(m) with ``_bnds``; 2-D ``latitude``/``longitude``; a ``transverse_mercator`` grid mapping;
``time`` int64 "hours since 1800-01-01 00:00:00" at 12:00 of each day with ``time_bnds``.
No wall-clock time is written, so equal inputs give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np

from preprocessing.synth.geography import CELL_M, Geography

FILL = 1.0e20
EPOCH = dt.date(1800, 1, 1)
TIME_UNITS = "hours since 1800-01-01 00:00:00"
LATLON_STEPS = 2.0**16  # lat/lon stored to 1/65536 degree (< 2 m), exact binary, compact
YDIM, XDIM = "projection_y_coordinate", "projection_x_coordinate"


@dataclass(frozen=True)
class VarSpec:
    """What a data variable is: its name, CF attributes and file-name pattern."""

    name: str
    standard_name: str
    long_name: str
    units: str
    cell_methods: str
    short_name: str
    stem: str  # file-name stem before "_{YYYYMMDD}-{YYYYMMDD}.nc"
    title: str


def haduk(name: str, long_name: str, units: str, standard_name: str, cell: str) -> VarSpec:
    return VarSpec(
        name=name,
        standard_name=standard_name,
        long_name=long_name,
        units=units,
        cell_methods=cell,
        short_name=f"daily_{long_name.lower().replace(' ', '_')}",
        stem=f"{name}_hadukgrid_uk_5km_day",
        title="Gridded surface climate observations data for the UK (synthetic)",
    )


RAINFALL = haduk(
    "rainfall", "Total precipitation amount", "mm", "lwe_thickness_of_precipitation_amount",
    "time: sum",
)  # fmt: skip
TAS = haduk("tas", "Mean air temperature", "degC", "air_temperature", "time: mean")
TASMAX = haduk("tasmax", "Maximum air temperature", "degC", "air_temperature", "time: maximum")
TASMIN = haduk("tasmin", "Minimum air temperature", "degC", "air_temperature", "time: minimum")
SOIL = VarSpec(
    name="sm",
    standard_name="volume_fraction_of_condensed_water_in_soil",
    long_name="Volumetric soil moisture content of the top 0.5 m",
    units="m3 m-3",
    cell_methods="time: mean",
    short_name="daily_soil_moisture",
    stem="sm_synthetic_5km_day",
    title="Synthetic daily soil moisture on the HadUK-Grid 5 km grid",
)
VARIABLES: tuple[VarSpec, ...] = (RAINFALL, TAS, TASMAX, TASMIN, SOIL)


def file_name(spec: VarSpec, first: dt.date, last: dt.date) -> str:
    """``{stem}_{YYYYMMDD}-{YYYYMMDD}.nc`` for the inclusive day range."""
    return f"{spec.stem}_{first:%Y%m%d}-{last:%Y%m%d}.nc"


def hours_since_epoch(day: dt.date) -> int:
    return (day - EPOCH).days * 24


def _coordinate(ds: netCDF4.Dataset, name: str, values: np.ndarray, axis: str, long: str) -> None:
    var = ds.createVariable(name, "f8", (name,))
    var[:] = values
    var.setncatts(
        {
            "axis": axis,
            "bounds": f"{name}_bnds",
            "units": "m",
            "standard_name": name,
            "long_name": long,
        }
    )
    bnds = ds.createVariable(f"{name}_bnds", "f8", (name, "bnds"))
    bnds[:] = np.stack([values - CELL_M / 2, values + CELL_M / 2], axis=1)


def write_month(
    path: Path,
    spec: VarSpec,
    data: np.ndarray,
    first: dt.date,
    geo: Geography,
    source: str,
    extra_attrs: dict[str, str] | None = None,
) -> None:
    """Write ``data`` ``[time, y, x]`` (float64, NaN or anything over sea) for days from ``first``.

    Sea cells (``~geo.land``) are written as the fill value 1e20. The file appears under its
    final name only once complete (written to ``*.tmp`` first).
    """
    days, h, w = data.shape
    tmp = path.with_name(path.name + ".tmp")
    ds = netCDF4.Dataset(tmp, "w", format="NETCDF4")
    try:
        ds.createDimension("time", None)
        ds.createDimension(YDIM, h)
        ds.createDimension(XDIM, w)
        ds.createDimension("bnds", 2)

        values = np.where(geo.land[None], data, FILL)
        var = ds.createVariable(
            spec.name,
            "f8",
            ("time", YDIM, XDIM),
            zlib=True,
            complevel=4,
            shuffle=True,
            chunksizes=(1, h, w),
            fill_value=FILL,
        )
        var.setncatts(
            {
                "standard_name": spec.standard_name,
                "long_name": spec.long_name,
                "units": spec.units,
                "description": spec.long_name,
                "label_units": spec.units,
                "plot_label": f"{spec.long_name} ({spec.units})",
                "cell_methods": spec.cell_methods,
                "grid_mapping": "transverse_mercator",
                "coordinates": "latitude longitude",
            }
        )
        var.set_auto_mask(False)
        var[:] = values

        gm = ds.createVariable("transverse_mercator", "i4")
        gm.setncatts(
            {
                "grid_mapping_name": "transverse_mercator",
                "longitude_of_prime_meridian": 0.0,
                "semi_major_axis": 6377563.396,
                "semi_minor_axis": 6356256.909,
                "longitude_of_central_meridian": -2.0,
                "latitude_of_projection_origin": 49.0,
                "false_easting": 400000.0,
                "false_northing": -100000.0,
                "scale_factor_at_central_meridian": 0.9996012717,
            }
        )
        gm.assignValue(-2147483647)

        _coordinate(ds, XDIM, geo.x, "X", "easting")
        _coordinate(ds, YDIM, geo.y, "Y", "northing")

        start = hours_since_epoch(first)
        hours = start + 24 * np.arange(days, dtype=np.int64)
        time = ds.createVariable("time", "i8", ("time",))
        time.setncatts(
            {
                "axis": "T",
                "bounds": "time_bnds",
                "units": TIME_UNITS,
                "standard_name": "time",
                "calendar": "standard",
            }
        )
        time[:] = hours + 12
        tb = ds.createVariable("time_bnds", "i8", ("time", "bnds"))
        tb[:] = np.stack([hours, hours + 24], axis=1)

        for name, values2d, units in (
            ("latitude", geo.lat, "degrees_north"),
            ("longitude", geo.lon, "degrees_east"),
        ):
            v = ds.createVariable(name, "f8", (YDIM, XDIM), zlib=True, complevel=4, shuffle=True)
            v.setncatts({"units": units, "standard_name": name})
            v[:] = np.round(values2d * LATLON_STEPS) / LATLON_STEPS

        ds.setncatts(
            {
                "comment": "Daily resolution gridded climate observations (synthetic)",
                "frequency": "day",
                "institution": "hydromae synthetic generator (not Met Office data)",
                "references": "docs/synthetic.md in the hydromae repository",
                "short_name": spec.short_name,
                "source": source,
                "title": spec.title,
                "version": "v1",
                **(extra_attrs or {}),
                "Conventions": "CF-1.7",
            }
        )
    finally:
        ds.close()
    os.replace(tmp, path)
