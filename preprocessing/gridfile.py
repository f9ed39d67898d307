"""Reading daily gridded NetCDF as it comes (HadUK-Grid and grids that share its conventions).

HadUK-Grid stores ``{var}(time, projection_y_coordinate, projection_x_coordinate)`` as
float64 with ``_FillValue = 1e20`` over sea and y ascending (row 0 = south). Other grids
may name their dimensions ``y``/``x``, use float32, or NaN instead of a fill value. Every
reader here returns ``(time, y, x)`` with y and x ascending and NaN where data are missing,
and names the file and the variable in every error.

A file damaged inside (bytes overwritten in a compressed chunk, a truncated download)
often opens and fails only when its data are read, deep in netCDF-C or HDF5
(``RuntimeError: NetCDF: HDF error``). Every read here goes through :func:`read_errors`,
which turns such a failure into a :class:`GridFileError` naming the file, the variable and
the days being read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

Y_NAMES = ("projection_y_coordinate", "y", "northing", "lat", "latitude")
X_NAMES = ("projection_x_coordinate", "x", "easting", "lon", "longitude")


# netCDF-C is not thread-safe: every read in a process goes through this lock
NETCDF_LOCK = threading.Lock()


class GridFileError(ValueError):
    """Bad gridded input: the message names the file, the variable and the problem."""


@contextmanager
def read_errors(path: str | Path, what: str) -> Iterator[None]:
    """Turn a failed read inside the block into a :class:`GridFileError` naming ``path``.

    ``what`` says what was being read (``"variable 'tas', 31 day(s) from 2000-01-01"``).
    RuntimeError (netCDF-C and HDF5 errors), OSError and ValueError become one message;
    a GridFileError raised inside passes unchanged.
    """
    try:
        yield
    except GridFileError:
        raise
    except (RuntimeError, OSError, ValueError) as err:
        raise GridFileError(
            f"{path}: {what}: cannot read the data ({type(err).__name__}: {err}); the file "
            "is damaged or truncated: download it again"
        ) from err


def _dim(da: xr.DataArray, names: tuple[str, ...], path: Path, var: str, axis: str) -> str:
    for name in names:
        if name in da.dims:
            return name
    raise GridFileError(
        f"{path}: variable {var!r} has dimensions {da.dims}; expected a {axis} dimension "
        f"named one of {names}"
    )


def open_grid(path: str | Path, var: str) -> xr.DataArray:
    """Open ``var`` from one NetCDF file as a lazy ``(time, y, x)`` DataArray.

    Fill values become NaN (xarray's CF decoding), y and x are sorted ascending, and the
    dimensions are renamed to ``time``, ``y``, ``x`` (coordinates in the file's units).
    """
    path = Path(path)
    if not path.exists():
        raise GridFileError(f"{path}: file does not exist")
    try:
        ds = xr.open_dataset(path, engine="netcdf4", cache=False)
    except (RuntimeError, OSError, ValueError) as err:
        raise GridFileError(f"{path}: cannot read it as NetCDF: {err}") from None
    if var not in ds.data_vars:
        names = ", ".join(sorted(map(str, ds.data_vars))) or "none"
        ds.close()
        raise GridFileError(f"{path}: variable {var!r} not found; the file has: {names}")
    da = ds[var]
    try:
        if "time" not in da.dims or da.ndim != 3:
            raise GridFileError(
                f"{path}: variable {var!r} has dimensions {da.dims}; expected (time, y, x)"
            )
        ydim = _dim(da, Y_NAMES, path, var, "y")
        xdim = _dim(da, X_NAMES, path, var, "x")
        da = da.transpose("time", ydim, xdim).rename({ydim: "y", xdim: "x"})
        for dim in ("y", "x"):
            if dim in da.coords and da.sizes[dim] > 1 and np.any(np.diff(da[dim].values) < 0):
                da = da.sortby(dim)
    except GridFileError:
        ds.close()
        raise
    # da.close() must close the file itself: otherwise xarray keeps it open in its file cache
    # (up to 128 files, each with netCDF's chunk cache), and memory grows with the inputs
    da.set_close(ds.close)
    return da


def days_read(da: xr.DataArray) -> str:
    """``"31 day(s) from 2000-01-01"``: the days of ``da``, for messages."""
    n = da.sizes["time"]
    return f"{n} day(s) from {str(da['time'].values[0])[:10]}" if n else "no days"


def grid_coords(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """The y and x cell-centre coordinates (or positions, where the file has none)."""
    y = da["y"].values if "y" in da.coords else np.arange(da.sizes["y"])
    x = da["x"].values if "x" in da.coords else np.arange(da.sizes["x"])
    return np.asarray(y), np.asarray(x)


def check_same_grid(
    path: Path, var: str, coords: tuple[np.ndarray, np.ndarray], ref: tuple[Path, tuple]
) -> None:
    """Refuse a file whose grid differs from the reference file's."""
    ref_path, (ry, rx) = ref
    y, x = coords
    if (y.size, x.size) != (ry.size, rx.size):
        raise GridFileError(
            f"{path}: variable {var!r} is on a {y.size} x {x.size} grid, but {ref_path} is on "
            f"{ry.size} x {rx.size}: all files must share one grid"
        )
    if not (np.allclose(y, ry) and np.allclose(x, rx)):
        raise GridFileError(
            f"{path}: variable {var!r} has other y/x coordinates than {ref_path}: all files "
            "must share one grid"
        )


def valid_everywhere(paths: list[Path], var: str, progress: bool = True) -> np.ndarray:
    """Boolean ``[H, W]``: cells where ``var`` is finite on every day of every file.

    Files are read one at a time (memory bounded by one file); every file must share the
    first file's grid.
    """
    from tqdm import tqdm

    if not paths:
        raise GridFileError(f"no input files given for variable {var!r}")
    valid: np.ndarray | None = None
    ref: tuple[Path, tuple] | None = None
    for path in tqdm(paths, desc=f"land mask from {var}", unit="file", disable=not progress):
        with NETCDF_LOCK:
            da = open_grid(path, var)
            try:
                coords = grid_coords(da)
                if ref is None:
                    ref = (Path(path), coords)
                check_same_grid(Path(path), var, coords, ref)
                with read_errors(path, f"variable {var!r}, {days_read(da)}"):
                    ok = np.isfinite(da.values).all(axis=0)  # [H, W]
            finally:
                da.close()
        valid = ok if valid is None else valid & ok
    assert valid is not None
    return valid
