"""The loader's small stages: epoch plans, catchment expansion, shuffle buffer, batching.

Every choice is a pure function of its key, drawn from a generator seeded by
``pipeline.masking.new_generator`` (stable across processes), so that an epoch's plan is a
deterministic function of (seed, epoch, rank, world size, workers) and a resumed run can
rebuild it and skip what was consumed:

- which K catchments a window expands to: (seed, epoch, window key);
- the order of the windows of an epoch: (seed, epoch); of shards when streaming;
- the shuffle buffer: (seed, epoch, rank, worker) for streaming, (seed, epoch, rank,
  block) for the Zarr source, whose order therefore does not depend on the workers.

A *slot* is one (rank, worker) pair; slot ``rank * workers + worker``. Training gives every
slot the same number of windows (the epoch's remainder is dropped, a different one each
epoch) and so the same number of batches; evaluation gives every window exactly once and
pads every slot (or rank) to the same number of batches with zero-weight samples.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from pipeline.collate import MultiScaleMaskedCollate
from pipeline.dataset import IMAGE_VARS, VECTOR_VARS, balanced_ranges, window_key
from pipeline.dataset import window_starts as dataset_window_starts
from pipeline.masking import new_generator
from pipeline.samples import CatchmentTable, expand

PAD = -1  # catchment_index (and plan entry) of a padding sample


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def worker_share(total: int, worker: int, workers: int) -> int:
    """How many of ``total`` round-robin items (item j to worker j % workers) are ``worker``'s."""
    return max(0, ceil_div(total - worker, workers))


# ------------------------------------------------------------------ expand
def choose_catchments(
    n_catchments: int, k: int, seed: int, epoch: int, key: str, train: bool
) -> list[int]:
    """Catchments a window expands to: all, or (training) K drawn by (seed, epoch, key)."""
    if not train or k <= 0 or k >= n_catchments:
        return list(range(n_catchments))
    pick = new_generator(seed, "catchments", epoch, key).choice(n_catchments, size=k, replace=False)
    return sorted(int(c) for c in pick)


def samples_per_window(n_catchments: int, k: int, train: bool) -> int:
    return n_catchments if not train or k <= 0 or k >= n_catchments else k


def expand_window(
    window: dict[str, Any], table: CatchmentTable, catchments: Sequence[int]
) -> list[dict[str, Any]]:
    """The expand stage: ``pipeline.samples.expand`` (views) plus ``weight = 1.0``."""
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
            **{name: image for name in IMAGE_VARS},
            **{name: vector for name in VECTOR_VARS},
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


# ------------------------------------------------------------------ streaming plan
@dataclass(frozen=True)
class StreamPlan:
    """One slot's share of an epoch of shards.

    ``pieces``: ``(shard index, first window, windows)`` to read, in order; ``batches``: the
    batches this slot yields (the same for every slot); ``windows``: its window count.
    """

    pieces: list[tuple[int, int, int]]
    windows: int
    batches: int


def stream_plan(
    counts: Sequence[int],
    *,
    train: bool,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    worker: int,
    workers: int,
    per_window: int,
    batch_size: int,
) -> StreamPlan:
    """Which windows of which shards slot (rank, worker) reads in ``epoch``.

    The shards are put in an order ((seed, epoch) permutation in training, manifest order
    otherwise) and their windows, end to end, are cut into ``world * workers`` contiguous
    ranges, one per slot, rank-major. Training: every range has ``total // slots`` windows
    and every slot yields ``windows * per_window // batch_size`` batches. Evaluation: the
    ranges cover every window (counts within one) and every slot yields as many batches as
    the largest needs, padded.
    """
    slots = world * workers
    order = (
        [int(i) for i in new_generator(seed, "shards", epoch).permutation(len(counts))]
        if train
        else list(range(len(counts)))
    )
    total = int(sum(counts))
    if train:
        size = total // slots
        ranges = [(s * size, size) for s in range(slots)]
        batches = size * per_window // batch_size
    else:
        ranges = balanced_ranges(total, slots)
        batches = ceil_div(ranges[0][1] * per_window, batch_size)  # the first is the largest
    start, size = ranges[rank * workers + worker]
    pieces, offset = [], 0
    for shard in order:
        n = counts[shard]
        lo, hi = max(start, offset), min(start + size, offset + n)
        if lo < hi:
            pieces.append((shard, lo - offset, hi - lo))
        offset += n
    return StreamPlan(pieces, size, batches)


