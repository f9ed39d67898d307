"""Batch buffers: a batch collated straight into one recycled buffer, opened without copies.

A batch is large (batch size 8 on the GB grid: about 100 MB of images and validity masks)
and memory new to a process costs far more than the copies themselves
(``docs/benchmarks.md``), so each process (a DataLoader worker, or the main process)
keeps a :class:`BatchPool` of buffers. A batch's tensors are views of one buffer at
aligned offsets (:class:`Packing`): one file descriptor crosses from a worker. A buffer is
written again only once the trainer has dropped every tensor of the batch it held: the
main process records that in a small shared *ledger* (:meth:`PackedBatch.open`).
"""

from __future__ import annotations

import functools
import math
import os
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.collate import MultiScaleMaskedCollate, TensorSpec
from pipeline.window import ceil_div

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


class PinnedBuffers:
    """Recycled batch buffers page-locked where they lie (``cudaHostRegister``), so that a
    batch copies to the GPU without a pinned copy first (``non_blocking``) and its buffer
    is still recycled; each is registered once, when the main process maps it."""

    def __init__(self) -> None:
        self.cudart = torch.cuda.cudart()
        self.held: dict[int, int] = {}  # data pointer -> bytes

    def hold(self, storage: torch.UntypedStorage) -> None:
        ptr = storage.data_ptr()
        if ptr not in self.held and self.cudart.cudaHostRegister(ptr, storage.nbytes(), 0) == 0:
            self.held[ptr] = storage.nbytes()

    def release(self, storage: torch.UntypedStorage) -> None:
        if self.held.pop(storage.data_ptr(), None) is not None:
            self.cudart.cudaHostUnregister(storage.data_ptr())

    def close(self) -> None:
        for ptr in list(self.held):
            self.cudart.cudaHostUnregister(ptr)
        self.held.clear()


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

    def _storage(
        self, ledger: np.ndarray | None, mapped: dict | None, pinned: PinnedBuffers | None
    ) -> torch.UntypedStorage:
        """The buffer: sent with the batch (then remembered in ``mapped``, and pinned with
        ``pinned``), or remembered."""
        key = (self.worker, self.slot)
        if self.storage is None:
            if mapped is None or mapped.get(key, (None,))[0] != self.generation:
                raise RuntimeError(
                    f"batch buffer {key} (generation {self.generation}) was sent without its "
                    "memory, and this process does not hold it"
                )
            return mapped[key][1]
        if mapped is not None and ledger is not None and self.slot >= 0:
            if pinned is not None:
                if key in mapped:
                    pinned.release(mapped[key][1])
                pinned.hold(self.storage)
            mapped[key] = (self.generation, self.storage)
            ledger[self.worker, self.slot, KNOWN] = self.generation
        return self.storage

    def open(
        self,
        ledger: np.ndarray | None,
        mapped: dict | None = None,
        pinned: PinnedBuffers | None = None,
    ) -> dict[str, Any]:
        """The batch as a dict of tensors (zero-copy); records it in ``ledger`` if pooled.

        ``ledger [workers, slots, LEDGER_COLUMNS]`` int64: the batch's ``seq`` is written at
        ``[worker, slot, GIVEN]`` now, and at ``[worker, slot, FREED]`` once the batch's
        last tensor is dropped, which lets the worker write a new batch there. ``mapped``
        (the caller's, kept between batches): ``{(worker, slot): (generation, storage)}``,
        so that each buffer crosses (one file descriptor, one ``mmap``) only once.
        """
        storage = self._storage(ledger, mapped, pinned)
        whole, tensors = self.packing.lease(flat_bytes(storage, self.packing.nbytes))
        batch = {k: tensors[k] if k in tensors else self.rest[k] for k in self.order}
        batch.update({k: v for k, v in self.rest.items() if k not in batch})
        if ledger is not None and self.slot >= 0:
            ledger[self.worker, self.slot, GIVEN] = self.seq
            weakref.finalize(whole, ledger.__setitem__, (self.worker, self.slot, FREED), self.seq)
        return batch


class BatchPool:
    """One process's recycled batch buffers: a batch is collated straight into one.

    A fresh buffer costs far more than the batch's copies (its page faults;
    ``docs/benchmarks.md``), so each
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
