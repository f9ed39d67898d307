"""Catchment inputs: CAMELS-GB daily series (a CSV per gauge, or a long table) and attributes.

Series come out as ``[T, C]`` float32 on the requested days, NaN where missing, with the
gauges in a fixed order (sorted ids). Evaporation defaults to ``pet`` (mm/day), riverflow
to ``discharge_spec`` (mm/day) or ``discharge_vol`` (m3/s). Every error names the file, the
column and the problem.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SERIES_FILE = re.compile(r"CAMELS_GB_hydromet_timeseries_(?P<gauge>.+?)_\d{8}-\d{8}\.csv$")
COLUMN_UNITS = {
    "pet": "mm/day",
    "peti": "mm/day",
    "precipitation": "mm/day",
    "discharge_spec": "mm/day",
    "discharge_vol": "m3/s",
    "temperature": "degC",
}


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
                path, na_values=["NaN", "nan", ""], keep_default_na=True, dtype={"gauge_id": str}
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
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def _align(frame: pd.DataFrame, dates: list[dt.date], column: str, where: str) -> np.ndarray:
    dup = frame["date"].duplicated()
    if dup.any():
        raise CatchmentInputError(
            f"{where}: date {frame['date'][dup].iloc[0]} appears more than once (column {column!r})"
        )
    series = frame.set_index("date")[column]
    return series.reindex(dates).to_numpy(dtype=np.float64)


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
    """All columns of the attribute CSVs joined on ``gauge_id``, one row per gauge, in order."""
    table: pd.DataFrame | None = None
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
        if table is None:
            table = frame
        else:
            table = table.join(
                frame[[c for c in frame.columns if c not in table.columns]], how="outer"
            )
    if table is None:
        return pd.DataFrame(index=pd.Index(gauge_ids, name="gauge_id"))
    missing = [g for g in gauge_ids if g not in table.index]
    if missing:
        raise CatchmentInputError(
            f"attribute files {[p.name for p in paths]} have no row for gauge(s) {missing[:5]}"
        )
    return table.loc[gauge_ids]


def static_matrix(table: pd.DataFrame, names: list[str], paths: list[Path]) -> np.ndarray:
    """``[C, A]`` float32 of the named attributes, physical units, NaN where missing."""
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise CatchmentInputError(
            f"static attribute(s) {missing} are in none of {[p.name for p in paths]}"
        )
    values = table[names].apply(pd.to_numeric, errors="coerce")
    return values.to_numpy(dtype=np.float32).reshape(len(table), len(names))


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
