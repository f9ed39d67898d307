"""From a stored window to the loader's samples, one per (window, catchment).

A window (one shard sample, or ``window`` days cut from the Zarr store) is read once and
expanded to one sample per catchment as views: the images are shared, the vectors are the
catchment's column. Each sample follows the sample schema (``docs/dataset.md``), in
physical units, NaN kept::

    precip, soil, temp   [T, N_valid, p, p] float32 (views of the window's arrays)
    evap, riverflow      [T] float32
    static               [A] float32, catchment_weight [N_valid] float32
    catchment_pixels     [N_valid, p*p] float32: the catchment's area share per pixel
    catchment_index int, doy [T] int16, start ISO date, sample_key "YYYYMMDD-{gauge_id}"
    history              [H, F] float32, only when the table has one (``pipeline.history``)
    history_flow         [H] float32, riverflow on those days: a training target only
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from pipeline.schema import IMAGE_MODALITIES, VECTOR_MODALITIES, sample_key

if TYPE_CHECKING:
    from pipeline.history import CatchmentHistory


@dataclass(frozen=True)
class CatchmentTable:
    """The catchments of a dataset as arrays (``Manifest.catchment_table()`` builds it)."""

    ids: list[str]  # [C] gauge ids
    static: np.ndarray  # [C, A] float32, NaN = missing
    weight: np.ndarray  # [C, N_valid] float32, share of the catchment's area per valid patch
    pixels: np.ndarray  # [C, N_valid, P] float32, its share per pixel (sums to ``weight``)
    history: CatchmentHistory | None = None  # the weather before each window, if wanted


def catchment_means(values: Tensor, valid: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Each sample's catchment mean of an image over the catchment's own valid pixels, each
    weighted by its share of the catchment's area: the catchment average at the grid's
    resolution, as CAMELS-GB's catchment rainfall is. ``values``/``valid`` ``[B, ..., N, P]``
    (invalid values may hold anything), ``pixels [B, N, P]`` (``CatchmentTable.pixels`` of
    the sample's catchment) -> the mean (0 where no pixel of the catchment is valid) and the
    share of the catchment's area it covers, ``[B, ...]`` each."""
    return _pixel_average("b...np,bnp->b...", values, valid, pixels)


def every_catchment_means(values: Tensor, valid: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`catchment_means` of every catchment on the same days: ``values``/``valid``
    ``[T, N, P]``, ``pixels [C, N, P]`` -> ``[T, C]`` each."""
    return _pixel_average("tnp,cnp->tc", values, valid, pixels)


def _pixel_average(
    spec: str, values: Tensor, valid: Tensor, pixels: Tensor
) -> tuple[Tensor, Tensor]:
    x = torch.where(valid, values, 0.0).to(pixels.dtype)
    w = valid.to(pixels.dtype)
    total, covered = torch.einsum(spec, x, pixels), torch.einsum(spec, w, pixels)
    return total / covered.clamp_min(1e-9), covered


def expand(
    window: dict[str, Any], table: CatchmentTable, catchments: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """One sample per catchment (or per index in ``catchments``) of a window, as views."""
    start = dt.date.fromisoformat(window["meta"]["start"])
    days = window[IMAGE_MODALITIES[0]].shape[0]
    doy = np.array(
        [(start + dt.timedelta(days=i)).timetuple().tm_yday for i in range(days)], dtype=np.int16
    )
    samples = []
    for c in range(len(table.ids)) if catchments is None else catchments:
        sample = {name: window[name] for name in IMAGE_MODALITIES}
        sample.update({name: window[name][:, c] for name in VECTOR_MODALITIES})
        sample.update(
            static=table.static[c],
            catchment_weight=table.weight[c],
            catchment_pixels=table.pixels[c],
            catchment_index=int(c),
            doy=doy,
            start=start.isoformat(),
            sample_key=sample_key(start, table.ids[c]),
        )
        if table.history is not None:
            sample["history"] = table.history.before(start, c)
            sample["history_flow"] = table.history.flow_before(start, c)
        samples.append(sample)
    return samples
