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
import functools
import math
import os
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.collate import MultiScaleMaskedCollate, TensorSpec
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


# ------------------------------------------------------------------ batch buffers
ALIGN = 64  # bytes: every tensor of a packed batch starts at a multiple of this
# ledger columns: the sequence number given to the trainer, then freed; the generation
# (identity) of the buffer the main process has mapped
GIVEN, FREED, KNOWN = 0, 1, 2
LEDGER_COLUMNS = 3


@functools.cache
def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a torch dtype (e.g. ``torch.float32 -> float32``)."""
    return torch.empty((), dtype=dtype).numpy().dtype


@dataclass(frozen=True)
class Packing:
    """Where each tensor of a batch lies in one flat byte buffer.

    ``entries``: ``(name, shape, dtype, byte offset)``, offsets aligned to ``ALIGN``;
    ``nbytes``: the buffer's size in bytes.
    """

    entries: tuple[tuple[str, tuple[int, ...], torch.dtype, int], ...]
    nbytes: int

    @classmethod
    def of(cls, spec: TensorSpec) -> Packing:
        """The packing of ``spec`` (``{name: (shape, dtype)}``), in its order."""
        entries, offset = [], 0
        for name, (shape, dtype) in spec.items():
            entries.append((name, tuple(shape), dtype, offset))
            offset += ceil_div(math.prod(shape) * dtype.itemsize, ALIGN) * ALIGN
        return cls(tuple(entries), offset)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch's tensors as views of ``flat`` (``[nbytes]`` uint8), for writing."""
        out = {}
        for name, shape, dtype, offset in self.entries:
            size = math.prod(shape) * dtype.itemsize
            out[name] = flat[offset : offset + size].view(dtype).view(shape)
        return out

    def lease(self, flat: torch.Tensor) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
        """``(whole, tensors)``: the same views, made through ``whole = flat.numpy()``.

        ``torch.from_numpy`` makes a tensor own a reference to its array, whose base is
        ``whole``: ``whole`` is collected exactly when the last tensor of the batch (or a
        view of one) is, which is when a finalizer on it may recycle the buffer.
        """
        whole = flat.numpy()
        out = {}
        for name, shape, dtype, offset in self.entries:
            np_dtype = numpy_dtype(dtype)
            size = math.prod(shape) * np_dtype.itemsize
            out[name] = torch.from_numpy(
                whole[offset : offset + size].view(np_dtype).reshape(shape)
            )
        return whole, out


def flat_bytes(storage: torch.UntypedStorage, nbytes: int) -> torch.Tensor:
    """The first ``nbytes`` of ``storage`` as a ``[nbytes]`` uint8 tensor."""
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, (nbytes,))


@dataclass
class PackedBatch:
    """A collated batch whose tensors all lie in one buffer (one file descriptor to send).

    ``storage``: the buffer (shared memory in a DataLoader worker), or None when the
    main process has it already (its ``generation`` is in the ledger's KNOWN column);
    ``rest``: the batch's other values (key lists, events); ``order``: the batch's keys in
    the collate's order; ``worker``, ``slot``, ``seq``: the buffer's place in its pool and
    the batch's sequence number there (``slot = -1``: a one-off buffer, not recycled).
    """

    storage: torch.UntypedStorage | None
    packing: Packing
    rest: dict[str, Any]
    order: tuple[str, ...]
    worker: int
    slot: int
    seq: int
    generation: int = 0

    def _storage(self, ledger: np.ndarray | None, mapped: dict | None) -> torch.UntypedStorage:
        """The buffer: sent with the batch (then remembered in ``mapped``), or remembered."""
        key = (self.worker, self.slot)
        if self.storage is None:
            if mapped is None or mapped.get(key, (None,))[0] != self.generation:
                raise RuntimeError(
                    f"batch buffer {key} (generation {self.generation}) was sent without its "
                    "memory, and this process does not hold it"
                )
            return mapped[key][1]
        if mapped is not None and ledger is not None and self.slot >= 0:
            mapped[key] = (self.generation, self.storage)
            ledger[self.worker, self.slot, KNOWN] = self.generation
        return self.storage

    def open(self, ledger: np.ndarray | None, mapped: dict | None = None) -> dict[str, Any]:
        """The batch as a dict of tensors (zero-copy); records it in ``ledger`` if pooled.

        ``ledger [workers, slots, LEDGER_COLUMNS]`` int64: the batch's ``seq`` is written at
        ``[worker, slot, GIVEN]`` now, and at ``[worker, slot, FREED]`` once the batch's
        last tensor is dropped, which lets the worker write a new batch there. ``mapped``
        (the caller's, kept between batches): ``{(worker, slot): (generation, storage)}``,
        so that each buffer crosses (one file descriptor, one ``mmap``) only once.
        """
        storage = self._storage(ledger, mapped)
        whole, tensors = self.packing.lease(flat_bytes(storage, self.packing.nbytes))
        batch = {k: tensors[k] if k in tensors else self.rest[k] for k in self.order}
        batch.update({k: v for k, v in self.rest.items() if k not in batch})
        if ledger is not None and self.slot >= 0:
            ledger[self.worker, self.slot, GIVEN] = self.seq
            weakref.finalize(whole, ledger.__setitem__, (self.worker, self.slot, FREED), self.seq)
        return batch

    def pin_memory(self) -> dict[str, Any]:
        """For the DataLoader's ``pin_memory``: a copy in pinned memory (not recycled)."""
        return {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in self.open(None).items()}


