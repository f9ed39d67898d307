"""Catchment inputs: CAMELS-GB daily series (a CSV per gauge, or a long table) and attributes.

Series come out as ``[T, C]`` float32 on the requested days, NaN where missing, with the
gauges in a fixed order (sorted ids). Evaporation defaults to ``pet`` (mm/day), riverflow
to ``discharge_spec`` (mm/day) or ``discharge_vol`` (m3/s). Every error names the file, the
column and the problem.

Missing values are empty cells, ``NaN``/``nan`` and pandas' other default markers (``NA``,
``N/A``, ``null``, ...). Any other text in a value column (``abc``, ``1,5``) is an error
naming the file, the column, the line and date, and the value: it is never quietly turned
into a missing value. The series are checked against their physical ranges
(``preprocessing.ranges``) on the requested days; columns without a known range are not.
Requested static attributes must be numbers too; other attribute columns (``gauge_name``,
``high_prec_timing``, ...) may hold anything.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from preprocessing.ranges import COLUMN_RANGES, column_range, first_outside

SERIES_FILE = re.compile(r"CAMELS_GB_hydromet_timeseries_(?P<gauge>.+?)_\d{8}-\d{8}\.csv$")
COLUMN_UNITS = {column: limits.units for column, limits in COLUMN_RANGES.items()}
MISSING = ["NaN", "nan", ""]  # with pandas' default markers (NA, N/A, null, ...)


class CatchmentInputError(ValueError):
    """Bad catchment input: the message names the file, the column and the problem."""


@dataclass
class GaugeRecords:
    """Every gauge's evaporation and riverflow on the requested days."""

    gauge_ids: list[str]  # [C], sorted
    evap: np.ndarray  # [T, C] float32
    riverflow: np.ndarray  # [T, C] float32
    units: dict[str, str]  # evap, riverflow
    columns: dict[str, str]  # evap, riverflow -> source column


def _read_table(path: Path, columns: list[str], long: bool) -> pd.DataFrame:
    """The table's ``date`` (and ``gauge_id`` if ``long``) and numeric value ``columns``."""
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(
                path, na_values=MISSING, keep_default_na=True, dtype={"gauge_id": str}
            )
    except (OSError, ValueError) as err:
        raise CatchmentInputError(f"{path}: cannot read it as a table: {err}") from None
    missing = [c for c in ["date", *(["gauge_id"] if long else []), *columns] if c not in frame]
    if missing:
        raise CatchmentInputError(
            f"{path}: column(s) {missing} not found; the file has: {', '.join(frame.columns)}"
        )
    try:
        frame["date"] = pd.to_datetime(frame["date"], format="%Y-%m-%d").dt.date
    except ValueError as err:
        raise CatchmentInputError(f"{path}: column 'date' is not YYYY-MM-DD: {err}") from None
    for c in columns:
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = not_numeric(frame[c], values)
        if bad is not None:
            csv = path.suffix.lower() != ".parquet"
            where = f"line {bad + 2}" if csv else f"row {bad}"
            gauge = f", gauge {frame['gauge_id'].iloc[bad]}" if long else ""
            raise CatchmentInputError(
                f"{path}: column {c!r}, {where} (date {frame['date'].iloc[bad]}{gauge}): "
                f"{frame[c].iloc[bad]!r} is not a number (write missing values as NaN or leave "
                "them empty)"
            )
        frame[c] = values.astype(np.float64)
    return frame


def not_numeric(raw: pd.Series, values: pd.Series) -> int | None:
    """Position of the first value of ``raw`` that is given but not a number, or None.

    ``values`` is ``pd.to_numeric(raw, errors="coerce")``: a value that became NaN there
    but was not missing in ``raw`` is text that is not a number.
    """
    bad = (values.isna() & raw.notna()).to_numpy()
    return int(np.argmax(bad)) if bad.any() else None


def _align(frame: pd.DataFrame, dates: list[dt.date], column: str, where: str) -> np.ndarray:
    """``[T]`` float64 of ``column`` on ``dates`` (NaN where absent), checked for its range."""
    dup = frame["date"].duplicated()
    if dup.any():
        raise CatchmentInputError(
            f"{where}: date {frame['date'][dup].iloc[0]} appears more than once (column {column!r})"
        )
    series = frame.set_index("date")[column]
    values = series.reindex(dates).to_numpy(dtype=np.float64)
    limits = column_range(column)
    if limits is not None:
        bad = first_outside(values, limits)
        if bad is not None:
            raise CatchmentInputError(
                f"{where}: column {column!r} on {dates[bad[0]]}: "
                f"{limits.outside(float(values[bad]))}; check the column's units"
            )
    return values


