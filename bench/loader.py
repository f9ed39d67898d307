"""Benchmark: the loader's throughput in bytes of batch tensors per second (not a test).

On one synthetic dataset on the Great Britain grid (290 x 180, 94 valid patches; default
540 days, 10 catchments, 90-day windows every 15 days: 31 training windows in 8 shards),
in one run, all delivering batches of ``--batch-size`` samples of the same shapes:

  (a) the reference: one process reads the shards (``pipeline.shard.read_shard``, the
      loader's strict tar reader), expands each window to its catchments and stacks the
      five modalities into ``[B, T, N_valid, p*p]`` / ``[B, T]`` tensors, nothing else;
      run before and after the others, the faster run is the reference;
  (b) the project's loader (``build_loader``, shards, training mode, masks and validity
      and all) with 0, 1 and 2 worker processes;
  (c) a sanity check: an upstream-style loader that reads full 290 x 180 grids from the
      raw NetCDF files for every (catchment, window) sample (a few batches only);
  (d) the ceiling (``--no-ceiling`` skips it): plain copy bandwidth, and the copies that
      the loader cannot avoid (each sample's image and validity into the batch, from
      arrays scattered by the shuffle), each in one process and in two at once.

"bytes/s" counts the five modality tensors of each batch (what the reference delivers);
the loader's extra tensors (validity, masks, static ...) are shown apart. Each of (a) and
(b) runs a first epoch, timed apart from its first batch (worker start-up) on, and then
``--epochs`` more, timed together: the *steady* rate, which is what a training run sees
after its first minute. The first epoch includes the one-off costs of new processes (the
kernel's first touch of every page of the recycled batch buffers and of the heap, about
50 ms per 100 MB), reported as the *first-epoch* rate. Every configuration runs with the
same malloc settings (``pipeline.heap.keep_freed_memory``, which the loader's workers
apply). Goal: (b) with 2 workers, steady, at least 0.8 of (a), steady. The dataset is made
once under ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline import config
from pipeline.catchment import expand
from pipeline.heap import keep_freed_memory
from pipeline.manifest import Manifest
from pipeline.schema import IMAGE_MODALITIES, SHARDS, VECTOR_MODALITIES
from pipeline.shard import read_shard

SERIES = "CAMELS_GB_hydromet_timeseries"
DATA_KEYS = (*IMAGE_MODALITIES, *VECTOR_MODALITIES)


def make_dataset(work: Path, days: int, catchments: int, stride: int) -> Path:
    from preprocessing.job import run_job
    from preprocessing.plan import PreprocessConfig
    from preprocessing.synth import generate

    raw, out = work / "raw", work / "dataset"
    if (out / "manifest.json").exists():
        return out
    print(f"making the dataset in {work} (once) ...", flush=True)
    generate(raw, start="2000-01-01", days=days, catchments=catchments, seed=0, progress=False)
    end = dt.date(2000, 1, 1) + dt.timedelta(days=days - 1)
    settings = {
        "out": out,
        "train": f"2000-01-01:{end.isoformat()}",
        "val": None,
        "test": None,
        "window": 90,
        "stride": stride,
        "samples_per_shard": 4,
        "progress": False,
    }
    run_job(config.load(PreprocessConfig, raw / "preprocess.toml", settings))
    return out


def tensor_bytes(batch: dict, keys: tuple[str, ...] | None = None) -> int:
    return sum(
        v.numel() * v.element_size()
        for k, v in batch.items()
        if isinstance(v, torch.Tensor) and (keys is None or k in keys)
    )


def measure(batches: Iterator[tuple[int, dict]], label: str) -> dict:
    """Time ``(epoch, batch)`` pairs: epoch 0 after its first batch, then the later epochs."""
    first = next(batches)[1]
    last = time.perf_counter()  # when the latest batch arrived
    clock = {"first": [last, 0, 0, 0], "steady": [0.0, 0, 0, 0]}  # start, batches, bytes
    part = clock["first"]
    for epoch, batch in batches:
        now = time.perf_counter()
        if epoch > 0 and part is clock["first"]:  # the switch: epoch 1's first batch is steady
            part[0] = last - part[0]
            part = clock["steady"]
            part[0] = last
        part[1] += 1
        part[2] += tensor_bytes(batch, DATA_KEYS)
        part[3] += tensor_bytes(batch)
        last = now
    part[0] = last - part[0]
    result = {"label": label, "batch_mb": tensor_bytes(first, DATA_KEYS) / 1e6}
    for name, (seconds, n, data, total) in clock.items():
        if n:
            result[name] = {
                "batches": n,
                "seconds": seconds,
                "data_gb_s": data / seconds / 1e9,
                "all_gb_s": total / seconds / 1e9,
            }
    steady = result.get("steady", result["first"])  # (c) has one epoch only
    result["data_gb_s"] = steady["data_gb_s"]
    text = "   ".join(
        f"{name}: {r['batches']:3d} batches {r['seconds']:5.2f} s {r['data_gb_s']:6.3f} GB/s "
        f"({r['all_gb_s']:5.2f} all tensors)"
        for name in ("first", "steady")
        if (r := result.get(name))
    )
    print(f"  {label:<34} {text}", flush=True)
    return result


# ------------------------------------------------------------------ (a) the reference
def reference(data: Path, batch_size: int, epochs: int) -> Iterator[tuple[int, dict]]:
    manifest = Manifest.read(data)
    table = manifest.catchment_table()
    shards = [data / SHARDS / e.name for e in manifest.split_shards("train")]
    p2 = manifest.grid.patch_size**2
    for epoch in range(epochs):
        pending: list[dict] = []
        for shard in shards:
            for window in read_shard(shard):
                pending += expand(window, table)
                while len(pending) >= batch_size:
                    chunk, pending = pending[:batch_size], pending[batch_size:]
                    batch = {}
                    for name in IMAGE_MODALITIES:
                        x = np.stack([s[name] for s in chunk])  # [B, T, N, p, p]
                        batch[name] = torch.from_numpy(x.reshape(*x.shape[:3], p2))
                    for name in VECTOR_MODALITIES:
                        batch[name] = torch.from_numpy(np.stack([s[name] for s in chunk]))
                    yield epoch, batch


# ------------------------------------------------------------------ (b) the loader
def project(data: Path, batch_size: int, epochs: int, workers: int) -> Iterator[tuple[int, dict]]:
    from pipeline.loader import build_loader

    loader = build_loader(
        source=str(data), batch_size=batch_size, num_workers=workers, rank=0, world_size=1
    )
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch


# ------------------------------------------------------------------ (c) upstream style
def upstream(raw: Path, data: Path, batch_size: int, batches: int) -> Iterator[tuple[int, dict]]:
    """Full grids from NetCDF for every (catchment, window) sample, as the seed's loader."""
    import netCDF4
    import pandas as pd

    manifest = Manifest.read(data)
    files = {
        "precip": ("rainfall", sorted(raw.glob("rainfall_hadukgrid_uk_5km_day_*.nc"))),
        "soil": ("sm", sorted(raw.glob("sm_synthetic_5km_day_*.nc"))),
        "temp": ("tas", sorted(raw.glob("tas_hadukgrid_uk_5km_day_*.nc"))),
    }
    ids = list(manifest.catchments.ids)
    series = {
        g: pd.read_csv(next(raw.glob(f"data/timeseries/{SERIES}_{g}_*.csv")), index_col=0)
        for g in ids
    }
    starts = list(manifest.splits["train"].window_starts)

    def grid(name: str, start: dt.date) -> np.ndarray:
        var, paths = files[name]
        days = []
        for path in paths:  # every file is opened for every sample, as a per-sample reader does
            with netCDF4.Dataset(path) as nc:
                t = nc["time"]
                dates = netCDF4.num2date(t[:], t.units, t.calendar)
                first = dt.date(dates[0].year, dates[0].month, dates[0].day)
                lo = (start - first).days
                hi = lo + 90
                if hi <= 0 or lo >= len(dates):
                    continue
                days.append(np.ma.filled(nc[var][max(lo, 0) : min(hi, len(dates))], np.nan))
        return np.concatenate(days).astype(np.float32)  # [90, H, W]

    def samples():
        for start in starts:
            for g in ids:
                end = start + dt.timedelta(days=89)
                rows = series[g].loc[start.isoformat() : end.isoformat()]
                yield {
                    **{name: grid(name, start) for name in IMAGE_MODALITIES},
                    "evap": rows["pet"].to_numpy(np.float32),
                    "riverflow": rows["discharge_spec"].to_numpy(np.float32),
                }

    it = samples()
    for _ in range(batches + 1):
        chunk = [next(it) for _ in range(batch_size)]
        yield 0, {k: torch.from_numpy(np.stack([s[k] for s in chunk])) for k in DATA_KEYS}