# ------------------------------------------------------------------ Zarr plan
def window_starts(manifest: dict[str, Any], split: str, stride: int) -> list[dt.date]:
    """The split's windows: the manifest's, or (``stride`` > 0) one every ``stride`` days."""
    info = manifest["splits"].get(split)
    if info is None:
        raise ValueError(f"the dataset has no {split!r} split; it has {sorted(manifest['splits'])}")
    if stride <= 0:
        return [dt.date.fromisoformat(s) for s in info["window_starts"]]
    first, last = dt.date.fromisoformat(info["start"]), dt.date.fromisoformat(info["end"])
    return dataset_window_starts(first, last, int(manifest["window"]), stride)


def zarr_plan(
    starts: Sequence[dt.date],
    n_catchments: int,
    *,
    train: bool,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    k: int,
    batch_size: int,
    shuffle_windows: int,
) -> np.ndarray:
    """Rank ``rank``'s batches of ``epoch``: ``[N, B, 2]`` int64 of (window, catchment).

    Training: the windows in a (seed, epoch) order, ``len // world`` contiguous ones per
    rank; within each block of ``shuffle_windows`` windows their samples are shuffled
    (keyed by (seed, epoch, rank, block)); the remainder of the last batch is dropped.
    Evaluation: windows in order, balanced contiguous ranges per rank, every catchment,
    padded with ``PAD`` entries to the largest rank's batch count. The plan does not depend
    on the number of workers: workers take batches round-robin.
    """
    n = len(starts)
    if train:
        size = n // world
        order = new_generator(seed, "windows", epoch).permutation(n)[
            rank * size : (rank + 1) * size
        ]
        refs: list[tuple[int, int]] = []
        for b0 in range(0, size, max(1, shuffle_windows)):
            block = [
                (int(w), c)
                for w in order[b0 : b0 + max(1, shuffle_windows)]
                for c in choose_catchments(
                    n_catchments, k, seed, epoch, window_key(starts[int(w)]), True
                )
            ]
            perm = new_generator(seed, "block", epoch, rank, b0).permutation(len(block))
            refs += [block[int(i)] for i in perm]
        count = len(refs) // batch_size
        plan = np.asarray(refs[: count * batch_size], dtype=np.int64)
    else:
        ranges = balanced_ranges(n, world)
        count = ceil_div(ranges[0][1] * n_catchments, batch_size)
        lo, size = ranges[rank]
        refs = [(w, c) for w in range(lo, lo + size) for c in range(n_catchments)]
        refs += [(PAD, PAD)] * (count * batch_size - len(refs))
        plan = np.asarray(refs, dtype=np.int64)
    return plan.reshape(count, batch_size, 2)


# ------------------------------------------------------------------ collate
def batch_empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, allocated in shared memory.

    A worker's batch travels to the main process through shared memory; a tensor made
    there from the start is sent as it is, where an ordinary one would first be copied
    (``share_memory_``), as ``torch.utils.data.default_collate`` also avoids.
    """
    if get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=dtype)
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape))


class WindowCollate(MultiScaleMaskedCollate):
    """The masking collate, doing each window's image work once for all its samples.

    The K samples of a window share its image arrays (views). The collate's own rule
    (``MultiScaleMaskedCollate._stack_finite``: valid = finite and land, the rest set to
    0) is applied once per window and image modality and kept (least recently used, at
    most ``cache_entries``; an entry holds a reference to its source, so its memory cannot
    be reused while it is cached); each sample then costs two copies into the batch,
    which in a worker is allocated in shared memory. Output identical to the parent's.
    """

    def __init__(self, *args: Any, cache_entries: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache_entries = int(cache_entries)
        self._prepared: OrderedDict[tuple, tuple[torch.Tensor, ...]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_prepared"] = OrderedDict()
        return state

    def _prepare(self, part: torch.Tensor, land: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = (part.data_ptr(), tuple(part.shape), tuple(part.stride()), part.dtype)
        hit = self._prepared.get(key)
        if hit is not None:
            self._prepared.move_to_end(key)
            return hit[1], hit[2]
        data, valid = MultiScaleMaskedCollate._stack_finite([part], land)
        self._prepared[key] = (part, data[0], valid[0])
        while len(self._prepared) > self.cache_entries:
            self._prepared.popitem(last=False)
        return data[0], valid[0]

    def _stack_finite(  # type: ignore[override]
        self, parts: list[torch.Tensor], land: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if land is None:  # vectors and static attributes: one per sample, small
            return MultiScaleMaskedCollate._stack_finite(parts, land)
        shape = (len(parts), *parts[0].shape)
        out, valid = batch_empty(shape, torch.float32), batch_empty(shape, torch.bool)
        for i, part in enumerate(parts):
            data, ok = self._prepare(part, land)
            out[i].copy_(data)
            valid[i].copy_(ok)
        return out, valid