class BatchPool:
    """One process's recycled batch buffers: a batch is collated straight into one.

    A fresh buffer costs far more than the batch's copies (page faults: about 50 ms per
    100 MB of fresh shared memory here, against 4.5 ms to fill a warm one), so each
    buffer is reused once the trainer has dropped the batch it held. The ``ledger``
    (``[slots, LEDGER_COLUMNS]`` int64, this worker's rows of the loader's ledger, written
    by the main process in :meth:`PackedBatch.open`) says when: a buffer is free once its last batch
    is FREED, or if that batch came from an earlier iteration and was never GIVEN (the
    DataLoader discarded it when the iteration was restarted). Buffers are made as
    needed, at most one per ledger row; with none free (or no rows), a batch gets a
    one-off buffer.
    Sequence numbers start at a random base, so that a late write from another pool
    (an earlier set of workers) cannot match one of this pool's batches.
    """

    def __init__(
        self, ledger: np.ndarray, worker: int, shared: bool, send_once: bool = False
    ) -> None:
        self.ledger, self.worker, self.shared = ledger, worker, shared
        self.send_once = send_once  # omit a buffer the main process has mapped (KNOWN)
        self.storages: list[torch.UntypedStorage | None] = [None] * len(ledger)
        self.generations = [0] * len(ledger)  # identity of each buffer
        self.last = [0] * len(ledger)  # sequence number of each buffer's latest batch
        self.seq = int.from_bytes(os.urandom(5), "little") << 16
        self.iteration_start = self.seq + 1

    def start_iteration(self) -> None:
        """Batches made before now and never given to the trainer were discarded."""
        self.iteration_start = self.seq + 1

    def _new(self, nbytes: int, slot: int = -1) -> torch.UntypedStorage:
        if slot >= 0:
            self.generations[slot] = self.seq
        if self.shared:
            return torch.UntypedStorage._new_shared(nbytes)
        return torch.UntypedStorage(nbytes)

    def _free(self, slot: int) -> bool:
        q = self.last[slot]
        given, freed = int(self.ledger[slot, GIVEN]), int(self.ledger[slot, FREED])
        return freed == q or (q < self.iteration_start and given != q)

    def take(self, nbytes: int) -> tuple[int, torch.UntypedStorage]:
        """A buffer of at least ``nbytes`` for the next batch: ``(slot or -1, storage)``."""
        self.seq += 1
        empty = None
        for slot, storage in enumerate(self.storages):
            if storage is None:
                empty = slot if empty is None else empty
            elif self._free(slot):
                if storage.nbytes() < nbytes:
                    storage = self.storages[slot] = self._new(nbytes, slot)
                self.last[slot] = self.seq
                return slot, storage
        if empty is None:
            return -1, self._new(nbytes)
        self.storages[empty] = storage = self._new(nbytes, empty)
        self.last[empty] = self.seq
        return empty, storage

    def pack(self, collate: MultiScaleMaskedCollate, samples: list[dict[str, Any]]) -> PackedBatch:
        """``collate(samples)`` written into a buffer of the pool."""
        taken: dict[str, Any] = {}

        def allocate(spec: TensorSpec) -> dict[str, torch.Tensor]:
            packing = Packing.of(spec)
            slot, storage = self.take(packing.nbytes)
            taken.update(packing=packing, slot=slot, storage=storage)
            return packing.views(flat_bytes(storage, packing.nbytes))

        batch = collate(samples, allocate=allocate)
        names = {entry[0] for entry in taken["packing"].entries}
        slot = taken["slot"]
        generation = self.generations[slot] if slot >= 0 else 0
        known = slot >= 0 and self.send_once and self.ledger[slot, KNOWN] == generation
        return PackedBatch(
            None if known else taken["storage"],
            taken["packing"],
            {k: v for k, v in batch.items() if k not in names},
            tuple(batch),
            self.worker,
            slot,
            self.seq,
            generation,
        )