# ------------------------------------------------------------------ (d) the ceiling
def copy_rate(seconds: float, batch: int, shape: tuple[int, ...], floor: bool) -> float:
    """Bytes of batch data written per second, by plain copies or the loader's floor.

    ``floor=False``: copy whole ``[batch, *shape]`` float32 arrays, round-robin over four
    (plain copy bandwidth, counted once per byte copied). ``floor=True``: what the loader
    cannot avoid per batch: ``batch`` samples' images ``shape`` float32 and their bool
    validity, each from a different one of 24 prepared windows (as the shuffle leaves
    them), into one reused batch buffer; counts the float bytes, as the benchmark does.
    """
    rng = np.random.default_rng(0)
    out = np.zeros((batch, *shape), np.float32)
    valid = np.zeros((batch, *shape), bool)
    if floor:
        windows = [rng.random(shape, dtype=np.float32) for _ in range(24)]
        masks = [w > 0.1 for w in windows]
    else:
        sources = [rng.random((batch, *shape), dtype=np.float32) for _ in range(4)]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if floor:
            for i in range(batch):
                j = (n * batch + i) * 7 % len(windows)
                np.copyto(out[i], windows[j])
                np.copyto(valid[i], masks[j])
        else:
            np.copyto(out, sources[n % len(sources)])
        n += 1
    return n * out.nbytes / (time.perf_counter() - start)


