"""Rainfall-runoff baselines: riverflow regressed on the catchment's rain and evaporation.

The simple model a hydrologist tries first: the day's flow is a linear function of the
catchment's rain and potential evaporation on the day and each of the ``LAGS`` days before
(the unit hydrograph of a linear reservoir cascade), plus a constant. Two versions:

- per catchment (``pooled=False``): ``1 + 2 (LAGS + 1)`` coefficients per catchment, fitted
  on its training period; it needs the catchment's flow record, so it is no baseline for a
  catchment held out of training;
- pooled (``pooled=True``): one set of coefficients for every training catchment, plus
  one per static attribute: the baseline for catchments never seen in training
  (prediction in ungauged basins).

Like the model, a regression sees one window at a time: a lag that reaches before the
window's first day takes the catchment's rain and evaporation of that day when the samples
carry their history (``pipeline.history``, as a model trained with ``history_days`` sees
it), else the catchment's training mean of that input. The inputs
are the catchment means of what the strategy leaves visible (``catchment_mean``); all in
physical units (mm/day), shapes ``[..., T]`` per catchment or sample.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pipeline.catchment import patch_means, weighted_mean

LAGS = 30
RIDGE = 1e-6  # relative to the normal equations' diagonal: only against singular matrices


def catchment_mean(values: Tensor, valid: Tensor, weight: Tensor) -> Tensor:
    """The catchment's daily mean of an image: ``values``/``valid`` ``[B, T, N, P]``,
    ``weight [B, N]`` (share of the catchment's area per patch) -> ``[B, T]``: the
    weighted mean of the patch means over valid pixels (patches without one left out;
    0 where no patch of the catchment has any)."""
    return weighted_mean(*patch_means(values, valid), weight[:, None, :])


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
    rain: np.ndarray,
    pet: np.ndarray,
    means: np.ndarray,
    before: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The regression's inputs: ``rain``, ``pet`` ``[..., T]``, the training means
    ``means [..., 2]`` and optionally the rain and pet of up to ``LAGS`` days before the
    window ``before`` (``[..., D]`` each, oldest first) -> ``[..., T, 1 + 2 (LAGS + 1)]``
    (a constant, then the lags)."""
    ones = np.ones((*rain.shape, 1))
    rb, pb = (None, None) if before is None else before
    return np.concatenate(
        [ones, lagged(rain, means[..., 0], before=rb), lagged(pet, means[..., 1], before=pb)],
        axis=-1,
    )


def solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on the rows of ``x [R, F]``, ``y [R]`` where ``y`` is finite."""
    ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
    x, y = x[ok], y[ok]
    xtx = x.T @ x
    xtx += RIDGE * np.diag(np.diag(xtx).clip(min=1.0))
    return np.linalg.solve(xtx, x.T @ y)


def training_means(x: np.ndarray) -> np.ndarray:
    """Each catchment's training mean of each input, ``x [W, T, C, F]`` -> ``[C, F]``
    (NaN left out). A catchment without a single value of an input (one that covers no
    valid patch: its rain is never seen) takes the mean over the catchments that have one,
    so that its lags before the window are never NaN."""
    finite = np.isfinite(x)
    count = finite.sum(axis=(0, 1))  # [C, F]
    total = np.where(finite, x, 0.0).sum(axis=(0, 1))
    overall = total.sum(0) / np.maximum(count.sum(0), 1)  # [F]
    return np.where(count > 0, total / np.maximum(count, 1), overall)


class LagRegression:
    """Fitted on training windows ``[W, T, C]`` of rain, pet and flow; predicts a window."""

    def __init__(self, pooled: bool) -> None:
        self.pooled = pooled
        self.means: np.ndarray | None = None  # [C, 2]: rain, pet training means
        self.coef: np.ndarray | None = None  # [C, F] per catchment, or [F + A] pooled
        self.static_mean: np.ndarray | None = None  # [A]

    def fit(
        self,
        rain: np.ndarray,
        pet: np.ndarray,
        flow: np.ndarray,
        static: np.ndarray,
        catchments: np.ndarray,
        before: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> LagRegression:
        """``rain``, ``pet``, ``flow`` ``[W, T, C]``, ``static [C, A]`` (physical units, NaN
        missing), optionally the rain and pet of the days before each window ``before``
        (``[W, D, C]`` each, the last ``LAGS`` read); fitted on the ``catchments`` only."""
        self.means = training_means(np.stack([rain, pet], axis=-1))
        prior = None if before is None else tuple(np.moveaxis(b, -1, 0) for b in before)
        x = design(
            np.moveaxis(rain, -1, 0), np.moveaxis(pet, -1, 0), self.means[:, None, :], prior
        )  # [C, W, T, F]
        y = np.moveaxis(flow, -1, 0)  # [C, W, T]
        f = x.shape[-1]
        if not self.pooled:
            self.coef = np.zeros((rain.shape[-1], f))
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

    def _static(self, static: np.ndarray) -> np.ndarray:
        """Signed log of the attributes, a missing one as the training catchments' mean."""
        s = np.where(np.isfinite(static), static, self.static_mean)
        return np.sign(s) * np.log1p(np.abs(s))

    def predict(
        self,
        rain: Tensor,
        pet: Tensor,
        catchment: Tensor,
        static: Tensor | None,
        before: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Flow ``[B, T]`` (mm/day, never negative) of each sample's window from its rain and
        pet ``[B, T]``, catchment index ``[B]``, static attributes ``[B, A]`` (NaN where
        missing) and optionally the rain and pet of the days before it ``[B, D]``."""
        c = catchment.clamp_min(0).numpy()
        prior = None if before is None else tuple(b.double().numpy() for b in before)
        x = design(rain.double().numpy(), pet.double().numpy(), self.means[c], prior)
        if self.pooled:
            a = np.zeros((len(c), 0)) if static is None else static.double().numpy()
            a = self._static(a)
            s = np.broadcast_to(a[:, None, :], (*x.shape[:-1], a.shape[-1]))
            flow = np.concatenate([x, s], axis=-1) @ self.coef
        else:
            flow = np.einsum("btf,bf->bt", x, self.coef[c])
        return torch.from_numpy(np.clip(flow, 0.0, None)).float()
