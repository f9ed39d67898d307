"""The loader's dataset: one rank's masked batches, each DataLoader worker its share.

Per worker the stages are: plan (``pipeline.plan``, a pure function of seed, epoch, rank,
world, workers) -> read + decode (``pipeline.stream`` for shards, ``pipeline.store`` for
Zarr windows) -> expand each window to its catchment samples as views -> shuffle (a
buffer of windows) -> fixed-size batches (``pipeline.stages``) -> the masking collate,
written into a recycled buffer (``pipeline.buffers``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import braceexpand
import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.buffers import LEDGER_COLUMNS, BatchPool, PackedBatch
from pipeline.collate import MultiScaleMaskedCollate
from pipeline.faults import LoaderEvent
from pipeline.history import HISTORY_FEATURES, CatchmentHistory
from pipeline.loader_config import LoaderConfig
from pipeline.location import join, shard_label
from pipeline.manifest import Manifest
from pipeline.masking import new_generator
from pipeline.plan import (
    PAD,
    choose_catchments,
    samples_per_window,
    stream_plan,
    zarr_plan,
)
from pipeline.schema import SHARDS, STORE
from pipeline.stages import (
    PadFactory,
    expand_window,
    fixed_batches,
    window_pool,
    window_units,
)
from pipeline.store import ZarrWindows
from pipeline.stream import stream_shard
from pipeline.window import worker_share

EVENTS_KEY = "_loader_events"  # batch key that carries a worker's events to the main process
# the shared array: [epoch, batches to skip, pid of the process that iterates the loader]
EPOCH, SKIP, OWNER = 0, 1, 2


def expand_locations(locations: list[str]) -> list[str]:
    """Shard locations with ``{000000..000009}`` brace ranges expanded."""
    return [x for loc in locations for x in braceexpand.braceexpand(loc)]


class WindowDataset(IterableDataset):
    """An ``IterableDataset`` of collated batches for one rank; each worker yields its share.

    ``len()`` is the number of batches the rank gets per epoch (the same on every rank).
    The epoch and the batches to skip come from a small shared array, so that persistent
    DataLoader workers see :meth:`HydroLoader.set_epoch` and resumes; its third entry is
    the pid of the process that iterates the loader (its workers end with it).
    """

    def __init__(
        self,
        cfg: LoaderConfig,
        manifest: Manifest,
        collate: MultiScaleMaskedCollate,
        rank: int,
        world: int,
        shared: Any,
        ledger: Any = None,
    ) -> None:
        self.cfg = cfg
        self.train = cfg.mode == "train"
        self.rank, self.world = rank, world
        self.workers = max(1, cfg.num_workers)
        self.collate = collate
        self.shared = shared  # [EPOCH, SKIP, OWNER]
        self.environment: dict[str, str] | None = None  # the iterating process's, for workers
        self.ledger = ledger  # [workers, buffers, 3] int64 (flat), see pipeline.stages.BatchPool
        self._pool: BatchPool | None = None  # this process's buffers, made on first use
        self.table = manifest.catchment_table()
        if cfg.history_days:  # read once here; the workers get the table with the dataset
            history = CatchmentHistory.read(join(cfg.source, STORE), manifest, cfg.history_days)
            self.table = dataclasses.replace(self.table, history=history)
        self.shape = manifest.window_shape()
        self.pad = PadFactory(
            self.shape.days,
            self.shape.patches,
            self.shape.patch_size,
            len(manifest.catchments.static_attributes),
            (cfg.history_days, len(HISTORY_FEATURES)) if cfg.history_days else None,
        )
        # training never sees a held-out catchment; evaluation reads every catchment
        held = set(manifest.catchments.holdout) if self.train else set()
        self.catchments = [i for i, g in enumerate(self.table.ids) if g not in held]
        self.per_window = samples_per_window(
            len(self.catchments), cfg.catchments_per_window, self.train
        )
        # training: samples of one window travel together in units of this many
        self.unit = cfg.window_samples
        if self.train and (self.unit > self.per_window or cfg.batch_size % self.unit):
            raise ValueError(
                f"window_samples {self.unit} must divide batch_size {cfg.batch_size} and be at "
                f"most the {self.per_window} samples a window gives (catchments_per_window "
                f"{cfg.catchments_per_window} of {len(self.catchments)} catchments)"
            )
        if cfg.reader == "zarr":
            self.starts = manifest.window_starts(cfg.split, cfg.stride)
            self.zarr = ZarrWindows.from_manifest(cfg.source, manifest, cfg.split)
            self.locations: list[str] = []
            self.counts: list[int] = []
        else:
            self.locations, self.counts = _shards(cfg, manifest)

    # ------------------------------------------------------------ plan
    def batches_per_worker(self, epoch: int, worker: int, workers: int) -> int:
        if self.cfg.reader == "zarr":
            return worker_share(len(self.zarr_plan(epoch)), worker, workers)
        return self.stream_plan(epoch, worker, workers).batches

    def rank_batches_count(self, epoch: int = 0, workers: int | None = None) -> int:
        workers = self.workers if workers is None else workers
        if self.cfg.reader == "zarr":  # the rank's plan, shared round-robin by its workers
            return len(self.zarr_plan(epoch))
        return sum(self.batches_per_worker(epoch, w, workers) for w in range(workers))

    def dropped_samples(self, epoch: int = 0) -> int:
        """Training samples of ``epoch`` no batch carries (over all ranks): windows left over
        by the slots, unit tails, a last incomplete batch. 0 in evaluation."""
        if not self.train:
            return 0
        windows = len(self.starts) if self.cfg.reader == "zarr" else sum(self.counts)
        batched = self.rank_batches_count(epoch) * self.cfg.batch_size * self.world
        return windows * self.per_window - batched

    def __len__(self) -> int:
        return self.rank_batches_count(int(self.shared[EPOCH]))

    def zarr_plan(self, epoch: int) -> np.ndarray:
        return zarr_plan(
            self.starts,
            self.catchments,
            train=self.train,
            seed=self.cfg.seed,
            epoch=epoch,
            rank=self.rank,
            world=self.world,
            k=self.cfg.catchments_per_window,
            batch_size=self.cfg.batch_size,
            shuffle_windows=self.cfg.shuffle_windows,
            unit=self.unit,
        )

    def stream_plan(self, epoch: int, worker: int, workers: int):
        return stream_plan(
            self.counts,
            train=self.train,
            seed=self.cfg.seed,
            epoch=epoch,
            rank=self.rank,
            world=self.world,
            worker=worker,
            workers=workers,
            # training counts units: a window gives per_window // unit, a batch holds
            # batch_size // unit; evaluation counts samples
            per_window=self.per_window // self.unit if self.train else self.per_window,
            batch_size=self.cfg.batch_size // self.unit if self.train else self.cfg.batch_size,
        )

    # ------------------------------------------------------------ iteration
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None  # every process has its own buffers
        return state

    def ledger_array(self) -> np.ndarray | None:
        """The ledger, ``[max(1, workers), buffers, LEDGER_COLUMNS]`` int64 (None: no pool)."""
        if self.ledger is None:
            return None
        shape = (self.workers, self.cfg.pool_buffers(), LEDGER_COLUMNS)
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype=np.int64)
        return np.frombuffer(self.ledger, dtype=np.int64).reshape(shape)

    def pool(self, worker: int) -> BatchPool | None:
        """This process's :class:`BatchPool` (shared memory in a DataLoader worker)."""
        ledger = self.ledger_array()
        if ledger is None:
            return None
        if self._pool is None:
            # persistent workers: one pool per worker for the loader's life, so the main
            # process keeps each buffer mapped and it is sent only once
            in_worker = get_worker_info() is not None
            once = in_worker and self.cfg.persistent_workers
            self._pool = BatchPool(ledger[worker], worker, in_worker, send_once=once)
        return self._pool

    def __iter__(self) -> Iterator[PackedBatch | dict[str, Any]]:
        """The DataLoader's iterator: with a ledger, packed batches (HydroLoader opens them)."""
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch, skip = int(self.shared[EPOCH]), int(self.shared[SKIP])
        pool = self.pool(worker)
        if pool is not None:
            pool.start_iteration()
        return self.batches(epoch, worker, workers, skip, pool)

    def batches(
        self,
        epoch: int,
        worker: int = 0,
        workers: int = 1,
        skip: int = 0,
        pool: BatchPool | None = None,
    ) -> Iterator[Any]:
        """DataLoader worker ``worker``'s batches of ``epoch``, after the rank's first ``skip``.

        The rank's batch ``j`` belongs to role ``j % workers`` (a slot of the plan). The
        DataLoader asks its workers in turn starting from worker 0, so after ``skip``
        batches worker ``w`` plays role ``(w + skip) % workers``: its first batch is then
        the rank's batch ``skip + w``, and the order is the uninterrupted run's. A role's
        stream is deterministic, so any process can play it. With ``pool``, each batch is
        a :class:`pipeline.stages.PackedBatch` in one of its buffers; else a dict.
        """
        role = (worker + skip) % workers
        self.collate.set_epoch(epoch)
        skip_mine = worker_share(skip, role, workers)
        if self.cfg.reader == "zarr":
            return self._zarr_batches(epoch, role, workers, skip_mine, pool)
        return self._stream_batches(epoch, role, workers, skip_mine, pool)

    def rank_batches(
        self, epoch: int, workers: int | None = None, skip: int = 0
    ) -> Iterator[dict[str, Any]]:
        """The rank's batches in the DataLoader's order, all in this process (a simulation).

        Round-robin over the workers' streams from worker 0, dropping a worker once it is
        done, as ``torch.utils.data.DataLoader`` does; for tests and debugging.
        """
        workers = self.workers if workers is None else workers
        order = [self.batches(epoch, w, workers, skip) for w in range(workers)]
        while order:
            for stream in list(order):
                try:
                    yield next(stream)
                except StopIteration:
                    order.remove(stream)

    def _emit(
        self, samples: list[dict[str, Any]], events: list[LoaderEvent], pool: BatchPool | None
    ) -> Any:
        """The collated batch: a dict, or with ``pool`` a ``PackedBatch``; plus the events."""
        if pool is None:
            batch = extra = self.collate(samples)
        else:
            batch = pool.pack(self.collate, samples)
            extra = batch.rest
        if events:
            extra[EVENTS_KEY] = list(events)
            events.clear()
        return batch

    def _stream_batches(
        self, epoch: int, worker: int, workers: int, skip: int, pool: BatchPool | None
    ) -> Iterator[Any]:
        plan = self.stream_plan(epoch, worker, workers)
        events: list[LoaderEvent] = []
        size = self.unit if self.train else 1
        units = (
            window_units(
                expand_window(
                    window,
                    self.table,
                    choose_catchments(
                        self.catchments,
                        self.cfg.catchments_per_window,
                        self.cfg.seed,
                        epoch,
                        window["__key__"],
                        self.train,
                    ),
                ),
                size,
            )
            for window in self._stream_windows(plan, events.append)
        )
        if self.train:
            stream = window_pool(
                units,
                self.cfg.shuffle_windows,
                new_generator(self.cfg.seed, "shuffle", epoch, self.rank, worker),
            )
        else:
            stream = (unit for window in units for unit in window)
        prefix = f"pad-r{self.rank}-w{worker}"
        per_batch = self.cfg.batch_size // size
        for i, batch in enumerate(fixed_batches(stream, per_batch, plan.batches, self.pad, prefix)):
            if i == plan.batches - 1:
                # read the rest of the plan (windows whose units the batches drop: less
                # than a batch's worth; the end of its last shard), so that a fault there
                # is reported with the last batch: nothing comes after it to carry it
                for _ in stream:
                    pass
            if i >= skip:
                yield self._emit(batch, events, pool)

    def _stream_windows(self, plan, report) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        for shard, first, count in plan.pieces:
            yield from stream_shard(
                self.locations[shard],
                self.counts[shard],
                self.shape,
                report,
                first=first,
                limit=first + count,
                retry=cfg.retry(),
                timeout=cfg.timeout,
            )

    def _zarr_batches(
        self, epoch: int, worker: int, workers: int, skip: int, pool: BatchPool | None
    ) -> Iterator[Any]:
        plan = self.zarr_plan(epoch)
        mine = list(range(worker, len(plan), workers))[skip:]
        last_use = {int(w): j for j in mine for w in plan[j, :, 0] if w != PAD}
        cache: dict[int, dict[str, Any]] = {}
        events: list[LoaderEvent] = []
        arrays = None
        for j in mine:
            samples = []
            for i, (w, c) in enumerate(plan[j].tolist()):
                if w == PAD:
                    arrays = self.pad.arrays() if arrays is None else arrays
                    samples.append(self.pad.make(arrays, f"pad-r{self.rank}-b{j}-{i}"))
                    continue
                if w not in cache:
                    cache[w] = self.zarr.read(self.starts[w])
                samples += expand_window(cache[w], self.table, [c])
            for w in [w for w in cache if last_use[w] == j]:
                del cache[w]
            yield self._emit(samples, events, pool)


def _shards(cfg: LoaderConfig, manifest: Manifest) -> tuple[list[str], list[int]]:
    """The split's shard locations and their window counts (from the manifest)."""
    entries = {e.name: e for e in manifest.shards}
    if cfg.shards:
        locations = expand_locations(list(cfg.shards))
        counts = []
        for loc in locations:
            entry = entries.get(shard_label(loc))
            if entry is None:
                raise ValueError(
                    f"shard {loc!r}: {shard_label(loc)!r} is not in the manifest of "
                    f"{cfg.source}; the loader needs each shard's window count to give every "
                    "rank the same number of batches"
                )
            if entry.split != cfg.split:
                raise ValueError(
                    f"shard {loc!r} belongs to split {entry.split!r}, not {cfg.split!r}"
                )
            counts.append(entry.samples)
        return locations, counts
    manifest.split(cfg.split)  # the split must exist
    mine = manifest.split_shards(cfg.split)
    return [join(cfg.source, SHARDS, e.name) for e in mine], [e.samples for e in mine]
