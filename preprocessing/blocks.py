"""The images, one block of ``window`` days per dask task, and the land mask before them.

A block task reads its days of every image modality (``preprocessing.grids``), cuts them
into patches, writes the block's region of the Zarr store and returns (and journals) the
block's normalisation moments over the training days on land. Memory is bounded by one
block per worker, whatever the number of years.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.grid import PatchGrid, patchify
from pipeline.landmask import save_land_mask
from pipeline.schema import IMAGE_MODALITIES, LAND_MASK_NPY
from preprocessing import store
from preprocessing.grids import ImageSource
from preprocessing.journal import Journal
from preprocessing.plan import Plan
from preprocessing.stats import TRANSFORMS, Moments
from preprocessing.tasks import run_tasks


def _valid_cells(source: ImageSource, index: int) -> np.ndarray:
    return source.valid_cells([source.files[index]])


@dataclass(frozen=True)
class BlockJob:
    """What a block task needs: sources, geometry, the training days, the store path."""

    sources: dict[str, ImageSource]
    grid: PatchGrid
    store_patches: np.ndarray  # [N_store]
    land_pixels: np.ndarray  # [N_store, p, p] bool
    image_dtype: str
    train: tuple[dt.date, dt.date]
    store_path: Path
    journal: Journal


def write_block(job: BlockJob, start: int, dates: list[dt.date]) -> dict[str, dict]:
    """Read one block of days, write its Zarr region, return (and journal) its moments."""
    name = f"block-{start:08d}"
    if job.journal.done(name):
        return job.journal.load(name)
    train_rows = np.array([job.train[0] <= d <= job.train[1] for d in dates])
    blocks, moments = {}, {}
    for var in IMAGE_MODALITIES:
        grid_days = job.sources[var].read(dates)  # [T, H, W]
        patches = patchify(grid_days, job.grid)[:, job.store_patches]  # [T, N_store, p, p]
        patches = patches.astype(job.image_dtype)
        blocks[var] = patches
        on_land = patches[train_rows][:, job.land_pixels]  # [T_train, land pixels]
        moments[var] = Moments.of(on_land, TRANSFORMS[var]).to_dict()
    store.write_images(job.store_path, start, blocks)
    job.journal.record(name, moments)
    return moments


def land_mask_step(plan: Plan, journal: Journal, out: Path) -> np.ndarray:
    if journal.done("landmask") and (out / LAND_MASK_NPY).exists():
        return np.load(out / LAND_MASK_NPY)
    temp = plan.sources["temp"]
    first, last = plan.dates[0], plan.dates[-1]
    files = [
        i
        for i, f in enumerate(temp.files)
        if f.first <= last and f.first + dt.timedelta(days=f.days - 1) >= first
    ]
    parts = run_tasks([(_valid_cells, (temp, i)) for i in files], plan.cfg, "land mask")
    mask = np.logical_and.reduce(parts)
    if not mask.any():
        raise ValueError(f"temperature ({temp.variables}) is valid on no cell on every day")
    save_land_mask(mask, out)
    journal.record("landmask", {"land_cells": int(mask.sum())})
    return mask
