"""The streaming loader: one entry point, two sources, masked batches (DESIGN.md, "The loader").

``build_loader(config)`` returns a :class:`HydroLoader`, a ``torch.utils.data.DataLoader``
of masked batches (the collate's output, DESIGN.md "One sample schema") read from

- ``reader = "shards"``: the split's WebDataset shards, streamed from a dataset directory,
  a URL (``http://``, ``s3://`` ... through fsspec) or explicit shard locations (paths,
  URLs, ``pipe:CMD``); or
- ``reader = "zarr"``: windows cut from ``store.zarr`` at load time, at the manifest's
  window starts or at any ``stride``.

Per worker the stages are: plan (a pure function of seed, epoch, rank, world, workers) ->
read + decode (``pipeline.sources``) -> expand each window to its catchment samples as
views (read once, used K times) -> shuffle (a buffer of windows) -> fixed-size batches ->
the masking collate. Samples are in physical units with NaN kept; the collate turns NaN
into validity masks; normalisation (``pipeline.Normalizer``) is the model's job.

Batches are collated straight into recycled buffers (``pipeline.stages.BatchPool``; in a
worker, shared memory): one buffer per batch holds all its tensors, so one file descriptor
crosses to the main process, and a buffer is written again only once the trainer has
dropped every tensor of the batch it held (the main process records that in a small
shared ledger).

Every batch also carries ``weight [B] float32``: 1.0 for real samples, 0.0 for the
padding that keeps ranks equal (evaluation, or training after a shard was skipped).

The loader's state is ``{"epoch", "batches"}`` (batches the trainer has received this
epoch): :meth:`HydroLoader.state_dict` / :meth:`HydroLoader.load_state_dict`. A resumed
loader rebuilds the epoch's plan and skips the consumed batches without collating them
(the Zarr source does not even read their windows), whatever was prefetched.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.collate import MODES, MultiScaleMaskedCollate
from pipeline.dataset import LAND_MASK_NPY, LAND_MASK_PT, SHARDS, decode_npy
from pipeline.heap import keep_freed_memory
from pipeline.masking import new_generator
from pipeline.samples import CatchmentTable
from pipeline.sources import (
    BAD_WINDOW,
    CORRUPT,
    RETRY,
    UNREACHABLE,
    LoaderEvent,
    WindowShape,
    ZarrWindows,
    is_url,
    join,
    load_manifest,
    read_location,
    shard_label,
    stream_shard,
)
from pipeline.stages import (
    LEDGER_COLUMNS,
    PAD,
    BatchPool,
    PackedBatch,
    PadFactory,
    choose_catchments,
    expand_window,
    fixed_batches,
    samples_per_window,
    shuffle_buffer,
    stream_plan,
    window_starts,
    worker_share,
    zarr_plan,
)

logger = logging.getLogger(__name__)

READERS = ("shards", "zarr")
CONTEXTS = ("forkserver", "spawn", "fork")
EVENTS_KEY = "_loader_events"  # batch key that carries a worker's events to the main process
SPARE_BUFFERS = 4  # recycled batch buffers per worker beyond prefetch_factor


@dataclass
class LoaderConfig:
    """The loader's settings (``pipeline.config.load(LoaderConfig, "file.toml")`` reads TOML)."""

    source: str = field(
        metadata={"metavar": "DIR_OR_URL", "help": "dataset directory or URL (its manifest)"}
    )
    split: str = field(default="train", metadata={"help": "train, val or test"})
    mode: str = field(
        default="train",
        metadata={
            "choices": MODES,
            "help": "train: shuffled, equal batches per rank, masks by (seed, epoch, key); "
            "eval: every sample once, padded, masks by (seed, key); val: eval without masks",
        },
    )
    reader: str = field(
        default="shards", metadata={"choices": READERS, "help": "stream shards or cut Zarr windows"}
    )
    shards: list[str] = field(
        default_factory=list,
        metadata={"help": "shard locations (paths, URLs, pipe:CMD; {a..b} expands) "
                  "instead of the source's shards of the split"},
    )  # fmt: skip
    batch_size: int = 32
    num_workers: int = 2
    seed: int = 0
    catchments_per_window: int = field(
        default=0, metadata={"help": "K random catchments per window in training (0: all)"}
    )
    shuffle_windows: int = field(
        default=16, metadata={"help": "shuffle buffer, in windows (training)"}
    )
    stride: int = field(
        default=0, metadata={"help": "zarr reader: days between window starts (0: manifest's)"}
    )
    mask_ratio: float = 0.75
    mask_mode: str = field(default="unified", metadata={"choices": ("unified", "independent")})
    prefetch_factor: int = 2
    persistent_workers: bool = True
    pin_memory: bool = False
    multiprocessing_context: str = field(default="forkserver", metadata={"choices": CONTEXTS})
    retries: int = field(default=3, metadata={"help": "retries of a shard that cannot be read"})
    retry_backoff: float = field(
        default=0.5, metadata={"help": "seconds before the first retry, doubled each time"}
    )
    timeout: float = field(default=60.0, metadata={"help": "network timeout, seconds"})

    def check(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.reader not in READERS:
            raise ValueError(f"reader must be one of {READERS}, got {self.reader!r}")
        if self.multiprocessing_context not in CONTEXTS:
            raise ValueError(
                f"multiprocessing_context must be one of {CONTEXTS}, got "
                f"{self.multiprocessing_context!r}"
            )
        for name in ("batch_size", "prefetch_factor", "shuffle_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("num_workers", "catchments_per_window", "stride", "retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.shards and self.reader != "shards":
            raise ValueError("shards are given, but reader is not 'shards'")


@dataclass
class LoaderStats:
    """What the loader skipped, retried and padded, as seen by the main process.

    ``events``: every :class:`pipeline.sources.LoaderEvent` in arrival order (each also
    logged as a warning naming its shard); ``padded_samples``: zero-weight samples given.
    """

    events: list[LoaderEvent] = field(default_factory=list)
    padded_samples: int = 0

    def record(self, event: LoaderEvent) -> None:
        self.events.append(event)

    def _shards(self, kind: str) -> list[str]:
        return sorted({e.shard for e in self.events if e.kind == kind})

    @property
    def corrupt_shards(self) -> list[str]:
        """Names of the shards found truncated or corrupt (their rest skipped)."""
        return self._shards(CORRUPT)

    @property
    def unreachable_shards(self) -> list[str]:
        """Names of the shards that could not be read after every retry (skipped)."""
        return self._shards(UNREACHABLE)

    @property
    def bad_windows(self) -> int:
        """Windows skipped for a missing or malformed member."""
        return sum(e.kind == BAD_WINDOW for e in self.events)

    @property
    def retries(self) -> int:
        return sum(e.kind == RETRY for e in self.events)

    def counts(self) -> dict[str, int]:
        return dict(Counter(e.kind for e in self.events)) | {"padded": self.padded_samples}


def _passthrough(batch: Any) -> Any:
    """The DataLoader's collate_fn: batches are collated in the dataset already."""
    return batch


def _worker_start(worker: int) -> None:
    """The DataLoader's worker_init_fn: keep freed memory for the next windows (glibc)."""
    keep_freed_memory()


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world)`` given, else from torchrun's ``RANK`` / ``WORLD_SIZE`` (else 0, 1)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, world_size={world})")
    return rank, world


def expand_locations(locations: list[str]) -> list[str]:
    """Shard locations with ``{000000..000009}`` brace ranges expanded."""
    import braceexpand

    return [x for loc in locations for x in braceexpand.braceexpand(loc)]


class WindowDataset(IterableDataset):
    """An ``IterableDataset`` of collated batches for one rank; each worker yields its share.

    ``len()`` is the number of batches the rank gets per epoch (the same on every rank).
    The epoch and the batches to skip come from a small shared array, so that persistent
    DataLoader workers see :meth:`HydroLoader.set_epoch` and resumes.
    """

    def __init__(
        self,
        cfg: LoaderConfig,
        manifest: dict[str, Any],
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
        self.shared = shared  # [epoch, batches to skip]
        self.ledger = ledger  # [workers, buffers, 3] int64 (flat), see pipeline.stages.BatchPool
        self._pool: BatchPool | None = None  # this process's buffers, made on first use
        self.table = CatchmentTable.from_manifest(manifest)
        self.shape = WindowShape.from_manifest(manifest)
        self.pad = PadFactory(
            self.shape.days,
            self.shape.patches,
            self.shape.patch_size,
            len(manifest["catchments"]["static_attributes"]),
        )
        n_catch = len(self.table.ids)
        self.per_window = samples_per_window(n_catch, cfg.catchments_per_window, self.train)
        if cfg.reader == "zarr":
            self.starts = window_starts(manifest, cfg.split, cfg.stride)
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

    def __len__(self) -> int:
        return self.rank_batches_count(int(self.shared[0]))

    def zarr_plan(self, epoch: int) -> np.ndarray:
        return zarr_plan(
            self.starts,
            len(self.table.ids),
            train=self.train,
            seed=self.cfg.seed,
            epoch=epoch,
            rank=self.rank,
            world=self.world,
            k=self.cfg.catchments_per_window,
            batch_size=self.cfg.batch_size,
            shuffle_windows=self.cfg.shuffle_windows,
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
            per_window=self.per_window,
            batch_size=self.cfg.batch_size,
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
        shape = (self.workers, pool_buffers(self.cfg), LEDGER_COLUMNS)
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
        epoch, skip = int(self.shared[0]), int(self.shared[1])
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
        samples = (
            sample
            for window in self._stream_windows(plan, events.append)
            for sample in expand_window(
                window,
                self.table,
                choose_catchments(
                    len(self.table.ids),
                    self.cfg.catchments_per_window,
                    self.cfg.seed,
                    epoch,
                    window["__key__"],
                    self.train,
                ),
            )
        )
        if self.train:
            samples = shuffle_buffer(
                samples,
                self.cfg.shuffle_windows * self.per_window,
                new_generator(self.cfg.seed, "shuffle", epoch, self.rank, worker),
            )
        prefix = f"pad-r{self.rank}-w{worker}"
        for i, batch in enumerate(
            fixed_batches(samples, self.cfg.batch_size, plan.batches, self.pad, prefix)
        ):
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
                retries=cfg.retries,
                backoff=cfg.retry_backoff,
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


def _shards(cfg: LoaderConfig, manifest: dict[str, Any]) -> tuple[list[str], list[int]]:
    """The split's shard locations and their window counts (from the manifest)."""
    entries = {e["name"]: e for e in manifest["shards"]}
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
            if entry["split"] != cfg.split:
                raise ValueError(
                    f"shard {loc!r} belongs to split {entry['split']!r}, not {cfg.split!r}"
                )
            counts.append(int(entry["samples"]))
        return locations, counts
    if cfg.split not in manifest["splits"]:
        raise ValueError(
            f"the dataset has no {cfg.split!r} split; it has {sorted(manifest['splits'])}"
        )
    mine = [e for e in manifest["shards"] if e["split"] == cfg.split]
    return [join(cfg.source, SHARDS, e["name"]) for e in mine], [int(e["samples"]) for e in mine]


def make_collate(cfg: LoaderConfig, manifest: dict[str, Any]) -> MultiScaleMaskedCollate:
    """The masking collate for a dataset: its grid, land mask, threshold and valid patches."""
    g = manifest["grid"]

    def build(mask: Path | np.ndarray) -> MultiScaleMaskedCollate:
        return MultiScaleMaskedCollate(
            seq_len=int(manifest["window"]),
            mask_ratio=cfg.mask_ratio,
            patch_size=g["patch_size"],
            image_height=g["height"],
            image_width=g["width"],
            land_mask_path=mask,
            land_threshold=manifest["land_threshold"],
            mask_mode=cfg.mask_mode,
            mode=cfg.mode,
            seed=cfg.seed,
            patch_indices=manifest["valid_patch_indices"],
            # a window's K samples are spread over the shuffle buffer's batches
            reuse_images=True,
        )

    if not is_url(cfg.source):
        return build(Path(cfg.source) / LAND_MASK_PT)
    data = read_location(join(cfg.source, LAND_MASK_NPY), cfg.retries, cfg.retry_backoff)
    return build(decode_npy(data))


class HydroLoader(DataLoader):
    """A ``DataLoader`` of masked batches with an epoch, a resumable state and fault stats.

    Use::

        loader = build_loader(cfg)            # rank and world size from torchrun's env
        loader.load_state_dict(checkpoint)    # optional: resume mid-epoch
        for epoch in range(loader.epoch, epochs):
            loader.set_epoch(epoch)
            for batch in loader: ...          # len(loader) batches, equal on every rank
            state = loader.state_dict()       # {"epoch", "batches"} for the checkpoint
    """

    def __init__(self, dataset: WindowDataset, cfg: LoaderConfig, context: Any) -> None:
        extra: dict[str, Any] = {}
        if cfg.num_workers > 0:
            extra = dict(
                prefetch_factor=cfg.prefetch_factor,
                persistent_workers=cfg.persistent_workers,
                multiprocessing_context=context,
                worker_init_fn=_worker_start,
            )
        super().__init__(
            dataset,
            batch_size=None,
            collate_fn=_passthrough,
            num_workers=cfg.num_workers,
            pin_memory=cfg.pin_memory,
            **extra,
        )
        self.config = cfg
        self.collate = dataset.collate
        self._ledger = dataset.ledger_array()
        self._mapped: dict[tuple[int, int], tuple[int, torch.UntypedStorage]] = {}
        self.stats = LoaderStats()
        self.epoch = 0
        self._consumed = 0
        self._resume: tuple[int, int] | None = None

    @property
    def rank(self) -> int:
        return self.dataset.rank

    @property
    def world_size(self) -> int:
        return self.dataset.world

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration (shuffling and training masks change with it)."""
        epoch = int(epoch)
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None
        if epoch != self.epoch:
            self._consumed = 0
        self.epoch = epoch
        self.dataset.shared[0] = epoch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: batches received this epoch (a finished epoch: next one)."""
        if self._consumed >= len(self):
            return {"epoch": self.epoch + 1, "batches": 0}
        return {"epoch": self.epoch, "batches": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration of ``state["epoch"]`` starts after ``state["batches"]``."""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches < 0:
            raise ValueError(f"batches must not be negative, got {batches}")
        self.set_epoch(epoch)
        self._resume = (epoch, batches)
        self._consumed = batches

    def _open(self, item: PackedBatch | dict[str, Any]) -> dict[str, Any]:
        """A worker's batch as a dict of tensors (see ``pipeline.stages.PackedBatch``)."""
        if isinstance(item, PackedBatch):
            return item.open(self._ledger, self._mapped)
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skip = 0
        if self._resume is not None:
            epoch, skip = self._resume
            self._resume = None
            skip = skip if epoch == self.epoch else 0
        self.dataset.shared[0], self.dataset.shared[1] = self.epoch, skip
        self._consumed = skip
        for item in super().__iter__():
            batch = self._open(item)
            del item
            for event in batch.pop(EVENTS_KEY, ()):
                self.stats.record(event)
                logger.warning("%s", event.message())
            self.stats.padded_samples += int((batch["weight"] == 0).sum())
            self._consumed += 1
            yield batch
            del batch  # the trainer's reference alone decides when its buffer is recycled


def pool_buffers(cfg: LoaderConfig) -> int:
    """Recycled batch buffers per worker (at most); 0 with ``pin_memory``.

    With ``pin_memory`` the DataLoader copies every batch into pinned memory as it
    arrives, so each batch gets a one-off buffer (still one per batch, one descriptor).
    """
    return 0 if cfg.pin_memory else cfg.prefetch_factor + SPARE_BUFFERS


def _ledger(cfg: LoaderConfig, context: Any) -> Any:
    """The buffer ledger, ``[max(1, workers) x buffers x LEDGER_COLUMNS]`` int64 zeros, flat.

    Shared with the workers when there are some (``context``).
    """
    size = max(1, cfg.num_workers) * pool_buffers(cfg) * LEDGER_COLUMNS
    if context is None:
        return np.zeros(size, dtype=np.int64)
    return context.Array("q", max(size, 1), lock=False)


def build_loader(
    config: LoaderConfig | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    **options: Any,
) -> HydroLoader:
    """A :class:`HydroLoader` (a ``DataLoader``) of masked batches for this rank.

    ``config`` (or keyword ``options``, the :class:`LoaderConfig` fields, which override
    it) says what to read and how; ``rank`` and ``world_size`` default to torchrun's
    ``RANK`` and ``WORLD_SIZE`` (else 0 and 1). Each batch is the collate's output, shapes
    ``[B, T, N_valid, p*p]`` for images etc. (see ``pipeline.collate``), plus ``weight [B]``.
    """
    cfg = LoaderConfig(**options) if config is None else dataclasses.replace(config, **options)
    cfg.check()
    rank, world = resolve_rank(rank, world_size)
    manifest = load_manifest(cfg.source, cfg.retries, cfg.retry_backoff)
    collate = make_collate(cfg, manifest)
    context = None
    if cfg.num_workers > 0:
        context = multiprocessing.get_context(cfg.multiprocessing_context)
        if cfg.multiprocessing_context == "forkserver":
            # the fork server imports torch, zarr and the loader once; workers fork from it
            # in ~0.1 s instead of importing them again (~2.5 s each)
            context.set_forkserver_preload(["pipeline.loader"])
        shared = context.Array("q", [0, 0], lock=False)
    else:
        shared = [0, 0]
    dataset = WindowDataset(cfg, manifest, collate, rank, world, shared, _ledger(cfg, context))
    return HydroLoader(dataset, cfg, context)


__all__ = [
    "HydroLoader",
    "LoaderConfig",
    "LoaderStats",
    "WindowDataset",
    "build_loader",
    "resolve_rank",
]

_ = torch  # torch is the DataLoader's; imported here so that the fork server preloads it
