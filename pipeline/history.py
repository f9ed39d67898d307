"""The catchment's weather before a window: the days a rainfall-runoff model spins up on.

A window is 90 days; a catchment's flow on its first days also depends on the rain and soil
moisture of the months before (groundwater drains for weeks). ``CatchmentHistory`` holds,
for every stored day and catchment, the catchment-mean weather read once from the store,
and gives each sample the ``days`` days before its window:

    history   [H, F] float32, physical units, NaN = before the stored period or missing

with ``F = len(HISTORY_FEATURES)``: the catchment-weighted mean over its valid patches'
land cells of precipitation (mm/day), soil moisture (m3 m-3) and temperature (degC), and
its evaporation series (mm/day). Riverflow is never part of it: a sample's history says
nothing a strategy hides. The gauge's riverflow on the same days travels beside it, apart,
as a training target only (``flow``: the model's memory may learn to predict it from the
weather, as a rainfall-runoff model learns from every day of its record; no model reads it
as an input):

    history_flow  [H] float32, mm/day, NaN = before the stored period or missing

The weights are the manifest's ``catchment_pixel_weight`` over the valid patches' pixels
(the catchment's own cells), as the model's own in-window catchment weather uses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.catchment import every_catchment_means
from pipeline.manifest import Manifest
from pipeline.schema import IMAGE_MODALITIES

HISTORY_FEATURES = (*IMAGE_MODALITIES, "evap")  # F, in this order


def catchment_series(location: str, manifest: Manifest, names: Sequence[str]) -> np.ndarray:
    """``[time, C, len(names)]`` float64 over the store's days: for an image modality, each
    catchment's daily mean over its own valid pixels, each weighted by its share of the
    catchment's area (``pipeline.catchment.every_catchment_means``; NaN where none has
    data), read a window length of days at a time (the store's chunks); for a vector
    modality, its series."""
    import zarr

    group = zarr.open_group(location, mode="r")
    pixels = torch.from_numpy(manifest.catchment_table().pixels).double()  # [C, N_valid, P]
    positions = manifest.store_positions()
    total, step = manifest.period.days, manifest.window
    series = np.empty((total, pixels.shape[0], len(names)))
    for f, name in enumerate(names):
        array = group[name]
        if name not in IMAGE_MODALITIES:
            series[:, :, f] = array[:]
            continue
        for t0 in range(0, total, step):
            block = torch.from_numpy(np.asarray(array[t0 : t0 + step])[:, positions])
            block = block.double().flatten(-2)  # [t, N_valid, P]
            mean, covered = every_catchment_means(block, torch.isfinite(block), pixels)  # [t, C]
            series[t0 : t0 + step, :, f] = torch.where(covered > 0, mean, float("nan")).numpy()
    return series


@dataclass(frozen=True)
class CatchmentHistory:
    """Every stored day's catchment weather, and the ``days`` days before a window."""

    first_day: dt.date  # the store's first day
    days: int  # H, days of history a sample gets
    series: np.ndarray  # [time, C, F], physical units, NaN = missing
    flow: np.ndarray  # [time, C] riverflow, mm/day, NaN = missing: a target, never an input

    @classmethod
    def read(cls, location: str, manifest: Manifest, days: int) -> CatchmentHistory:
        """Read the store at ``location`` once (:func:`catchment_series` of
        ``HISTORY_FEATURES``, and riverflow), keeping only the ``[time, C, F]`` means and the
        ``[time, C]`` flow in float32."""
        if days <= 0:
            raise ValueError(f"history days must be > 0, got {days}")
        series = catchment_series(location, manifest, (*HISTORY_FEATURES, "riverflow"))
        series = series.astype(np.float32)
        return cls(manifest.period.start, int(days), series[..., :-1], series[..., -1])

    def before(self, start: dt.date, catchment: int | None = None) -> np.ndarray:
        """The ``days`` days before ``start``, oldest first, for one catchment ``[days, F]``
        or (``None``) every catchment ``[days, C, F]``, in the series' dtype; NaN for days
        before the store's first day."""
        return self._days_before(self.series, start, catchment)

    def flow_before(self, start: dt.date, catchment: int) -> np.ndarray:
        """Riverflow on the ``days`` days before ``start`` for one catchment ``[days]``
        (mm/day; NaN before the store's first day or where the gauge has no value)."""
        return self._days_before(self.flow, start, catchment)

    def _days_before(self, array: np.ndarray, start: dt.date, catchment: int | None) -> np.ndarray:
        t1 = (start - self.first_day).days
        t0 = t1 - self.days
        lo = max(t0, 0)
        rows = array[lo:t1] if catchment is None else array[lo:t1, catchment]
        out = np.full((self.days, *rows.shape[1:]), np.nan, dtype=array.dtype)
        out[lo - t0 :] = rows
        return out
