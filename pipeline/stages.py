"""The loader's small stages: expand a window to samples, group, pad, shuffle, cut batches.

Per worker: read + decode (``pipeline.stream`` or ``pipeline.store``) -> ``expand_window``
(one sample per chosen catchment, as views: a window is read once and used K times) ->
``window_units`` (training: a window's samples in units that travel together, so that a
batch carries few windows) -> ``window_pool`` (training: units drawn from a bounded pool of
open windows) -> ``fixed_batches`` (exactly the planned count: extra units dropped, missing
ones padded with :class:`PadFactory`'s zero-weight samples) -> collate.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.catchment import CatchmentTable, expand
from pipeline.plan import PAD
from pipeline.schema import IMAGE_MODALITIES, VECTOR_MODALITIES
from pipeline.window import chunks

Unit = list[dict[str, Any]]  # samples of one window that travel together in a batch


def expand_window(
    window: dict[str, Any], table: CatchmentTable, catchments: Sequence[int]
) -> list[dict[str, Any]]:
    """The expand stage: ``pipeline.catchment.expand`` (views) plus ``weight = 1.0``."""
    samples = expand(window, table, catchments)
    for sample in samples:
        sample["weight"] = 1.0
    return samples


@dataclass(frozen=True)
class PadFactory:
    """Zero-weight samples in the schema: NaN data (so nothing is valid), weight 0.0.

    Their ``catchment_index`` is -1 and their ``sample_key`` is ``pad-r{rank}-w{worker}-{i}``;
    one NaN array per modality is shared by all of them (views, no copies).
    """

    days: int
    patches: int
    patch_size: int
    attributes: int
    history: tuple[int, int] | None = None  # (H, F) when samples carry a history

    def arrays(self) -> dict[str, np.ndarray]:
        p = self.patch_size
        image = np.full((self.days, self.patches, p, p), np.nan, dtype=np.float32)
        vector = np.full(self.days, np.nan, dtype=np.float32)
        extra = {}
        if self.history is not None:
            extra["history"] = np.full(self.history, np.nan, "f4")
            extra["history_flow"] = np.full(self.history[0], np.nan, "f4")
        return {
            **extra,
            **{name: image for name in IMAGE_MODALITIES},
            **{name: vector for name in VECTOR_MODALITIES},
            "static": np.full(self.attributes, np.nan, dtype=np.float32),
            "catchment_weight": np.zeros(self.patches, dtype=np.float32),
            "catchment_pixels": np.zeros((self.patches, p * p), dtype=np.float32),
            "doy": np.zeros(self.days, dtype=np.int16),
        }

    def make(self, arrays: dict[str, np.ndarray], name: str) -> dict[str, Any]:
        return {
            **arrays,
            "catchment_index": PAD,
            "start": "",
            "sample_key": name,
            "weight": 0.0,
        }


# ------------------------------------------------------------------ shuffle and batch
def window_units(samples: list[dict[str, Any]], size: int) -> list[Unit]:
    """A window's samples cut into units of ``size`` that travel together in a batch (so
    that a batch carries few windows); a shorter tail is dropped (training only)."""
    return chunks(samples, size)


def window_pool(
    windows: Iterable[list[Unit]], size: int, generator: np.random.Generator
) -> Iterator[Unit]:
    """The units of at most ``size`` open windows, each drawn from a uniformly chosen open
    window; a window that runs out is replaced by the next to arrive. At most ``size``
    windows are alive at once, however long the epoch (memory bounded by settings), and
    only the arrival order matters to the draws, so a replay gives the same order."""
    pool: list[list[Unit]] = []
    arrivals = iter(windows)
    more = True
    while True:
        while more and len(pool) < size:
            units = next(arrivals, None)
            if units is None:
                more = False
            elif units:
                pool.append(units[::-1])  # drawn from the end
        if not pool:
            return
        i = int(generator.integers(len(pool)))
        yield pool[i].pop()
        if not pool[i]:
            pool[i] = pool[-1]
            pool.pop()


def fixed_batches(
    units: Iterable[Unit],
    per_batch: int,
    count: int,
    pad: PadFactory,
    pad_prefix: str,
) -> Iterator[list[dict[str, Any]]]:
    """Exactly ``count`` batches of ``per_batch`` units (lists of samples, each as long as
    the first): extra units dropped, missing ones padded with zero-weight samples."""
    it = iter(units)
    arrays: dict[str, np.ndarray] | None = None
    padded, size = 0, None
    for _ in range(count):
        batch: list[dict[str, Any]] = []
        taken = 0
        for unit in it:
            batch += unit
            size = size or len(unit)
            taken += 1
            if taken == per_batch:
                break
        while taken < per_batch:
            arrays = pad.arrays() if arrays is None else arrays
            for _ in range(size or 1):
                batch.append(pad.make(arrays, f"{pad_prefix}-{padded}"))
                padded += 1
            taken += 1
        yield batch
