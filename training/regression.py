"""Rainfall-runoff baselines: riverflow regressed on lagged catchment series.

The simple model a hydrologist tries first: the day's flow is a linear function of some of
the catchment's daily series on the day and each of the ``LAGS`` days before (the unit
hydrograph of a linear reservoir cascade), plus a constant. The series are an ordered tuple
of inputs (``LagRegression.names``): evaluation fits rain and evaporation (``"precip"``,
``"evap"``, mm/day), and rain, evaporation and soil moisture (``"soil"``, m3 m-3: the
catchment's wetness, which its last ``LAGS`` days of rain tell only in part). With ``n``
inputs the coefficients are a constant, then each input's ``LAGS + 1`` lags in the
inputs' order, then (pooled) one per static attribute. Two versions:

- per catchment (``pooled=False``): ``1 + n (LAGS + 1)`` coefficients per catchment, fitted
  on its training period; it needs the catchment's flow record, so it is no baseline for a
  catchment held out of training;
- pooled (``pooled=True``): one set of coefficients for every training catchment, plus
  one per static attribute: the baseline for catchments never seen in training
  (prediction in ungauged basins).

Like the model, a regression sees one window at a time: a lag that reaches before the
window's first day takes the catchment's value of that input on that day when the samples
carry their history (``pipeline.history``, as a model trained with ``history_days`` sees
it), else the catchment's training mean of that input. The inputs are the catchment means
of what the strategy leaves visible (``training.scoring.regression_inputs``); all in
physical units, shapes ``[W, T, C]`` per input to fit, ``[B, T]`` per input to predict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

LAGS = 30
RIDGE = 1e-6  # relative to the normal equations' diagonal: only against singular matrices
RAIN_EVAP = ("precip", "evap")  # the classic pair: rain and potential evaporation, mm/day
WITH_SOIL = (*RAIN_EVAP, "soil")  # and the catchment's soil moisture, m3 m-3


def lagged(
    x: np.ndarray, fill: np.ndarray, lags: int = LAGS, before: np.ndarray | None = None
) -> np.ndarray:
    """``x [..., T]`` -> ``[..., T, lags + 1]``: column k is ``x`` k days earlier. Days
    before the window take ``before [..., D]`` (the D days before it, oldest first; the
    last ``lags`` read) where given and finite, else ``fill`` (broadcast to ``x[..., 0]``)."""
    t = x.shape[-1]
    fill = np.broadcast_to(np.asarray(fill, dtype=np.float64), x.shape[:-1])[..., None]
    known = np.zeros((*x.shape[:-1], 0)) if before is None else before[..., -lags:]
    unknown = np.full((*x.shape[:-1], lags - known.shape[-1]), np.nan)
    before = np.concatenate([unknown, known], axis=-1)  # [..., lags]
    before = np.where(np.isfinite(before), before, fill)
    full = np.concatenate([before, x], axis=-1).astype(np.float64)  # [..., lags + T]
    out = np.empty((*x.shape, lags + 1), dtype=np.float64)
    for k in range(lags + 1):
        out[..., k] = full[..., lags - k : lags - k + t]
    return out


def design(
    inputs: Sequence[np.ndarray],
    means: np.ndarray,
    before: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """The regression's inputs: the series ``inputs`` (``[..., T]`` each, physical units),
    their training means ``means [..., len(inputs)]`` and optionally each one's days before
    the window ``before`` (``[..., D]`` each, oldest first, the last ``LAGS`` read) ->
    ``[..., T, 1 + len(inputs) (LAGS + 1)]``: a constant, then each input's lags 0..LAGS."""
    prior = [None] * len(inputs) if before is None else list(before)
    if len(prior) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(prior)} series of the days before")
    ones = np.ones((*inputs[0].shape, 1))
    pairs = enumerate(zip(inputs, prior, strict=True))
    lags = [lagged(x, means[..., i], before=b) for i, (x, b) in pairs]
    return np.concatenate([ones, *lags], axis=-1)


def solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on the rows of ``x [R, F]``, ``y [R]`` where ``y`` is finite."""
    ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
    x, y = x[ok], y[ok]
    xtx = x.T @ x
    xtx += RIDGE * np.diag(np.diag(xtx).clip(min=1.0))
    return np.linalg.solve(xtx, x.T @ y)


def training_means(x: np.ndarray) -> np.ndarray:
    """Each catchment's training mean of each input, ``x [W, T, C, n]`` -> ``[C, n]``
    (NaN left out). A catchment without a single value of an input (one that covers no
    valid patch: its images are never seen) takes the mean over the catchments that have one,
    so that its lags before the window are never NaN."""
    finite = np.isfinite(x)
    count = finite.sum(axis=(0, 1))  # [C, F]
    total = np.where(finite, x, 0.0).sum(axis=(0, 1))
    overall = total.sum(0) / np.maximum(count.sum(0), 1)  # [F]
    return np.where(count > 0, total / np.maximum(count, 1), overall)


class LagRegression:
    """Riverflow from the lags of the input series ``names`` (in this order): fitted on
    training windows ``[W, T, C]`` of each input and the flow, predicts a window."""

    def __init__(self, pooled: bool, names: tuple[str, ...] = RAIN_EVAP) -> None:
        self.pooled = pooled
        self.names = tuple(names)  # the inputs, in the coefficients' order
        self.means: np.ndarray | None = None  # [C, n]: each input's training mean
        self.coef: np.ndarray | None = None  # [C, F] per catchment, or [F + A] pooled
        self.static_mean: np.ndarray | None = None  # [A]

    def fit(
        self,
        inputs: Sequence[np.ndarray],
        flow: np.ndarray,
        static: np.ndarray,
        catchments: np.ndarray,
        before: Sequence[np.ndarray] | None = None,
    ) -> LagRegression:
        """``inputs`` (one ``[W, T, C]`` a name, in ``names``' order), ``flow [W, T, C]``
        (mm/day), ``static [C, A]`` (physical units, NaN missing), optionally each input's
        days before each window ``before`` (``[W, D, C]`` each, the last ``LAGS`` read);
        fitted on the ``catchments`` only."""
        self._check(inputs, before)
        self.means = training_means(np.stack(inputs, axis=-1))
        prior = None if before is None else [np.moveaxis(b, -1, 0) for b in before]
        x = design(
            [np.moveaxis(a, -1, 0) for a in inputs], self.means[:, None, :], prior
        )  # [C, W, T, F]
        y = np.moveaxis(flow, -1, 0)  # [C, W, T]
        f = x.shape[-1]
        if not self.pooled:
            self.coef = np.zeros((flow.shape[-1], f))
            for c in catchments:
                self.coef[c] = solve(x[c].reshape(-1, f), y[c].reshape(-1))
            return self
        self.static_mean = np.nanmean(static[catchments], axis=0) if static.size else np.zeros(0)
        s = self._static(static)[catchments]  # [C', A]
        rows = x[catchments]  # [C', W, T, F]
        s = np.broadcast_to(s[:, None, None, :], (*rows.shape[:-1], s.shape[-1]))
        both = np.concatenate([rows, s], axis=-1)
        self.coef = solve(both.reshape(-1, both.shape[-1]), y[catchments].reshape(-1))
        return self

    def _check(self, inputs: Sequence, before: Sequence | None) -> None:
        """One series (and one of the days before, if any) per input name."""
        for what, given in (("inputs", inputs), ("before", before)):
            if given is not None and len(given) != len(self.names):
                raise ValueError(
                    f"{what}: {len(given)} series for the {len(self.names)} inputs {self.names}"
                )

    def _static(self, static: np.ndarray) -> np.ndarray:
        """Signed log of the attributes, a missing one as the training catchments' mean."""
        s = np.where(np.isfinite(static), static, self.static_mean)
        return np.sign(s) * np.log1p(np.abs(s))

    def predict(
        self,
        inputs: Sequence[Tensor],
        catchment: Tensor,
        static: Tensor | None,
        before: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Flow ``[B, T]`` (mm/day, never negative) of each sample's window from its
        ``inputs`` (one ``[B, T]`` a name, in ``names``' order, physical units), catchment
        index ``[B]``, static attributes ``[B, A]`` (NaN where missing) and optionally each
        input's days before the window ``before`` (``[B, D]`` each, oldest first)."""
        self._check(inputs, before)
        c = catchment.clamp_min(0).numpy()
        prior = None if before is None else [b.double().numpy() for b in before]
        x = design([a.double().numpy() for a in inputs], self.means[c], prior)  # [B, T, F]
        if self.pooled:
            a = np.zeros((len(c), 0)) if static is None else static.double().numpy()
            a = self._static(a)
            s = np.broadcast_to(a[:, None, :], (*x.shape[:-1], a.shape[-1]))
            flow = np.concatenate([x, s], axis=-1) @ self.coef
        else:
            flow = np.einsum("btf,bf->bt", x, self.coef[c])
        return torch.from_numpy(np.clip(flow, 0.0, None)).float()
