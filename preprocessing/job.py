"""Raw daily NetCDF grids and catchment series to the dataset directory (hydromae preprocess).

``run_job`` runs these steps in order, each journalled (``preprocessing.journal``) so that
a killed run restarted with the same settings finishes the same way, byte for byte:

1. plan: index the inputs (metadata only) and check them (``preprocessing.plan``);
2. catchments: series, static attributes and ``catchment_patch_weight``;
3. the land mask: cells where temperature is valid on every day (one dask task per file);
4. the Zarr store's skeleton, with the catchment series and attributes;
5. the images, one dask task per block of ``window`` days (``preprocessing.blocks``),
   and the normalisation statistics merged from the blocks;
6. the shards, one dask task per shard (``preprocessing.shard_tasks``);
7. the manifest, last (``pipeline.manifest.Manifest``).

Memory is bounded by one block per worker, whatever the number of years. ``--scheduler
ADDRESS`` runs the tasks on an existing dask.distributed cluster (the output directory
must then be on storage that the workers share).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.grid import patchify
from pipeline.landmask import PatchTable
from pipeline.manifest import (
    CatchmentInfo,
    GridInfo,
    LandMaskInfo,
    Manifest,
    Period,
    ShardEntry,
    SplitInfo,
    VariableInfo,
)
from pipeline.masking import new_generator
from pipeline.normalize import VariableStats
from pipeline.schema import (
    CRS,
    FORMAT_VERSION,
    IMAGE_MODALITIES,
    LAND_MASK_NPY,
    LAND_MASK_PT,
    MANIFEST,
    MODALITIES,
    SHARDS,
    SPLITS,
    STORE,
)
from pipeline.store import ZarrWindows
from pipeline.window import balanced_counts
from preprocessing import catchments as catchment_io
from preprocessing import store
from preprocessing.blocks import BlockJob, land_mask_step, write_block
from preprocessing.journal import JOURNAL, Journal, changed_inputs
from preprocessing.plan import Plan, PreprocessConfig, make_plan
from preprocessing.shard_tasks import ShardJob, write_one_shard
from preprocessing.stats import TRANSFORMS, Moments
from preprocessing.tasks import run_tasks
from preprocessing.weights import PixelShares, patch_totals, pixel_weights, read_boundaries


@dataclass(frozen=True)
class Catchments:
    """The catchment inputs as arrays, in the store's catchment order."""

    series: catchment_io.GaugeRecords  # evap, riverflow [T, C]
    static: np.ndarray  # [C, A] float32
    weights: np.ndarray  # [C, N_store] float64, area share per stored patch
    pixels: list[PixelShares]  # [C] {stored patch: {pixel: area share}}
    boundaries: str  # "polygons" or "discs"
    holdout: tuple[str, ...]  # gauge ids held out of training


def run_job(cfg: PreprocessConfig) -> Manifest:
    """Run (or finish) the whole job; return the manifest.

    Everything that can be checked is checked before anything is written (the plan, the
    catchment inputs), and nothing already in ``cfg.out`` that hydromae did not write is
    touched.
    """
    plan = make_plan(cfg)
    settings = plan.settings()
    out = Path(cfg.out)
    finished = check_out_dir(out, settings, input_files(plan))
    if finished is not None:
        return finished
    records = read_catchment_inputs(plan)
    out.mkdir(parents=True, exist_ok=True)
    journal = Journal.open(
        out, settings, input_files(plan, times=True), lambda: remove_outputs(out)
    )
    grid = plan.grid
    print(
        f"preprocess: {len(plan.dates)} days {plan.dates[0]}..{plan.dates[-1]}, grid "
        f"{grid.height} x {grid.width}, {len(plan.blocks)} block(s) of {cfg.window} days -> {out}"
    )
    mask = land_mask_step(plan, journal, out)
    patches = PatchTable.from_mask(mask, grid, cfg.land_threshold)
    catchments = catchment_weights(plan, records, patches.land_patch_indices)
    create_store(plan, journal, out / STORE, patches, catchments)
    normalization = write_images(plan, journal, out / STORE, mask, patches, catchments)
    splits, shards = write_shards(plan, journal, out, patches, len(catchments.series.gauge_ids))
    manifest = build_manifest(plan, settings, patches, catchments, normalization, splits, shards)
    manifest.write(out)
    journal.close()
    report_uncovered(manifest)
    print(
        f"wrote {out}: {len(shards)} shard(s), "
        + ", ".join(f"{s}: {i.windows} windows" for s, i in splits.items())
    )
    return manifest