def read_series(
    paths: list[Path],
    dates: list[dt.date],
    evap_column: str = "pet",
    riverflow_column: str = "discharge_spec",
) -> GaugeRecords:
    """Read the catchments' evaporation and riverflow on ``dates``.

    ``paths``: CAMELS-GB per-gauge CSVs (gauge id from the file name), or one long table
    (CSV or Parquet with ``date``, ``gauge_id`` and the value columns).
    """
    columns = [evap_column, riverflow_column]
    per_gauge: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    for path in paths:
        match = SERIES_FILE.search(path.name)
        frame = _read_table(path, columns, long=match is None)
        if match:
            groups = [(match["gauge"], frame)]
        else:
            frame["gauge_id"] = frame["gauge_id"].astype(str)
            groups = list(frame.groupby("gauge_id", sort=True))
        for gauge, part in groups:
            gauge = str(gauge)
            if gauge in per_gauge:
                raise CatchmentInputError(
                    f"{path}: gauge {gauge} also comes from {per_gauge[gauge][2]}"
                )
            where = f"{path} (gauge {gauge})"
            evap = _align(part, dates, evap_column, where)
            flow = _align(part, dates, riverflow_column, where)
            if not (np.isfinite(evap).any() or np.isfinite(flow).any()):
                raise CatchmentInputError(
                    f"{where}: no {evap_column!r} or {riverflow_column!r} data from {dates[0]} to "
                    f"{dates[-1]}: a gauge with no data"
                )
            per_gauge[gauge] = (evap, flow, str(path))
    if not per_gauge:
        raise CatchmentInputError("no catchment series given")
    ids = sorted(per_gauge, key=_gauge_order)
    return GaugeRecords(
        gauge_ids=ids,
        evap=np.stack([per_gauge[g][0] for g in ids], axis=1).astype(np.float32),
        riverflow=np.stack([per_gauge[g][1] for g in ids], axis=1).astype(np.float32),
        units={
            "evap": COLUMN_UNITS.get(evap_column, "unknown"),
            "riverflow": COLUMN_UNITS.get(riverflow_column, "unknown"),
        },
        columns={"evap": evap_column, "riverflow": riverflow_column},
    )


def _gauge_order(gauge: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order, then the others alphabetically."""
    return (0, int(gauge)) if gauge.isdigit() else (1, gauge)


def read_attributes(paths: list[Path], gauge_ids: list[str]) -> pd.DataFrame:
    """All columns of the attribute CSVs joined on ``gauge_id``, one row per gauge, in order.

    A column in several files is taken from the first. ``table.attrs["files"]`` maps each
    column to the file it came from (for messages).
    """
    table: pd.DataFrame | None = None
    files: dict[str, str] = {}
    for path in paths:
        try:
            frame = pd.read_csv(path, dtype={"gauge_id": str})
        except (OSError, ValueError) as err:
            raise CatchmentInputError(f"{path}: cannot read it as CSV: {err}") from None
        if "gauge_id" not in frame.columns:
            raise CatchmentInputError(f"{path}: no 'gauge_id' column")
        if frame["gauge_id"].duplicated().any():
            raise CatchmentInputError(f"{path}: a gauge_id appears more than once")
        frame = frame.set_index("gauge_id")
        new = [c for c in frame.columns if c not in files]
        files.update((c, str(path)) for c in new)
        table = frame if table is None else table.join(frame[new], how="outer")
    if table is None:
        return pd.DataFrame(index=pd.Index(gauge_ids, name="gauge_id"))
    missing = [g for g in gauge_ids if g not in table.index]
    if missing:
        raise CatchmentInputError(
            f"attribute files {[p.name for p in paths]} have no row for gauge(s) {missing[:5]}"
        )
    table = table.loc[gauge_ids]
    table.attrs["files"] = files
    return table


def static_matrix(table: pd.DataFrame, names: list[str], paths: list[Path]) -> np.ndarray:
    """``[C, A]`` float32 of the named attributes, physical units, NaN where missing.

    Raises :class:`CatchmentInputError` for a name in no file, or a value that is not a
    number (naming the file, the column, the gauge and the value).
    """
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise CatchmentInputError(
            f"static attribute(s) {missing} are in none of {[p.name for p in paths]}"
        )
    out = np.empty((len(table), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        values = pd.to_numeric(table[name], errors="coerce")
        bad = not_numeric(table[name], values)
        if bad is not None:
            where = table.attrs.get("files", {}).get(name, [p.name for p in paths])
            raise CatchmentInputError(
                f"{where}: column {name!r}, gauge {table.index[bad]}: "
                f"{table[name].iloc[bad]!r} is not a number; a static attribute must be numeric"
            )
        out[:, j] = values.to_numpy(dtype=np.float64)
    return out


def gauge_points(table: pd.DataFrame) -> dict[str, tuple[float, float, float]] | None:
    """``{gauge_id: (gauge_easting, gauge_northing, area)}`` from the attributes, where they
    hold all three (the disc a catchment falls back to without a boundary polygon)."""
    needed = ("gauge_easting", "gauge_northing", "area")
    if not all(c in table.columns for c in needed):
        return None
    return {
        str(g): tuple(float(v) for v in row)
        for g, row in zip(table.index, table[list(needed)].to_numpy(), strict=True)
    }
