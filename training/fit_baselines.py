"""The baselines fitted on the training period of a dataset's store.

- :func:`fit_climatology`: per valid pixel and per catchment, in normalised units
  (``training.baselines.Climatology``);
- :func:`fit_regressions`: the rainfall-runoff regressions (``training.regression``), per
  catchment and pooled, on rain and evaporation and on rain, evaporation and soil moisture
  (:data:`REGRESSIONS`), on the training windows, from the catchment means of the full
  (unmasked) images, the evaporation and the flow, in physical units.

Held-out catchments' flow is never used: they have no per-catchment regression, the pooled
one is fitted without them, and their riverflow climatology is the other catchments'.
The store is read one window of days at a time (bounded memory).
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np

from pipeline.history import CatchmentHistory, catchment_series
from pipeline.manifest import Manifest
from pipeline.normalize import Normalizer
from pipeline.schema import IMAGE_MODALITIES, MODALITIES, STORE
from pipeline.store import open_store
from training.baselines import Climatology
from training.regression import LAGS, RAIN_EVAP, WITH_SOIL, LagRegression

# the regressions evaluation scores riverflow against: name -> (pooled, the inputs)
REGRESSIONS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "regression": (False, RAIN_EVAP),
    "pooled": (True, RAIN_EVAP),
    "regression_soil": (False, WITH_SOIL),
    "pooled_soil": (True, WITH_SOIL),
}


def training_rows(store, manifest: Manifest) -> np.ndarray:
    """Indices of the store's days in the training split."""
    train = manifest.split("train")
    days = store["time"].to_index()
    return np.flatnonzero(
        (days >= train.start.isoformat()) & (days <= f"{train.end.isoformat()}T23:59")
    )


def _training_flow(data: Path, manifest: Manifest) -> tuple[np.ndarray, np.ndarray, float]:
    """The store's riverflow over the training period ``[days, C]`` (mm/day), the gauged
    catchments' indices, and their pooled standard deviation (mm/day)."""
    store = open_store(data)
    flow = store["riverflow"].values[training_rows(store, manifest)]  # [days, C]
    gauged = np.setdiff1d(np.arange(flow.shape[1]), holdout_indices(manifest))
    std = float(np.nanstd(flow[:, gauged]))
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"{data}: the training period has no riverflow spread to scale by")
    return flow, gauged, std


def training_flow_std(data: Path, manifest: Manifest) -> float:
    """The standard deviation (mm/day) of the gauged catchments' riverflow over the
    training period, pooled: the scale of ``LossConfig.flow_units = "physical"``."""
    return _training_flow(data, manifest)[2]


def training_flow_stds(data: Path, manifest: Manifest) -> np.ndarray:
    """Each catchment's standard deviation (mm/day) of its riverflow over the training
    period, ``[C]`` float32 in the store's order: the scale of ``LossConfig.flow_units =
    "catchment"``. A held-out catchment, or one without a spread, gets the pooled value
    (training never scores a held-out one)."""
    flow, gauged, std = _training_flow(data, manifest)
    stds = np.full(flow.shape[1], std, dtype=np.float32)
    with warnings.catch_warnings():  # a catchment without a valid day: NaN, replaced below
        warnings.simplefilter("ignore", RuntimeWarning)
        own = np.nanstd(flow[:, gauged], axis=0)
    usable = np.isfinite(own) & (own > 0)
    stds[gauged[usable]] = own[usable]
    return stds


def fit_climatology(data: Path, manifest: Manifest, norm: Normalizer) -> dict[str, Climatology]:
    """Per valid pixel and per catchment, in normalised units, over the training period;
    held-out catchments' riverflow climatology is the mean of the others'."""
    store = open_store(data)
    positions = manifest.store_positions()
    rows = training_rows(store, manifest)
    doy = store["time"].to_index().day_of_year.to_numpy()
    held = holdout_indices(manifest)
    clim: dict[str, Climatology] = {}
    for name in MODALITIES:
        array = store[name]
        series = None
        for block in np.array_split(rows, max(1, len(rows) // manifest.window)):
            values = array.isel(time=block).values  # [t, N_store, p, p] or [t, C]
            if name in IMAGE_MODALITIES:
                values = values[:, positions]
            elif name == "riverflow" and held.size:
                values = values.astype(np.float64)
                values[:, held] = np.nan
            values = norm.normalize(name, values.astype(np.float64).reshape(len(block), -1))
            series = series or Climatology(values.shape[1])
            series.fit(values, doy[block])
        if name == "riverflow" and held.size:
            gauged = np.setdiff1d(np.arange(series.xty.shape[0]), held)
            coef = series.coefficients()
            coef[held] = coef[gauged].mean(axis=0)  # ungauged: the others' climatology
        clim[name] = series
    return clim


def holdout_indices(manifest: Manifest) -> np.ndarray:
    """Indices of the catchments held out of training."""
    held = set(manifest.catchments.holdout)
    return np.array([i for i, g in enumerate(manifest.catchments.ids) if g in held], dtype=int)


def fit_regressions(
    data: Path, manifest: Manifest, history_days: int = 0
) -> dict[str, LagRegression]:
    """The lag regressions of :data:`REGRESSIONS` by name, fitted on the training windows
    (the manifest's) of the gauged catchments, from the catchments' rain, evaporation and
    soil moisture series (``pipeline.history.catchment_series``, the store read once for
    all of them). Lags before a window read the ``history_days`` days before it (at most
    ``LAGS``; the training mean before the store's first day and beyond), as the
    evaluation's samples with that history do."""
    table = manifest.catchment_table()
    lead, days = min(LAGS, history_days), manifest.window
    names = tuple(dict.fromkeys(n for _, inputs in REGRESSIONS.values() for n in inputs))
    location = str(Path(data) / STORE)
    series = catchment_series(location, manifest, (*names, "riverflow"))  # [time, C, n + 1]
    # lead + T days a window, the series as features
    span = CatchmentHistory(manifest.period.start, lead + days, series, series[..., -1])
    starts = manifest.window_starts("train")
    if not starts:
        raise ValueError(f"{data}: the training split has no window to fit the regressions on")
    x = np.stack([span.before(s + dt.timedelta(days=days)) for s in starts])  # [W, lead+T, C, n+1]
    flow = x[:, lead:, :, -1]  # [W, T, C]
    window = {n: x[:, lead:, :, i] for i, n in enumerate(names)}  # [W, T, C] each
    prior = {n: x[:, :lead, :, i] for i, n in enumerate(names)}  # [W, lead, C] each
    gauged = np.setdiff1d(np.arange(len(table.ids)), holdout_indices(manifest))
    fits = {}
    for name, (pooled, inputs) in REGRESSIONS.items():
        before = [prior[n] for n in inputs] if lead else None
        model = LagRegression(pooled, inputs)
        fits[name] = model.fit([window[n] for n in inputs], flow, table.static, gauged, before)
    return fits
