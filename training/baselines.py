"""Honest baselines for masked reconstruction, on exactly the model's masks.

Every baseline fills the masked values of a collated batch from what the encoder could
see (visible, valid values) and, for climatology, from the training period:

- ``interpolate_time``: per pixel (or catchment series), linear interpolation in time
  between the nearest visible valid days; at the window's edges the nearest visible day
  is carried (constant extrapolation); with no visible day at all, 0 in normalised units
  (the training mean).
- ``neighbour_mean``: for an image patch on a masked day, the mean of the valid pixels of
  the visible patches among its 8 neighbours on the patch grid, that day; where none is
  visible, the time interpolation above.
- ``Climatology``: the training period's day-of-year mean per pixel or per catchment,
  smoothed by a fit of three annual harmonics (the plain mean for a series whose record
  does not cover every month).

All work in normalised units, on tensors shaped like the batch: images ``[B, T, N, P]``,
vectors ``[B, T]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

HARMONICS = 3


def known_days(known: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each day's index, the last known day up to it and the next known day from it, all
    ``known``'s shape ``[B, T, ...]`` (bool): the last is negative where no day before is
    known, the next ``T`` or more where none after is."""
    t = known.shape[1]
    days = torch.arange(t, device=known.device).view(1, t, *([1] * (known.dim() - 2)))
    days = days.expand_as(known)
    big = t + 1
    prev_day = torch.where(known, days, torch.full_like(days, -big)).cummax(dim=1).values
    next_day = torch.where(known, days, torch.full_like(days, 2 * big))
    next_day = next_day.flip(1).cummin(dim=1).values.flip(1)
    return days, prev_day, next_day


def interpolate_time(values: Tensor, known: Tensor) -> Tensor:
    """Fill ``values [B, T, ...]`` where ``known`` is False by linear interpolation in time.

    ``known`` has ``values``' shape, or one broadcastable to it with the same number of
    dimensions (``[B, T, N, 1]``: one flag per patch and day), in which case the nearest
    known days are searched once per patch rather than once per pixel."""
    t = values.shape[1]
    days, prev_day, next_day = known_days(known)
    has_prev, has_next = prev_day >= 0, next_day < t
    prev_val = values.gather(1, prev_day.clamp(0, t - 1).expand_as(values))
    next_val = values.gather(1, next_day.clamp(0, t - 1).expand_as(values))
    span = (next_day - prev_day).clamp_min(1).to(values.dtype)
    frac = (days - prev_day).to(values.dtype) / span
    inner = prev_val + frac * (next_val - prev_val)
    filled = torch.where(has_prev & has_next, inner, torch.where(has_prev, prev_val, next_val))
    filled = torch.where(has_prev | has_next, filled, torch.zeros_like(values))
    return torch.where(known, values, filled)


def known_in_time(valid: Tensor, hidden: Tensor) -> Tensor:
    """What :func:`interpolate_time` may use: ``valid [B, T, N, P]`` and not ``hidden``
    (``[B, T, N, 1]``: masked patch-days). Where no pixel's validity changes within its
    window (the usual case: land is land), that is ``~hidden`` itself, searched once per
    patch rather than once per pixel: the fill is then the same on every valid pixel, and
    an invalid pixel's is its value, 0, as before. So the values must be 0 where invalid."""
    if bool((valid == valid[:, :1]).all()):
        return ~hidden
    return valid & ~hidden


def patch_neighbours(valid_patch_indices: Tensor, cols: int) -> Tensor:
    """``[N, N]`` float: 1 where two valid patches touch (8-neighbourhood), 0 elsewhere."""
    rows_, cols_ = valid_patch_indices // cols, valid_patch_indices % cols
    dr = (rows_[:, None] - rows_[None, :]).abs()
    dc = (cols_[:, None] - cols_[None, :]).abs()
    return ((dr <= 1) & (dc <= 1) & ~((dr == 0) & (dc == 0))).float()


def neighbour_mean(
    values: Tensor,
    valid: Tensor,
    masked: Tensor,
    adjacency: Tensor,
    fallback: Tensor | None = None,
) -> Tensor:
    """Image baseline. ``values``/``valid`` ``[B, T, N, P]``, ``masked`` ``[B, T, N]``.

    ``fallback`` is ``interpolate_time(values, valid & ~masked)`` when the caller has it."""
    seen = valid & ~masked[..., None]  # [B, T, N, P]
    adjacency = adjacency.to(values.dtype)
    sums = torch.einsum("mn,btn->btm", adjacency, torch.where(seen, values, 0.0).sum(-1))
    counts = torch.einsum("mn,btn->btm", adjacency, seen.sum(-1).to(values.dtype))
    spatial = (sums / counts.clamp_min(1))[..., None].expand_as(values)  # [B, T, N, P]
    if fallback is None:
        fallback = interpolate_time(values, seen)
    fill = torch.where((counts > 0)[..., None], spatial, fallback)
    return torch.where(masked[..., None], fill, values)


