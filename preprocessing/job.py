"""Raw daily NetCDF grids and catchment series to the dataset directory (hydromae preprocess).

The job, in order, each step journalled so that a killed run restarted with the same
settings finishes the same way:

1. index the inputs (metadata only) and check them: grids, units, days, gauges;
2. the land mask: cells where temperature is valid on every day (one dask task per file);
3. the Zarr store's skeleton, with the catchment series, static attributes and
   ``catchment_patch_weight``;
4. the images, one dask task per block of ``window`` days: read, patchify, write the
   block's Zarr region, return the block's normalisation moments;
5. the shards, one dask task per shard: windows cut from the store, written atomically;
6. the manifest, last.

Memory is bounded by one block per worker, whatever the number of years. ``--scheduler
ADDRESS`` runs the tasks on an existing dask.distributed cluster (the output directory
must then be on storage that the workers share).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import config
from pipeline.dataset import (
    CRS,
    FORMAT_VERSION,
    IMAGE_VARS,
    LAND_MASK_NPY,
    MANIFEST,
    SHARDS,
    SPLITS,
    STORE,
    VECTOR_VARS,
    atomic_write,
    date_range,
    encode_json,
    encode_npy,
    shard_name,
    window_starts,
)
from pipeline.grid import PatchGrid, patchify
from pipeline.landmask import PatchTable, check_threshold, save_land_mask
from pipeline.sources import ZarrWindows
from preprocessing import catchments as catchment_io
from preprocessing import store
from preprocessing.grids import ImageSource, index_source
from preprocessing.journal import Journal
from preprocessing.shards import balanced_counts, write_shard
from preprocessing.stats import Moments
from preprocessing.weights import patch_weights, read_boundaries

TRANSFORMS = {
    "precip": "log1p",
    "soil": "none",
    "temp": "none",
    "evap": "none",
    "riverflow": "log1p",
}
IMAGE_DTYPES = ("float32", "float16")


@dataclass
class PreprocessConfig:
    precip: str = field(metadata={"path": True, "metavar": "GLOB", "help": "precipitation NetCDF"})
    temp: str = field(metadata={"path": True, "metavar": "GLOB", "help": "temperature NetCDF"})
    soil: str = field(metadata={"path": True, "metavar": "GLOB", "help": "soil moisture NetCDF"})
    catchments: str = field(
        metadata={"path": True, "metavar": "GLOB_OR_FILE", "help": "CAMELS-GB CSVs or a long table"}
    )
    train: str = field(metadata={"metavar": "START:END", "help": "training days, inclusive"})
    out: Path = field(metadata={"path": True, "metavar": "DIR"})
    precip_var: str = "rainfall"
    temp_var: list[str] = field(
        default_factory=lambda: ["tas"], metadata={"help": "tas, or tasmax tasmin (their mean)"}
    )
    soil_var: str = "sm"
    soil_units: str | None = field(default=None, metadata={"help": "expected soil units"})
    attributes: list[str] = field(
        default_factory=list, metadata={"path": True, "metavar": "GLOB", "help": "attribute CSVs"}
    )
    static_attributes: list[str] = field(
        default_factory=lambda: ["area", "elev_mean", "dpsbar"],
        metadata={"help": "attribute columns given to the model"},
    )
    evap_column: str = "pet"
    riverflow_column: str = field(
        default="discharge_spec", metadata={"help": "discharge_spec (mm/day) or discharge_vol"}
    )
    boundaries: str | None = field(
        default=None, metadata={"path": True, "metavar": "FILE", "help": "catchment polygons"}
    )
    val: str | None = field(default=None, metadata={"metavar": "START:END"})
    test: str | None = field(default=None, metadata={"metavar": "START:END"})
    window: int = field(default=90, metadata={"help": "days per window"})
    stride: int = field(default=90, metadata={"help": "days between window starts"})
    patch_size: int = 10
    land_threshold: float = 0.5
    image_dtype: str = field(default="float32", metadata={"choices": IMAGE_DTYPES})
    samples_per_shard: int = field(default=16, metadata={"help": "windows per shard, at most"})
    scheduler: str | None = field(
        default=None, metadata={"metavar": "ADDRESS", "help": "dask.distributed scheduler"}
    )
    workers: int = field(default=2, metadata={"help": "local dask threads"})
    progress: bool = True


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, PreprocessConfig)


# ------------------------------------------------------------------ planning
def parse_period(text: str, name: str) -> tuple[dt.date, dt.date]:
    try:
        a, b = (dt.date.fromisoformat(part.strip()) for part in text.split(":"))
    except ValueError:
        raise ValueError(
            f"--{name} {text!r}: expected START:END as YYYY-MM-DD:YYYY-MM-DD"
        ) from None
    if b < a:
        raise ValueError(f"--{name} {text!r}: the end is before the start")
    return a, b


@dataclass
class Plan:
    cfg: PreprocessConfig
    sources: dict[str, ImageSource]
    catchment_files: list[Path]
    attribute_files: list[Path]
    splits: dict[str, tuple[dt.date, dt.date]]
    dates: list[dt.date]  # every stored day
    grid: PatchGrid

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """(first index, days) of each block of ``window`` days of the store."""
        w = self.cfg.window
        return [(i, min(w, len(self.dates) - i)) for i in range(0, len(self.dates), w)]

    def windows(self, split: str) -> list[dt.date]:
        return window_starts(*self.splits[split], self.cfg.window, self.cfg.stride)

    def fingerprint(self) -> dict[str, Any]:
        settings = {
            k: v
            for k, v in asdict(self.cfg).items()
            if k not in ("scheduler", "workers", "progress", "out")
        }
        files = {
            name: [(f.path.name, f.path.stat().st_size) for f in src.files]
            for name, src in self.sources.items()
        }
        files["catchments"] = [(p.name, p.stat().st_size) for p in self.catchment_files]
        return json.loads(json.dumps({"settings": settings, "files": files}, default=str))


def make_plan(cfg: PreprocessConfig) -> Plan:
    check_threshold(cfg.land_threshold)
    for name in ("window", "stride", "samples_per_shard", "patch_size", "workers"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    splits = {"train": parse_period(cfg.train, "train")}
    for name in ("val", "test"):
        text = getattr(cfg, name)
        if text:
            splits[name] = parse_period(text, name)
    ordered = sorted(splits.items(), key=lambda kv: kv[1][0])
    for (n1, (_, e1)), (n2, (s2, _)) in itertools.pairwise(ordered):
        if s2 <= e1:
            raise ValueError(f"--{n1} and --{n2} overlap: windows must never straddle a split")
    dates = date_range(ordered[0][1][0], max(e for _, (_, e) in ordered))
    sources = {
        "precip": index_source(
            "precip", config.expand_globs(cfg.precip, "--precip"), [cfg.precip_var]
        ),
        "temp": index_source("temp", config.expand_globs(cfg.temp, "--temp"), list(cfg.temp_var)),
        "soil": index_source(
            "soil", config.expand_globs(cfg.soil, "--soil"), [cfg.soil_var], cfg.soil_units
        ),
    }
    ref = sources["temp"]
    for name, src in sources.items():
        if (
            src.y.shape != ref.y.shape
            or src.x.shape != ref.x.shape
            or not (np.allclose(src.y, ref.y) and np.allclose(src.x, ref.x))
        ):
            raise ValueError(
                f"{src.files[0].path}: the {name} grid ({src.y.size} x {src.x.size}) differs from "
                f"the temperature grid in {ref.files[0].path} ({ref.y.size} x {ref.x.size})"
            )
        src.check_covers(dates)
    grid = PatchGrid(int(ref.y.size), int(ref.x.size), cfg.patch_size)
    attribute_files = config.expand_globs(cfg.attributes, "--attributes") if cfg.attributes else []
    if cfg.static_attributes and not attribute_files:
        raise ValueError(
            f"static attributes {cfg.static_attributes} need --attributes files "
            "(or set static_attributes = [] in the config)"
        )
    return Plan(
        cfg,
        sources,
        config.expand_globs(cfg.catchments, "--catchments"),
        attribute_files,
        splits,
        dates,
        grid,
    )


# ------------------------------------------------------------------ dask tasks
def run_tasks(
    tasks: Sequence[tuple[Callable[..., Any], tuple]], cfg: PreprocessConfig, desc: str
) -> list[Any]:
    """Run ``fn(*args)`` tasks with dask (local threads or a distributed cluster), in order."""
    import dask
    from tqdm import tqdm

    if not tasks:
        return []
    delayed = [dask.delayed(fn, pure=False)(*args) for fn, args in tasks]
    bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=not cfg.progress)
    try:
        if cfg.scheduler:
            from distributed import Client, as_completed

            with Client(cfg.scheduler) as client:
                futures = client.compute(delayed)
                for _ in as_completed(futures):
                    bar.update()
                return client.gather(futures)
        from dask.callbacks import Callback

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in keys:
                    bar.update()

        keys = {d.key for d in delayed}
        with _Progress():
            return list(dask.compute(*delayed, scheduler="threads", num_workers=cfg.workers))
    finally:
        bar.close()


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
    for var in IMAGE_VARS:
        grid_days = job.sources[var].read(dates)  # [T, H, W]
        patches = patchify(grid_days, job.grid)[:, job.store_patches]  # [T, N_store, p, p]
        patches = patches.astype(job.image_dtype)
        blocks[var] = patches
        on_land = patches[train_rows][:, job.land_pixels]  # [T_train, land pixels]
        moments[var] = Moments.of(on_land, TRANSFORMS[var]).to_dict()
    store.write_images(job.store_path, start, blocks)
    job.journal.record(name, moments)
    return moments


@dataclass(frozen=True)
class ShardJob:
    windows: ZarrWindows  # the loader's own Zarr reader: shards and Zarr windows agree
    shard_dir: Path
    journal: Journal


def write_one_shard(job: ShardJob, split: str, index: int, starts: list[dt.date]) -> dict:
    name = shard_name(split, index)
    entry = f"shard-{name}"
    if job.journal.done(entry) and (job.shard_dir / name).exists():
        return job.journal.load(entry)

    def samples():
        for start in starts:
            window = job.windows.read(start)  # [T, N_valid, p, p] images, [T, C] vectors
            members = {f"{v}.npy": encode_npy(window[v]) for v in (*IMAGE_VARS, *VECTOR_VARS)}
            members["meta.json"] = encode_json(window["meta"])
            yield window["__key__"], members

    result = write_shard(job.shard_dir / name, samples())
    result["split"] = split
    job.journal.record(entry, result)
    return result


# ------------------------------------------------------------------ the job
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


def run_job(cfg: PreprocessConfig) -> dict[str, Any]:
    """Run (or finish) the whole job; return the manifest."""
    plan = make_plan(cfg)
    fingerprint = plan.fingerprint()  # stats every input file: once
    out = Path(cfg.out)
    if (out / MANIFEST).exists():
        manifest = _read_json(out / MANIFEST)
        if manifest.get("settings") == fingerprint["settings"]:
            print(f"{out}: already complete ({MANIFEST} present); nothing to do")
            return manifest
        raise ValueError(
            f"{out} holds a finished dataset made with other settings; choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    journal = Journal(out, fingerprint)
    grid = plan.grid
    print(
        f"preprocess: {len(plan.dates)} days {plan.dates[0]}..{plan.dates[-1]}, grid "
        f"{grid.height} x {grid.width}, {len(plan.blocks)} block(s) of {cfg.window} days -> {out}"
    )

    # 1. catchments (small: read in the main process)
    series = catchment_io.read_series(
        plan.catchment_files, plan.dates, cfg.evap_column, cfg.riverflow_column
    )
    table = catchment_io.read_attributes(plan.attribute_files, series.gauge_ids)
    static = catchment_io.static_matrix(table, cfg.static_attributes, plan.attribute_files)

    # 2. land mask and patches
    mask = land_mask_step(plan, journal, out)
    patch_table = PatchTable.from_mask(mask, grid, cfg.land_threshold)
    store_patches = patch_table.land_patch_indices
    valid = patch_table.valid_patch_indices
    land_pixels = patchify(mask, grid)[store_patches]

    # 3. catchment_patch_weight
    polygons = read_boundaries(Path(cfg.boundaries)) if cfg.boundaries else None
    gauges = _gauge_points(table)
    weights = patch_weights(
        grid, plan.sources["temp"].y, plan.sources["temp"].x, series.gauge_ids, polygons, gauges
    )
    weights = weights[:, store_patches]  # [C, N_store]

    # 4. the store's skeleton
    store_path = out / STORE
    units = {n: plan.sources[n].units for n in IMAGE_VARS} | series.units
    layout = store.StoreLayout(
        plan.dates, store_patches, grid.patch_size, cfg.image_dtype, cfg.window,
        series.gauge_ids, list(cfg.static_attributes), units,
    )  # fmt: skip
    if not (journal.done("store") and store_path.exists()):
        store.create(
            store_path, layout, static, weights, series.evap, series.riverflow,
            {"title": "hydromae dataset", "Conventions": "CF-1.8", "crs": CRS},
        )  # fmt: skip
        journal.record("store", {"days": len(plan.dates), "patches": len(store_patches)})

    # 5. images, block by block
    job = BlockJob(
        plan.sources, grid, store_patches, land_pixels, cfg.image_dtype,
        plan.splits["train"], store_path, journal,
    )  # fmt: skip
    block_tasks = [(write_block, (job, i, plan.dates[i : i + n])) for i, n in plan.blocks]
    block_moments = run_tasks(block_tasks, cfg, "images")
    moments = {}
    for var in IMAGE_VARS:
        total = Moments()
        for part in block_moments:  # block order: the same sums however the run went
            total = total.merge(Moments(**part[var]))
        moments[var] = total
    train_rows = np.array(
        [plan.splits["train"][0] <= d <= plan.splits["train"][1] for d in plan.dates]
    )
    for var, values in (("evap", series.evap), ("riverflow", series.riverflow)):
        moments[var] = Moments.of(values[train_rows], TRANSFORMS[var])
    normalization = {
        var: asdict(moments[var].stats(TRANSFORMS[var], var)) for var in (*IMAGE_VARS, *VECTOR_VARS)
    }

    # 6. shards
    shard_dir = out / SHARDS
    shard_dir.mkdir(exist_ok=True)
    shard_tasks, split_info = [], {}
    for split in SPLITS:
        if split not in plan.splits:
            continue
        windows = ZarrWindows(
            str(store_path), plan.dates[0], cfg.window, store_patches, valid, split
        )
        shard_job = ShardJob(windows, shard_dir, journal)
        starts = plan.windows(split)
        counts = balanced_counts(len(starts), cfg.samples_per_shard)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        for i, n in enumerate(counts):
            shard_tasks.append(
                (write_one_shard, (shard_job, split, i, starts[offsets[i] : offsets[i] + n]))
            )
        a, b = plan.splits[split]
        split_info[split] = {
            "start": a.isoformat(),
            "end": b.isoformat(),
            "windows": len(starts),
            "samples": len(starts) * len(series.gauge_ids),
            "window_starts": [s.isoformat() for s in starts],
        }
        if not starts:
            print(
                f"note: the {split} split ({a}..{b}) is shorter than one window: no {split} windows"
            )
    shards = run_tasks(shard_tasks, cfg, "shards")

    # 7. the manifest, last
    manifest = {
        "format_version": FORMAT_VERSION,
        "software": {"hydromae": version("hydromae")},
        "settings": fingerprint["settings"],
        "sources": {
            name: {
                "variables": src.variables,
                "files": len(src.files),
                "first_file": src.files[0].path.name,
                "attributes": src.attrs,
            }
            for name, src in plan.sources.items()
        }
        | {"catchments": {"files": len(plan.catchment_files), "columns": series.columns}},
        "grid": {
            "height": grid.height,
            "width": grid.width,
            "patch_size": grid.patch_size,
            "patch_rows": grid.rows,
            "patch_cols": grid.cols,
            "crs": CRS,
            "y": [
                float(plan.sources["temp"].y[0]),
                float(plan.sources["temp"].y[1] - plan.sources["temp"].y[0]),
            ],
            "x": [
                float(plan.sources["temp"].x[0]),
                float(plan.sources["temp"].x[1] - plan.sources["temp"].x[0]),
            ],
        },
        "land_mask": {"file": LAND_MASK_NPY, **patch_table.summary()},
        "land_threshold": cfg.land_threshold,
        "valid_patch_indices": valid.tolist(),
        "store_patch_indices": store_patches.tolist(),
        "variables": {
            var: {
                "units": units[var],
                "kind": "image" if var in IMAGE_VARS else "vector",
                "source": plan.sources[var].variables if var in IMAGE_VARS else series.columns[var],
                "dtype": cfg.image_dtype if var in IMAGE_VARS else "float32",
            }
            for var in (*IMAGE_VARS, *VECTOR_VARS)
        },
        "normalization": normalization,
        "period": {
            "start": plan.dates[0].isoformat(),
            "end": plan.dates[-1].isoformat(),
            "days": len(plan.dates),
        },
        "splits": split_info,
        "window": cfg.window,
        "stride": cfg.stride,
        "catchments": {
            "ids": series.gauge_ids,
            "static_attributes": list(cfg.static_attributes),
            "static": [[None if not np.isfinite(v) else float(v) for v in row] for row in static],
            "catchment_patch_weight": [
                {
                    str(int(p)): round(float(w), 6)
                    for p, w in zip(store_patches, row, strict=True)
                    if w > 0
                }
                for row in weights
            ],
            "boundaries": "polygons" if polygons else "discs",
        },
        "shards": shards,
    }
    atomic_write(out / MANIFEST, encode_json(manifest))
    journal.close()
    print(
        f"wrote {out}: {len(shards)} shard(s), "
        + ", ".join(f"{s}: {i['windows']} windows" for s, i in split_info.items())
    )
    return manifest


def _gauge_points(table) -> dict[str, tuple[float, float, float]] | None:
    needed = ("gauge_easting", "gauge_northing", "area")
    if not all(c in table.columns for c in needed):
        return None
    return {
        str(g): tuple(float(v) for v in row)
        for g, row in zip(table.index, table[list(needed)].to_numpy(), strict=True)
    }


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(PreprocessConfig, args)
    run_job(cfg)
    return 0
