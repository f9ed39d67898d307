"""Climatic and hydrological signatures of daily series, as CAMELS-GB defines its attributes.

Every function takes ``[time]`` float64 arrays (mm/day for precipitation, evaporation and
flow; degC for temperature; NaN = missing flow) with their dates, and returns a number, or
NaN (a string, or None, for the timing attributes) when the series is too short or too
gappy for the signature: a value is never made up from too little data. Definitions follow
Addor et al. (2017) and Coxon et al. (2020); sources are named per function.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

SEASONS = ("djf", "mam", "jja", "son")
YEAR_DAYS = 365.25
WATER_YEAR_START = 10  # 1 October, as CAMELS-GB
MIN_YEAR_COVER = 0.8  # share of a water year's days with flow for it to count


def mean_run(flags: np.ndarray) -> float:
    """Mean length (days) of the runs of True in ``flags`` ``[time]``; NaN when none."""
    if not flags.any():
        return float("nan")
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    d = np.diff(padded)
    return float(np.mean(np.flatnonzero(d == -1) - np.flatnonzero(d == 1)))


def per_year(flags: np.ndarray, observed: int) -> float:
    """Days a year with ``flags`` True, over ``observed`` days; NaN without any."""
    return float(flags.sum() * YEAR_DAYS / observed) if observed else float("nan")


def season_of(dates: pd.DatetimeIndex) -> np.ndarray:
    """``[time]`` index into :data:`SEASONS` (0 = December-February)."""
    return (np.asarray(dates.month) % 12) // 3


def timing(flags: np.ndarray, dates: pd.DatetimeIndex) -> str | None:
    """The season (``djf``, ``mam``, ``jja``, ``son``) with most of the days flagged; None
    when no day is (CAMELS-GB writes ``NaN`` there). Ties go to the earlier season."""
    if not flags.any():
        return None
    counts = np.bincount(season_of(dates)[flags], minlength=4)
    return SEASONS[int(np.argmax(counts))]


def _sine_fit(values: np.ndarray, doy: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``v ~ mean + amp sin(w (doy - shift))``, ``w = 2 pi / 365.25``;
    returns ``(mean, amp >= 0, phase = w * shift)``."""
    w = 2.0 * np.pi / YEAR_DAYS
    design = np.column_stack([np.ones_like(doy), np.sin(w * doy), np.cos(w * doy)])
    (mean, b, c), *_ = np.linalg.lstsq(design, values, rcond=None)
    # b sin + c cos = amp sin(w doy + phi) = amp sin(w (doy - shift)), shift = -phi / w
    return float(mean), float(np.hypot(b, c)), float(-np.arctan2(c, b))


def p_seasonality(
    precipitation: np.ndarray, temperature: np.ndarray, dates: pd.DatetimeIndex
) -> float:
    """Woods (2009) seasonality: ``delta_p * sign(delta_T) * cos(2 pi (s_p - s_T) / 365.25)``.

    Sine curves fitted to daily P and T give P's relative amplitude ``delta_p`` and the
    phase shifts ``s_p``, ``s_T``: positive for summer-peaking rain, negative for winter
    (most of GB), near 0 for rain spread evenly. NaN under one year of data.
    """
    if precipitation.size < YEAR_DAYS or precipitation.mean() <= 0:
        return float("nan")
    doy = np.asarray(dates.day_of_year, dtype=np.float64)
    p_mean, p_amp, p_phase = _sine_fit(precipitation, doy)
    _, _, t_phase = _sine_fit(temperature, doy)
    return float(p_amp / p_mean * np.cos(p_phase - t_phase))


def slope_fdc(flow: np.ndarray) -> float:
    """Slope of the flow duration curve between the flows exceeded 33% and 66% of the time,
    in log space (Sawicz et al. 2011): ``(ln Q33 - ln Q66) / (0.66 - 0.33)``. ``flow``: the
    observed days. NaN when either flow is 0 or there are under 10 days."""
    if flow.size < 10:
        return float("nan")
    q33, q66 = np.quantile(flow, [0.67, 0.34])
    if q66 <= 0:
        return float("nan")
    return float((np.log(q33) - np.log(q66)) / (0.66 - 0.33))