def input_files(plan: Plan, times: bool = False) -> dict[str, list[list]]:
    """Every input file per group, ``[name, bytes]`` (and with ``times`` the modification
    time in ns, for the journal): what a dataset was made from."""
    groups: dict[str, list[Path]] = {
        name: list(dict.fromkeys(f.path for f in src.files)) for name, src in plan.sources.items()
    }
    groups["catchments"] = list(plan.catchment_files)
    groups["attributes"] = list(plan.attribute_files)
    if plan.boundaries:
        groups["boundaries"] = [plan.boundaries]
    out = {}
    for group, paths in groups.items():
        stats = [(p.name, p.stat()) for p in paths]
        out[group] = [[n, st.st_size, *([st.st_mtime_ns] if times else [])] for n, st in stats]
    return out


def check_out_dir(out: Path, settings: dict, inputs: dict[str, list[list]]) -> Manifest | None:
    """A finished dataset to keep (same settings and inputs), or None to (re)start the job;
    refuse a directory that would be damaged or whose data would be stale."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if (out / MANIFEST).exists():
        manifest = Manifest.read(out)
        if manifest.settings != settings:
            raise ValueError(
                f"{out} holds a finished dataset made with other settings; choose another --out"
            )
        changed = changed_inputs(manifest.to_dict()["inputs"], inputs)
        if changed:
            raise ValueError(
                f"{out} holds a finished dataset made from inputs that have changed since "
                f"({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}): its data "
                f"would be stale; choose another --out, or delete {out} to rebuild it"
            )
        print(f"{out}: already complete ({MANIFEST} present); nothing to do")
        return manifest
    if out.exists() and not (out / JOURNAL).exists():
        others = sorted(p.name for p in out.iterdir())
        if others:
            raise ValueError(
                f"--out {out} holds files that hydromae did not write ({', '.join(others[:3])}"
                f"{' ...' if len(others) > 3 else ''}): choose an empty or new directory"
            )
    return None


def remove_outputs(out: Path) -> None:
    """Remove what an unfinished run wrote into ``out`` (its own directory), to start over."""
    for name in (STORE, SHARDS):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (LAND_MASK_NPY, LAND_MASK_PT):
        (out / name).unlink(missing_ok=True)


def read_catchment_inputs(plan: Plan) -> tuple[catchment_io.GaugeRecords, np.ndarray, dict]:
    """The catchments' series, static attributes ``[C, A]``, boundary polygons (None:
    discs) and held-out ids, read and checked before anything is written."""
    cfg = plan.cfg
    series = catchment_io.read_series(
        plan.catchment_files, plan.dates, cfg.evap_column, cfg.riverflow_column
    )
    holdout = resolve_holdout(cfg.holdout_catchments, series.gauge_ids)
    table = catchment_io.read_attributes(plan.attribute_files, series.gauge_ids)
    static = catchment_io.static_matrix(table, cfg.static_attributes, plan.attribute_files)
    polygons = read_boundaries(plan.boundaries) if plan.boundaries else None
    where = {"polygons": polygons, "gauges": catchment_io.gauge_points(table), "holdout": holdout}
    return series, static, where


def resolve_holdout(given: list[str], gauge_ids: list[str]) -> tuple[str, ...]:
    """The gauge ids held out of training: those given, or (one number N that is no gauge
    id) N of them drawn by a generator keyed by the gauges, the same on every rerun."""
    if len(given) == 1 and given[0] not in gauge_ids and given[0].isdigit():
        n = int(given[0])
        if not 0 < n < len(gauge_ids):
            raise ValueError(
                f"--holdout-catchments {n}: must leave at least one of the {len(gauge_ids)} "
                "catchments for training"
            )
        picked = new_generator("holdout", n, *gauge_ids).choice(len(gauge_ids), n, replace=False)
        return tuple(gauge_ids[i] for i in sorted(picked))
    unknown = [g for g in given if g not in gauge_ids]
    if unknown:
        raise ValueError(
            f"--holdout-catchments: gauge(s) {unknown[:5]} are not among the "
            f"{len(gauge_ids)} catchments read"
        )
    if given and len(set(given)) >= len(gauge_ids):
        raise ValueError("--holdout-catchments: every catchment held out: none left to train on")
    return tuple(g for g in gauge_ids if g in set(given))


def catchment_weights(plan: Plan, records: tuple, store_patches: np.ndarray) -> Catchments:
    """The catchments with their area share in each stored patch."""
    series, static, where = records
    cells = pixel_weights(
        plan.grid,
        plan.sources["temp"].y,
        plan.sources["temp"].x,
        series.gauge_ids,
        where["polygons"],
        where["gauges"],
    )
    weights = patch_totals(cells, plan.grid.num_patches)[:, store_patches]
    stored = set(store_patches.tolist())
    pixels = [{n: shares for n, shares in row.items() if n in stored} for row in cells]
    boundaries = "polygons" if where["polygons"] else "discs"
    return Catchments(series, static, weights, pixels, boundaries, where["holdout"])


def report_uncovered(manifest: Manifest) -> None:
    """Say which catchments cover no valid patch (their weights in the manifest's catchment
    table, the one the model and the regressions read, are all 0): their rain, soil
    moisture and temperature are never seen (a small coastal catchment); their series are
    kept."""
    table = manifest.catchment_table()
    uncovered = [g for g, row in zip(table.ids, table.weight, strict=True) if not row.any()]
    if uncovered:
        shown = ", ".join(uncovered[:10]) + (" ..." if len(uncovered) > 10 else "")
        print(
            f"preprocess: note: {len(uncovered)} of {len(table.ids)} catchment(s) cover no "
            f"valid land patch, so their images are never seen (their series are kept): {shown}"
        )


def create_store(
    plan: Plan, journal: Journal, path: Path, patches: PatchTable, catchments: Catchments
) -> None:
    """The Zarr store's skeleton, with the catchment series and attributes (once)."""
    if journal.done("store") and path.exists():
        return
    cfg, series = plan.cfg, catchments.series
    layout = store.StoreLayout(
        plan.dates, patches.land_patch_indices, plan.grid.patch_size, cfg.image_dtype,
        cfg.window, series.gauge_ids, list(cfg.static_attributes), plan.units(series),
    )  # fmt: skip
    store.create(
        path, layout, catchments.static, catchments.weights, series.evap, series.riverflow,
        {"title": "hydromae dataset", "Conventions": "CF-1.8", "crs": CRS},
    )  # fmt: skip
    journal.record("store", {"days": len(plan.dates), "patches": len(patches.land_patch_indices)})


