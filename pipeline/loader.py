"""The streaming loader: one entry point, two sources, masked batches (``docs/loader.md``).

``build_loader(config)`` returns a :class:`HydroLoader`, a ``torch.utils.data.DataLoader``
of masked batches (the collate's output, ``docs/masking.md``) read from

- ``reader = "shards"``: the split's WebDataset shards, streamed from a dataset directory,
  a URL (``http://``, ``s3://`` ... through fsspec) or explicit shard locations (paths,
  URLs, ``pipe:CMD``); or
- ``reader = "zarr"``: windows cut from ``store.zarr`` at load time, at the manifest's
  window starts or at any ``stride``.

The stages run in ``pipeline.window_dataset.WindowDataset``. Samples are in physical units
with NaN kept; the collate turns NaN into validity masks; normalisation
(``pipeline.Normalizer``) is the model's job. Batches are collated straight into recycled
buffers (``pipeline.buffers``): one buffer per batch holds all its tensors, so one file
descriptor crosses to the main process, and a buffer is written again only once the
trainer has dropped every tensor of the batch it held.

Every batch also carries ``weight [B] float32``: 1.0 for real samples, 0.0 for the
padding that keeps ranks equal (evaluation, or training after a shard was skipped).

The loader's state is ``{"epoch", "batches"}`` (batches the trainer has received this
epoch): :meth:`HydroLoader.state_dict` / :meth:`HydroLoader.load_state_dict`. A resumed
loader rebuilds the epoch's plan and skips the consumed batches without collating them
(the Zarr source does not even read their windows), whatever was prefetched.

Its worker processes end with the process that iterates it, however that process ends
(SIGKILL included; ``pipeline.lifetime``), and the fork server and the resource tracker
then end too.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from pipeline.buffers import LEDGER_COLUMNS, PackedBatch, PinnedBuffers
from pipeline.collate import MultiScaleMaskedCollate
from pipeline.faults import LoaderStats
from pipeline.heap import keep_freed_memory
from pipeline.lifetime import exit_with
from pipeline.loader_config import LoaderConfig
from pipeline.location import is_url, join, read_location
from pipeline.manifest import Manifest
from pipeline.npy import decode_npy
from pipeline.schema import LAND_MASK_NPY, LAND_MASK_PT
from pipeline.window_dataset import EPOCH, EVENTS_KEY, OWNER, SKIP, WindowDataset

logger = logging.getLogger(__name__)


def _passthrough(batch: Any) -> Any:
    """The DataLoader's collate_fn: batches are collated in the dataset already."""
    return batch


def _worker_start(worker: int) -> None:
    """The DataLoader's worker_init_fn: take the environment of the process iterating the
    loader (a worker forked from the fork server would otherwise have the server's, from
    when it started: credentials or endpoints set since would be missing), end with that
    process (``pipeline.lifetime``), and keep freed memory for the next windows (glibc)."""
    dataset = get_worker_info().dataset
    if dataset.environment is not None:
        os.environ.clear()
        os.environ.update(dataset.environment)
    exit_with(int(dataset.shared[OWNER]))
    keep_freed_memory()


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world)`` given, else from torchrun's ``RANK`` / ``WORLD_SIZE`` (else 0, 1)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, world_size={world})")
    return rank, world


def make_collate(cfg: LoaderConfig, manifest: Manifest) -> MultiScaleMaskedCollate:
    """The masking collate for a dataset: its grid, land mask, threshold and valid patches."""
    g = manifest.grid

    def build(mask: Path | np.ndarray) -> MultiScaleMaskedCollate:
        return MultiScaleMaskedCollate(
            seq_len=manifest.window,
            mask_ratio=cfg.mask_ratio,
            patch_size=g.patch_size,
            image_height=g.height,
            image_width=g.width,
            land_mask_path=mask,
            land_threshold=manifest.land_threshold,
            mask_mode=cfg.mask_mode,
            mode=cfg.mode,
            seed=cfg.seed,
            patch_indices=manifest.valid_patch_indices,
            strategies=dict(cfg.strategies) or None,
            compact=cfg.layout == "windows",
            image_dtype=cfg.image_dtype,
            # a window's K samples are spread over the shuffle buffer's batches
            reuse_images=True,
        )

    if not is_url(cfg.source):
        return build(Path(cfg.source) / LAND_MASK_PT)
    data = read_location(join(cfg.source, LAND_MASK_NPY), cfg.retry())
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
            pin_memory=False,  # pinned in place instead (PinnedBuffers), still recycled
            **extra,
        )
        self.config = cfg
        self.collate = dataset.collate
        self._ledger = dataset.ledger_array()
        self._mapped: dict[tuple[int, int], tuple[int, torch.UntypedStorage]] = {}
        self._pinned = PinnedBuffers() if cfg.pin_memory and torch.cuda.is_available() else None
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
        self.dataset.shared[EPOCH] = epoch

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
        """A worker's batch as a dict of tensors (see ``pipeline.buffers.PackedBatch``)."""
        if isinstance(item, PackedBatch):
            return item.open(self._ledger, self._mapped, self._pinned)
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skip = 0
        if self._resume is not None:
            epoch, skip = self._resume
            self._resume = None
            skip = skip if epoch == self.epoch else 0
        shared = self.dataset.shared
        shared[EPOCH], shared[SKIP], shared[OWNER] = self.epoch, skip, os.getpid()
        self.dataset.environment = dict(os.environ)  # what workers started now will take
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


def _ledger(cfg: LoaderConfig, context: Any) -> Any:
    """The buffer ledger, ``[max(1, workers) x buffers x LEDGER_COLUMNS]`` int64 zeros, flat.

    Shared with the workers when there are some (``context``).
    """
    size = max(1, cfg.num_workers) * cfg.pool_buffers() * LEDGER_COLUMNS
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
    manifest = Manifest.load(cfg.source, cfg.retry())
    collate = make_collate(cfg, manifest)
    context = None
    if cfg.num_workers > 0:
        context = multiprocessing.get_context(cfg.multiprocessing_context)
        if cfg.multiprocessing_context == "forkserver":
            # the fork server imports torch, zarr and the loader once; workers fork from it
            # instead of importing them again (docs/loader.md has the times)
            context.set_forkserver_preload(["pipeline.loader"])
        shared = context.Array("q", [0, 0, os.getpid()], lock=False)  # EPOCH, SKIP, OWNER
    else:
        shared = [0, 0, os.getpid()]
    dataset = WindowDataset(cfg, manifest, collate, rank, world, shared, _ledger(cfg, context))
    if dataset.train and dataset.rank_batches_count() == 0:
        windows = sum(dataset.counts) if cfg.reader == "shards" else len(dataset.starts)
        raise ValueError(
            f"{cfg.source}: the {cfg.split} split gives no training batch: {windows} windows "
            f"for {world} rank(s) x {max(1, cfg.num_workers)} worker(s), "
            f"{dataset.per_window} samples a window in units of {dataset.unit}, batch size "
            f"{cfg.batch_size}; lower --batch-size or --workers, or cut more windows "
            "(--reader zarr --stride)"
        )
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
