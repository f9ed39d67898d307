"""From a stored window to the loader's samples, one per (window, catchment).

A window (one shard sample, or 90 days cut from the Zarr store) is read once and expanded
to one sample per catchment as views: the images are shared, the vectors are the
catchment's column. Windows are read by ``read_shard`` (re-exported from
``pipeline.sources``: the loader's strict reader, so that faults are reported by shard and
member). Each sample follows DESIGN.md's schema, in physical units, NaN kept:

    precip, soil, temp   [T, N_valid, p, p] float32 (views of the window's arrays)
    evap, riverflow      [T] float32
    static               [A] float32, catchment_weight [N_valid] float32
    catchment_index int, doy [T] int16, start ISO date, sample_key "YYYYMMDD-{gauge_id}"
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.dataset import IMAGE_VARS, VECTOR_VARS, sample_key
from pipeline.sources import read_shard


@dataclass(frozen=True)
class CatchmentTable:
    """The catchments of a dataset, from its manifest."""

    ids: list[str]  # [C] gauge ids
    static: np.ndarray  # [C, A] float32, NaN = missing
    weight: np.ndarray  # [C, N_valid] float32, share of the catchment's area per valid patch

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> CatchmentTable:
        c = manifest["catchments"]
        valid = {p: i for i, p in enumerate(manifest["valid_patch_indices"])}
        weight = np.zeros((len(c["ids"]), len(valid)), dtype=np.float32)
        for row, shares in enumerate(c["catchment_patch_weight"]):
            for patch, share in shares.items():
                if int(patch) in valid:
                    weight[row, valid[int(patch)]] = share
        static = np.array(
            [[np.nan if v is None else v for v in row] for row in c["static"]], dtype=np.float32
        ).reshape(len(c["ids"]), len(c["static_attributes"]))
        return cls(list(c["ids"]), static, weight)


def expand(
    window: dict[str, Any], table: CatchmentTable, catchments: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """One sample per catchment (or per index in ``catchments``) of a window, as views."""
    start = dt.date.fromisoformat(window["meta"]["start"])
    days = window[IMAGE_VARS[0]].shape[0]
    doy = np.array(
        [(start + dt.timedelta(days=i)).timetuple().tm_yday for i in range(days)], dtype=np.int16
    )
    samples = []
    for c in range(len(table.ids)) if catchments is None else catchments:
        sample = {name: window[name] for name in IMAGE_VARS}
        sample.update({name: window[name][:, c] for name in VECTOR_VARS})
        sample.update(
            static=table.static[c],
            catchment_weight=table.weight[c],
            catchment_index=int(c),
            doy=doy,
            start=start.isoformat(),
            sample_key=sample_key(start, table.ids[c]),
        )
        samples.append(sample)
    return samples


__all__ = ["CatchmentTable", "expand", "read_shard"]