def write_images(
    plan: Plan,
    journal: Journal,
    path: Path,
    mask: np.ndarray,
    patches: PatchTable,
    catchments: Catchments,
) -> dict[str, VariableStats]:
    """Every block of images into the store; the normalisation statistics of every variable
    (training period, land pixels, after each variable's transform)."""
    cfg, grid = plan.cfg, plan.grid
    stored = patches.land_patch_indices
    job = BlockJob(
        plan.sources, grid, stored, patchify(mask, grid)[stored], cfg.image_dtype,
        plan.splits["train"], path, journal,
    )  # fmt: skip
    tasks = [(write_block, (job, i, plan.dates[i : i + n])) for i, n in plan.blocks]
    block_moments = run_tasks(tasks, cfg, "images")
    moments = {}
    for var in IMAGE_MODALITIES:
        total = Moments()
        for part in block_moments:  # block order: the same sums however the run went
            total = total.merge(Moments(**part[var]))
        moments[var] = total
    first, last = plan.splits["train"]
    train_rows = np.array([first <= d <= last for d in plan.dates])
    series = catchments.series
    gauged = [i for i, g in enumerate(series.gauge_ids) if g not in catchments.holdout]
    for var, values in (("evap", series.evap), ("riverflow", series.riverflow[:, gauged])):
        moments[var] = Moments.of(values[train_rows], TRANSFORMS[var])  # no held-out flow
    return {var: moments[var].stats(TRANSFORMS[var], var) for var in MODALITIES}


