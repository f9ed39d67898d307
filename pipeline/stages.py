"""The loader's small stages: expand a window to samples, pad, shuffle, cut batches.

Per worker: read + decode (``pipeline.stream`` or ``pipeline.store``) -> ``expand_window``
(one sample per chosen catchment, as views: a window is read once and used K times) ->
``shuffle_buffer`` (training) -> ``fixed_batches`` (exactly the planned count: extra samples
dropped, missing ones padded with :class:`PadFactory`'s zero-weight samples) -> collate.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.catchment import CatchmentTable, expand
from pipeline.plan import PAD
from pipeline.schema import IMAGE_MODALITIES, VECTOR_MODALITIES


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

    def arrays(self) -> dict[str, np.ndarray]:
        p = self.patch_size
        image = np.full((self.days, self.patches, p, p), np.nan, dtype=np.float32)
        vector = np.full(self.days, np.nan, dtype=np.float32)
        return {
            **{name: image for name in IMAGE_MODALITIES},
            **{name: vector for name in VECTOR_MODALITIES},
            "static": np.full(self.attributes, np.nan, dtype=np.float32),
            "catchment_weight": np.zeros(self.patches, dtype=np.float32),
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
def shuffle_buffer(
    samples: Iterable[dict[str, Any]], capacity: int, generator: np.random.Generator
) -> Iterator[dict[str, Any]]:
    """Shuffle with a buffer of ``capacity`` samples (webdataset's scheme, seeded).

    Once the buffer is full, each arriving sample sends out a uniformly chosen one; at the
    end the rest leave in a random order. Only the arrival count matters to the draws, so
    a replay with the same arrivals gives the same order.
    """
    buf: list[dict[str, Any]] = []
    for sample in samples:
        buf.append(sample)
        if len(buf) >= capacity:
            i = int(generator.integers(len(buf)))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    order = generator.permutation(len(buf))
    for i in order:
        yield buf[int(i)]


def fixed_batches(
    samples: Iterable[dict[str, Any]],
    batch_size: int,
    count: int,
    pad: PadFactory,
    pad_prefix: str,
) -> Iterator[list[dict[str, Any]]]:
    """Exactly ``count`` batches of ``batch_size``: extra samples dropped, missing ones padded."""
    it = iter(samples)
    arrays: dict[str, np.ndarray] | None = None
    padded = 0
    for _ in range(count):
        batch = []
        for sample in it:
            batch.append(sample)
            if len(batch) == batch_size:
                break
        while len(batch) < batch_size:
            arrays = pad.arrays() if arrays is None else arrays
            batch.append(pad.make(arrays, f"{pad_prefix}-{padded}"))
            padded += 1
        yield batch