def _copy_rate_into(queue, *args) -> None:
    queue.put(copy_rate(*args))


def ceiling(batch: int, shape: tuple[int, ...], seconds: float = 2.0) -> list[dict]:
    """Plain copies and the loader's unavoidable copies, in one process and two at once."""
    context = multiprocessing.get_context("fork")  # children use numpy only
    results = []
    for floor in (False, True):
        for procs in (1, 2):
            queue = context.Queue()
            args = (queue, seconds, batch, shape, floor)
            children = [context.Process(target=_copy_rate_into, args=args) for _ in range(procs)]
            for child in children:
                child.start()
            rates = [queue.get() for _ in children]
            for child in children:
                child.join()
            what = "loader's unavoidable batch copies" if floor else "plain copy"
            label = f"(d) {what}, {procs} process{'es' if procs > 1 else ''}"
            result = {"label": label, "data_gb_s": sum(rates) / 1e9}
            print(
                f"  {label:<58} {result['data_gb_s']:6.3f} GB/s "
                f"({' + '.join(f'{r / 1e9:.2f}' for r in rates)})",
                flush=True,
            )
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/hydromae-bench-loader"))
    parser.add_argument("--days", type=int, default=540)
    parser.add_argument("--catchments", type=int, default=10)
    parser.add_argument("--stride", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--epochs", type=int, default=3, help="timed epochs after the first (steady rate)"
    )
    parser.add_argument("--upstream-batches", type=int, default=2)
    parser.add_argument("--no-ceiling", action="store_true", help="skip (d)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    keep_freed_memory()  # as in the loader's workers: the same malloc settings for all

    data = make_dataset(args.work, args.days, args.catchments, args.stride)
    m = Manifest.read(data)
    train = m.splits["train"]
    print(
        f"dataset: {train.windows} training windows x {len(m.catchments.ids)} "
        f"catchments, window {m.window} days, {len(m.valid_patch_indices)} valid patches, "
        f"{sum(e.bytes for e in m.shards) / 1e6:.0f} MB of shards; batch size "
        f"{args.batch_size}; per configuration a first epoch, then {args.epochs} timed",
        flush=True,
    )
    for shard in (data / SHARDS).glob("*.tar"):  # the page cache holds the shards for all
        shard.read_bytes()
    epochs = 1 + args.epochs
    results = [measure(reference(data, args.batch_size, epochs), "(a) reference, 1 process")]
    for workers in (0, 1, 2):
        results.append(
            measure(
                project(data, args.batch_size, epochs, workers),
                f"(b) loader, {workers} worker(s)",
            )
        )
    results.append(measure(reference(data, args.batch_size, epochs), "(a) reference, again"))
    results.append(
        measure(
            upstream(args.work / "raw", data, args.batch_size, args.upstream_batches),
            "(c) upstream-style NetCDF grids",
        )
    )
    if not args.no_ceiling:
        shape = (m.window, len(m.valid_patch_indices), m.grid.patch_size**2)
        results += ceiling(args.batch_size, shape)
    ref = max(results[0]["data_gb_s"], results[4]["data_gb_s"])
    ref_first = max(results[0]["first"]["data_gb_s"], results[4]["first"]["data_gb_s"])
    print(
        f"\nratios to the reference, steady ({ref:.3f} GB/s of batch data, the faster of its "
        f"runs) and first epoch ({ref_first:.3f} GB/s):"
    )
    for r in results:
        r["ratio"] = r["data_gb_s"] / ref
        first = r.get("first", {}).get("data_gb_s")
        r["first_ratio"] = None if first is None or "steady" not in r else first / ref_first
        shown = "" if r["first_ratio"] is None else f"   first epoch {r['first_ratio']:6.3f}"
        print(f"  {r['label']:<58} {r['ratio']:6.3f}{shown}")
    goal = results[3]["ratio"]
    print(
        f"\ngoal: loader with 2 workers >= 0.8 x reference, steady: {goal:.3f} "
        f"({'met' if goal >= 0.8 else 'NOT met'}); first epoch: {results[3]['first_ratio']:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