def write_shards(
    plan: Plan, journal: Journal, out: Path, patches: PatchTable, n_catchments: int
) -> tuple[dict[str, SplitInfo], list[ShardEntry]]:
    """Every split's shards (one dask task each); the splits' window tables and the shard list."""
    cfg = plan.cfg
    shard_dir = out / SHARDS
    shard_dir.mkdir(exist_ok=True)
    tasks, splits = [], {}
    for split in SPLITS:
        if split not in plan.splits:
            continue
        windows = ZarrWindows(
            str(out / STORE), plan.dates[0], cfg.window, patches.land_patch_indices,
            patches.valid_patch_indices, split,
        )  # fmt: skip
        job = ShardJob(windows, shard_dir, journal)
        starts = plan.windows(split)
        offset = 0
        for i, n in enumerate(balanced_counts(len(starts), cfg.samples_per_shard)):
            tasks.append((write_one_shard, (job, split, i, starts[offset : offset + n])))
            offset += n
        a, b = plan.splits[split]
        splits[split] = SplitInfo(a, b, len(starts), len(starts) * n_catchments, tuple(starts))
    entries = [ShardEntry(**entry) for entry in run_tasks(tasks, cfg, "shards")]
    return splits, entries


def build_manifest(
    plan: Plan,
    settings: dict,
    patches: PatchTable,
    catchments: Catchments,
    normalization: dict[str, VariableStats],
    splits: dict[str, SplitInfo],
    shards: list[ShardEntry],
) -> Manifest:
    """The dataset's manifest: what the directory holds, with no wall-clock time in it."""
    cfg, grid, series = plan.cfg, plan.grid, catchments.series
    ys, xs = plan.sources["temp"].y, plan.sources["temp"].x
    units = plan.units(series)
    stored = patches.land_patch_indices
    return Manifest(
        format_version=FORMAT_VERSION,
        software={"hydromae": version("hydromae")},
        settings=settings,
        inputs={g: tuple((n, size) for n, size in files) for g, files in input_files(plan).items()},
        sources={
            name: {
                "variables": src.variables,
                "files": len(src.files),
                "first_file": src.files[0].path.name,
                "attributes": src.attrs,
            }
            for name, src in plan.sources.items()
        }
        | {"catchments": {"files": len(plan.catchment_files), "columns": series.columns}},
        grid=GridInfo(
            height=grid.height,
            width=grid.width,
            patch_size=grid.patch_size,
            patch_rows=grid.rows,
            patch_cols=grid.cols,
            crs=CRS,
            y=(float(ys[0]), float(ys[1] - ys[0])),
            x=(float(xs[0]), float(xs[1] - xs[0])),
        ),
        land_mask=LandMaskInfo(file=LAND_MASK_NPY, **patches.summary()),
        land_threshold=cfg.land_threshold,
        valid_patch_indices=tuple(int(p) for p in patches.valid_patch_indices),
        store_patch_indices=tuple(int(p) for p in stored),
        variables={
            var: VariableInfo(
                units=units[var],
                kind="image" if var in IMAGE_MODALITIES else "vector",
                source=plan.sources[var].variables
                if var in IMAGE_MODALITIES
                else series.columns[var],
                dtype=cfg.image_dtype if var in IMAGE_MODALITIES else "float32",
            )
            for var in MODALITIES
        },
        normalization=normalization,
        period=Period(plan.dates[0], plan.dates[-1], len(plan.dates)),
        splits=splits,
        window=cfg.window,
        stride=cfg.stride,
        catchments=CatchmentInfo(
            ids=tuple(series.gauge_ids),
            static_attributes=tuple(cfg.static_attributes),
            static=tuple(
                tuple(None if not np.isfinite(v) else float(v) for v in row)
                for row in catchments.static
            ),
            catchment_patch_weight=tuple(
                {int(p): round(float(w), 6) for p, w in zip(stored, row, strict=True) if w > 0}
                for row in catchments.weights
            ),
            catchment_pixel_weight=tuple(
                {
                    int(p): {int(k): round(float(w), 6) for k, w in sorted(shares.items())}
                    for p, shares in sorted(row.items())
                }
                for row in catchments.pixels
            ),
            boundaries=catchments.boundaries,
            holdout=catchments.holdout,
        ),
        shards=tuple(shards),
    )
