"""Index the daily gridded inputs (precipitation, soil, temperature) and read blocks of days.

An :class:`ImageSource` knows, for one modality, which file holds each day of each of its
file variables (temperature may be ``tas`` or the mean of ``tasmax`` and ``tasmin``), the
grid, and how to convert the file's units to the project's. Indexing reads only metadata;
:meth:`ImageSource.read` reads one block of days, opening only the files it needs, so a
worker's memory is bounded by one block whatever the number of years, and checks every value
it reads against the modality's physical range (``preprocessing.ranges``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from preprocessing.gridfile import (
    NETCDF_LOCK,
    GridFileError,
    check_same_grid,
    grid_coords,
    open_grid,
    read_errors,
    valid_everywhere,
)
from preprocessing.ranges import PhysicalRange, first_outside, image_range

# canonical units per modality, and (scale, offset) from the units files use
UNITS: dict[str, tuple[str, dict[str, tuple[float, float]]]] = {
    "precip": (
        "mm",
        {"mm": (1, 0), "mm/day": (1, 0), "mm day-1": (1, 0), "kg m-2": (1, 0),
         "kg m-2 s-1": (86400, 0)},
    ),
    "temp": ("degC", {"degC": (1, 0), "Celsius": (1, 0), "celsius": (1, 0), "K": (1, -273.15)}),
}  # fmt: skip


@dataclass(frozen=True)
class FileDays:
    path: Path
    var: str
    first: dt.date
    days: int


@dataclass
class ImageSource:
    """One image modality: its file variables, their files by day, grid and unit conversion."""

    name: str  # precip, soil, temp
    variables: list[str]  # file variables, averaged when more than one (tasmax, tasmin)
    units: str  # the project's units for this modality
    scale: float
    offset: float
    y: np.ndarray  # [H] cell centres, ascending
    x: np.ndarray  # [W]
    by_var: dict[str, dict[dt.date, tuple[Path, int]]] = field(default_factory=dict)
    files: list[FileDays] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)  # provenance from global attributes

    @property
    def dates(self) -> tuple[dt.date, dt.date]:
        days = sorted(set.intersection(*(set(d) for d in self.by_var.values())))
        return days[0], days[-1]

    def check_covers(self, dates: list[dt.date]) -> None:
        """Every day of ``dates`` must be in the files of every variable."""
        for var, index in self.by_var.items():
            missing = [d for d in dates if d not in index]
            if missing:
                shown = ", ".join(d.isoformat() for d in missing[:5])
                raise GridFileError(
                    f"{self.name}: variable {var!r} has no file for {len(missing)} day(s) of the "
                    f"requested period ({shown}{' ...' if len(missing) > 5 else ''})"
                )

    def read(self, dates: list[dt.date]) -> np.ndarray:
        """``[T, H, W]`` float32 in the project's units, NaN where the files have no data.

        Each file's days are checked against the modality's physical range
        (``preprocessing.ranges``) after the unit conversion. A file that cannot be read,
        or holds a value out of range, raises :class:`GridFileError` naming the file, the
        variable and the day.
        """
        out = np.zeros((len(dates), self.y.size, self.x.size), dtype=np.float64)
        limits = image_range(self.name, self.units)
        for var in self.variables:
            wanted: dict[Path, list[tuple[int, int]]] = {}
            for i, day in enumerate(dates):
                path, t = self.by_var[var][day]
                wanted.setdefault(path, []).append((i, t))
            for path, pairs in wanted.items():
                rows, times = zip(*pairs, strict=True)
                what = f"variable {var!r}, {len(rows)} day(s) from {dates[rows[0]]}"
                with NETCDF_LOCK:
                    da = open_grid(path, var)
                    try:
                        with read_errors(path, what):
                            values = da.isel(time=list(times)).values  # [t, H, W]
                    finally:
                        da.close()
                if limits is not None:
                    self._check_range(values, path, var, [dates[r] for r in rows], limits)
                out[list(rows)] += values
        out /= len(self.variables)
        out = out * self.scale + self.offset
        return out.astype(np.float32)

    def _check_range(
        self,
        values: np.ndarray,
        path: Path,
        var: str,
        days: list[dt.date],
        limits: PhysicalRange,
    ) -> None:
        """Refuse ``values`` ``[t, H, W]`` (file units) outside ``limits`` once converted."""
        converted = values * self.scale + self.offset
        bad = first_outside(converted, limits)
        if bad is not None:
            t, row, col = bad
            raise GridFileError(
                f"{path}: variable {var!r} on {days[t]}: "
                f"{limits.outside(float(converted[bad]))} for {self.name} (at y = "
                f"{self.y[row]:g}, x = {self.x[col]:g}); check the file's units attribute"
            )

    def valid_cells(self, files: list[FileDays] | None = None) -> np.ndarray:
        """Boolean ``[H, W]``: finite on every day of the files (the land mask's definition)."""
        valid = np.ones((self.y.size, self.x.size), dtype=bool)
        for var in self.variables:
            paths = [f.path for f in (self.files if files is None else files) if f.var == var]
            if paths:
                valid &= valid_everywhere(paths, var, progress=False)
        return valid


PROVENANCE_ATTRS = ("source", "generator_version", "title", "version", "institution", "references")


def global_attributes(path: Path) -> dict[str, str]:
    """The provenance attributes of a NetCDF file (source, version, ...), for the manifest."""
    import netCDF4

    with NETCDF_LOCK, read_errors(path, "global attributes"), netCDF4.Dataset(path) as ds:
        return {k: str(ds.getncattr(k)) for k in ds.ncattrs() if k in PROVENANCE_ATTRS}


def _units_of(name: str, path: Path, var: str, units: str | None, configured: str | None):
    """(project units, scale, offset) for a file variable's units."""
    if name not in UNITS:  # soil moisture: units come from configuration or the file
        if configured is not None and units is not None and units != configured:
            raise GridFileError(
                f"{path}: variable {var!r} has units {units!r}, but the configuration says "
                f"{configured!r}"
            )
        chosen = configured or units
        if chosen is None:
            raise GridFileError(f"{path}: variable {var!r} has no units; set them in the config")
        return chosen, 1.0, 0.0
    canonical, table = UNITS[name]
    if units not in table:
        raise GridFileError(
            f"{path}: variable {var!r} has unknown units {units!r}; expected one of {sorted(table)}"
        )
    scale, offset = table[units]
    return canonical, float(scale), float(offset)


def index_source(
    name: str,
    paths: list[Path],
    variables: list[str],
    configured_units: str | None = None,
) -> ImageSource:
    """Index the files of one modality: days per variable, one grid, known units.

    Raises :class:`GridFileError` naming the file and variable for a missing variable, an
    unknown unit, another grid, or a day that two files both hold.
    """
    if not paths:
        raise GridFileError(f"{name}: no input files")
    source: ImageSource | None = None
    ref: tuple[Path, tuple] | None = None
    for path in paths:
        present = []
        for var in variables:
            try:
                with NETCDF_LOCK:
                    da = open_grid(path, var)
            except GridFileError:
                if len(variables) > 1:
                    continue  # tasmax and tasmin may come in separate files
                raise
            try:
                present.append(var)
                coords = grid_coords(da)
                if ref is None:
                    ref = (path, coords)
                check_same_grid(path, var, coords, ref)
                units, scale, offset = _units_of(
                    name, path, var, da.attrs.get("units"), configured_units
                )
                dates = pd.DatetimeIndex(da["time"].values).floor("D").date
                if source is None:
                    source = ImageSource(
                        name, list(variables), units, scale, offset, coords[0], coords[1],
                        attrs=global_attributes(path),
                    )  # fmt: skip
                elif (units, scale, offset) != (source.units, source.scale, source.offset):
                    raise GridFileError(
                        f"{path}: variable {var!r} has units {da.attrs.get('units')!r}, other "
                        f"files of {name} have another unit"
                    )
                index = source.by_var.setdefault(var, {})
                for t, day in enumerate(dates):
                    if day in index:
                        raise GridFileError(
                            f"{path}: variable {var!r}: day {day} is also in {index[day][0]}: "
                            "duplicated day"
                        )
                    index[day] = (path, t)
                source.files.append(FileDays(path, var, dates[0], len(dates)))
            finally:
                da.close()
        if not present:
            raise GridFileError(f"{path}: none of the variables {variables} is in this file")
    assert source is not None
    for var in variables:
        if var not in source.by_var:
            raise GridFileError(f"{name}: variable {var!r} is in none of the {len(paths)} files")
    return source