def image_fills(
    values: Tensor, valid: Tensor, masked: Tensor, adjacency: Tensor
) -> tuple[Tensor, Tensor]:
    """An image's two fills under the patch-day masks ``masked`` ``[B, T, N]``: linear
    interpolation in time between the visible days and the visible neighbouring patches'
    mean that day (the interpolation where none is visible), ``[B, T, N, P]`` each, from
    ``values``/``valid`` ``[B, T, N, P]`` (values 0 where not valid)."""
    hidden = masked[..., None]
    interp = interpolate_time(values, known_in_time(valid, hidden))
    return interp, neighbour_mean(values, valid & ~hidden, masked, adjacency, interp)


def harmonic_design(doy: np.ndarray, harmonics: int = HARMONICS) -> np.ndarray:
    """``[..., 1 + 2 * harmonics]``: a constant and sin/cos of the annual harmonics."""
    angle = 2 * math.pi * np.asarray(doy, dtype=np.float64) / 365.25
    cols = [np.ones_like(angle)]
    for k in range(1, harmonics + 1):
        cols += [np.sin(k * angle), np.cos(k * angle)]
    return np.stack(cols, axis=-1)


MONTH_DAYS = 5  # valid days a calendar month needs before harmonics may be fitted


class Climatology:
    """Smoothed day-of-year mean per series, fitted by least squares on annual harmonics.

    ``fit`` accumulates normal equations block by block (bounded memory), NaN-aware, so it
    can run over decades of a Zarr store: per series, values ``[T, S]`` and ``doy [T]``.
    Each series gets what its own record supports: ``harmonics`` annual harmonics where
    every calendar month holds at least ``MONTH_DAYS`` valid days, else the plain mean
    (harmonics fitted on part of a year extrapolate wildly into the months without data:
    a gauge with no summer record, or a training period shorter than a year).
    """

    def __init__(self, series: int, harmonics: int = HARMONICS) -> None:
        self.harmonics = harmonics
        k = 1 + 2 * harmonics
        self.xtx = np.zeros((series, k, k))
        self.xty = np.zeros((series, k))
        self.months = np.zeros((series, 12), dtype=np.int64)  # valid days per month
        self._coefficients: np.ndarray | None = None

    def fit(self, values: np.ndarray, doy: np.ndarray) -> Climatology:
        x = harmonic_design(doy, self.harmonics)  # [T, K]
        v = np.asarray(values, dtype=np.float64).reshape(len(doy), -1)  # [T, S]
        ok = np.isfinite(v)
        v = np.where(ok, v, 0.0)
        k = x.shape[1]
        outer = (x[:, :, None] * x[:, None, :]).reshape(len(x), k * k)  # [T, K*K]
        okf = ok.astype(np.float64)
        self.xtx += (okf.T @ outer).reshape(-1, k, k)  # one matrix product, not an einsum
        self.xty += v.T @ x
        month = np.minimum((np.asarray(doy) - 1) * 12 // 366, 11)  # [T], 0..11
        self.months += np.rint(okf.T @ np.eye(12)[month]).astype(np.int64)
        self._coefficients = None
        return self

    def supported(self) -> np.ndarray:
        """``[S]`` bool: the series whose record covers every month (harmonics fitted)."""
        return (self.months >= MONTH_DAYS).all(axis=1)

    def coefficients(self) -> np.ndarray:
        """``[S, K]``; a series without full-year support gets its mean alone (harmonic
        coefficients 0); one without data gets zeros (the training mean in normalised
        units). Solved once after the last ``fit``, not at every prediction."""
        if self._coefficients is None:
            ridge = 1e-6 * np.eye(self.xtx.shape[-1])
            full = np.linalg.solve(self.xtx + ridge, self.xty[..., None])[..., 0]  # [S, K]
            mean = np.zeros_like(full)
            count = self.xtx[:, 0, 0]  # valid values per series
            np.divide(self.xty[:, 0], count, out=mean[:, 0], where=count > 0)
            self._coefficients = np.where(self.supported()[:, None], full, mean)
        return self._coefficients

    def predict(self, doy: np.ndarray) -> np.ndarray:
        """``[..., S]`` for day-of-year values ``doy [...]``."""
        return harmonic_design(doy, self.harmonics) @ self.coefficients().T