def baseflow_index_ceh(flow: np.ndarray) -> float:
    """Baseflow index by the Institute of Hydrology smoothed-minima method (Gustard et al.
    1992), as CEH computes it: minima of consecutive 5-day blocks; a minimum is a turning
    point where 0.9 times it is below both neighbouring minima; baseflow is the straight line
    between turning points, never above the flow; BFI is its volume over the flow's, between
    the first and last turning points. ``flow``: a gap-free series. NaN with under two
    turning points."""
    blocks = flow.size // 5
    if blocks < 3:
        return float("nan")
    shaped = flow[: blocks * 5].reshape(blocks, 5)
    where = shaped.argmin(axis=1) + 5 * np.arange(blocks)
    minima = shaped.min(axis=1)
    turning = [
        int(where[i])
        for i in range(1, blocks - 1)
        if 0.9 * minima[i] < minima[i - 1] and 0.9 * minima[i] < minima[i + 1]
    ]
    if len(turning) < 2:
        return float("nan")
    span = np.arange(turning[0], turning[-1] + 1)
    base = np.minimum(np.interp(span, turning, flow[turning]), flow[span])
    total = flow[span].sum()
    return float(base.sum() / total) if total > 0 else float("nan")


def fill_gaps(flow: np.ndarray) -> np.ndarray:
    """``flow`` with inner gaps filled linearly and the missing days at either end dropped."""
    series = pd.Series(flow).interpolate(limit_area="inside")
    return series.dropna().to_numpy()


def water_years(dates: pd.DatetimeIndex) -> list[np.ndarray]:
    """Indices ``[365 or 366]`` of every complete water year (1 October to 30 September)."""
    out = []
    first = dates[0].year - 1
    for year in range(first, dates[-1].year + 1):
        start = dt.date(year, WATER_YEAR_START, 1)
        end = dt.date(year + 1, WATER_YEAR_START, 1) - dt.timedelta(days=1)
        if dates[0].date() <= start and end <= dates[-1].date():
            a = (start - dates[0].date()).days
            out.append(np.arange(a, a + (end - start).days + 1))
    return out


def _covered(flow: np.ndarray, year: np.ndarray) -> bool:
    return bool(np.isfinite(flow[year]).mean() >= MIN_YEAR_COVER)


def half_flow_date(flow: np.ndarray, dates: pd.DatetimeIndex) -> float:
    """Mean half-flow date: days after 1 October until half the water year's flow has passed
    (Court 1962), over the complete water years with flow on at least 80% of their days
    (gaps filled linearly). NaN without such a year."""
    days = []
    for year in water_years(dates):
        if not _covered(flow, year):
            continue
        q = pd.Series(flow[year]).interpolate(limit_direction="both").to_numpy()
        total = np.cumsum(q)
        if total[-1] > 0:
            days.append(int(np.searchsorted(total, total[-1] / 2.0)))
    return float(np.mean(days)) if days else float("nan")


def stream_elasticity(
    flow: np.ndarray, precipitation: np.ndarray, dates: pd.DatetimeIndex
) -> float:
    """Streamflow elasticity to precipitation (Sankarasubramanian et al. 2001): the median
    over water years of ``(Q_y - Q) / (P_y - P) * P / Q``, annual means ``Q_y``, ``P_y`` over
    the days with flow and ``Q``, ``P`` their means over the years. Needs two water years
    with flow on at least 80% of their days; NaN otherwise."""
    annual = []
    for year in water_years(dates):
        if _covered(flow, year):
            ok = year[np.isfinite(flow[year])]
            annual.append((flow[ok].mean(), precipitation[ok].mean()))
    if len(annual) < 2:
        return float("nan")
    q, p = np.array(annual).T
    dp = p - p.mean()
    keep = np.abs(dp) > 1e-9
    if not keep.any() or q.mean() <= 0:
        return float("nan")
    return float(np.median((q[keep] - q.mean()) / dp[keep] * p.mean() / q.mean()))
