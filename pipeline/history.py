"""The catchment's weather before a window: the days a rainfall-runoff model spins up on.

A window is 90 days; a catchment's flow on its first days also depends on the rain and soil
moisture of the months before (groundwater drains for weeks). ``CatchmentHistory`` holds,
for every stored day and catchment, the catchment-mean weather read once from the store,
and gives each sample the ``days`` days before its window:

    history   [H, F] float32, physical units, NaN = before the stored period or missing

with ``F = len(HISTORY_FEATURES)``: the catchment-weighted mean over its valid patches'
land cells of precipitation (mm/day), soil moisture (m3 m-3) and temperature (degC), and
its evaporation series (mm/day). Riverflow is never part of it: a sample's history says
nothing a strategy hides. The weights are the manifest's ``catchment_patch_weight`` over the
valid patches, as the model's own in-window catchment weather uses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from pipeline.manifest import Manifest
from pipeline.schema import IMAGE_MODALITIES

HISTORY_FEATURES = (*IMAGE_MODALITIES, "evap")  # F, in this order


def _patch_means(block: np.ndarray) -> np.ndarray:
    """``[t, N, p, p]`` -> ``[t, N]`` float64: each patch's mean over its finite cells (NaN
    where it has none)."""
    x = block.astype(np.float64).reshape(block.shape[0], block.shape[1], -1)
    ok = np.isfinite(x)
    count = ok.sum(-1)
    total = np.where(ok, x, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def catchment_means(means: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``means`` ``[t, N]`` (NaN = no data) and ``weight`` ``[C, N]`` -> ``[t, C]``: each
    catchment's weighted mean over the patches with data (NaN where none of its patches has)."""
    ok = np.isfinite(means)
    num = np.where(ok, means, 0.0) @ weight.T.astype(np.float64)
    den = ok.astype(np.float64) @ weight.T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


@dataclass(frozen=True)
class CatchmentHistory:
    """Every stored day's catchment weather, and the ``days`` days before a window."""

    first_day: dt.date  # the store's first day
    days: int  # H, days of history a sample gets
    series: np.ndarray  # [time, C, F] float32, physical units, NaN = missing

    @classmethod
    def read(cls, location: str, manifest: Manifest, days: int) -> CatchmentHistory:
        """Read the store at ``location`` once, a window length of days at a time (its
        chunks), keeping only the ``[time, C, F]`` means."""
        import zarr

        if days <= 0:
            raise ValueError(f"history days must be > 0, got {days}")
        group = zarr.open_group(location, mode="r")
        weight = manifest.catchment_table().weight  # [C, N_valid]
        positions = manifest.store_positions()
        total = manifest.period.days
        series = np.empty((total, weight.shape[0], len(HISTORY_FEATURES)), dtype=np.float32)
        step = manifest.window
        for f, name in enumerate(IMAGE_MODALITIES):
            array = group[name]
            for t0 in range(0, total, step):
                block = np.asarray(array[t0 : t0 + step])[:, positions]  # [t, N_valid, p, p]
                series[t0 : t0 + step, :, f] = catchment_means(_patch_means(block), weight)
        series[:, :, len(IMAGE_MODALITIES)] = np.asarray(group["evap"][:], dtype=np.float32)
        return cls(manifest.period.start, int(days), series)

    def before(self, start: dt.date, catchment: int) -> np.ndarray:
        """``[days, F]`` float32: the ``days`` days before ``start`` for one catchment, oldest
        first; NaN for days before the store's first day."""
        t1 = (start - self.first_day).days
        t0 = t1 - self.days
        out = np.full((self.days, self.series.shape[2]), np.nan, dtype=np.float32)
        lo = max(t0, 0)
        if t1 > lo:
            out[lo - t0 :] = self.series[lo:t1, catchment]
        return out
