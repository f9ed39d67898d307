"""Benchmark: what the loader hands the trainer at CAMELS-GB scale (not a test).

On synthetic data at all 671 CAMELS-GB gauges (``--years``, default 2 and 8 years of days
from 2000-01-01, 90-day windows every 15 days), the training loader (shards, 2 workers,
``--batch-size`` 32) runs in each layout, with all catchments of a window
(``catchments_per_window`` 0) and with 8:

- ``samples``: every sample carries its window's grids (the seed's per-sample contract);
- ``windows``: each batch carries the grids of its ``batch_size / window_samples`` windows
  once, with ``window_index [B]`` (``--window-samples``, default 8: 4 windows a batch),
  their grids in float32 and then in float16 (``image_dtype``).

For each it prints the bytes of one batch's tensors per sample, what an epoch would hand
the trainer against the bytes of its shards, samples/s after the first batch (over
``--batches`` batches) and the CPU time of the loader's processes per sample (what
matters on a machine whose other cores feed a GPU), the peak proportional set size
(PSS: shared pages counted once) of the loader's processes together, and the share of
the epoch's samples that no batch carries. Datasets are made once under ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

import torch

from pipeline.loader import build_loader
from pipeline.manifest import Manifest

START = "2000-01-01"
KINDS = (("samples", "float32"), ("windows", "float32"), ("windows", "float16"))


def make_dataset(work: Path, years: int, catchments: int) -> Path:
    """Synthesise and preprocess ``years`` of data at ``catchments`` gauges (once)."""
    from pipeline import config
    from preprocessing.job import run_job
    from preprocessing.plan import PreprocessConfig
    from preprocessing.synth import generate

    root = work / f"{catchments}x{years}y"
    raw, out = root / "raw", root / "dataset"
    if (out / "manifest.json").exists():
        return out
    days = round(365.25 * years)
    t0 = time.perf_counter()
    if not (raw / "preprocess.toml").exists():
        generate(raw, start=START, days=days, catchments=catchments, seed=0, progress=True)
    t1 = time.perf_counter()
    first = dt.date.fromisoformat(START)
    end_train = first + dt.timedelta(days=round(days * 0.8) - 1)  # 80% train, 20% val
    splits = dict(
        train=f"{first}:{end_train}",
        val=f"{end_train + dt.timedelta(days=1)}:{first + dt.timedelta(days=days - 1)}",
        test=None,
    )
    settings = dict(out=out, stride=15, progress=True, **splits)
    run_job(config.load(PreprocessConfig, raw / "preprocess.toml", settings))
    made = {"synth_s": t1 - t0, "preprocess_s": time.perf_counter() - t1}
    made = {k: round(v, 1) for k, v in made.items()}
    print(json.dumps({"dataset": str(out), **made}), flush=True)
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def over_tree(pid: int, name: str, read) -> float:
    """The sum of ``read(text of /proc/P/name)`` over ``pid`` and its living descendants."""
    total = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/{name}") as f:
                total += read(f.read())
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    return total


def tree_pss(pid: int) -> int:
    """Proportional set size in bytes of ``pid`` and its descendants (shared pages split)."""
    return int(over_tree(pid, "smaps_rollup", _pss_bytes))


def _pss_bytes(text: str) -> int:
    return next((int(x.split()[1]) for x in text.splitlines() if x.startswith("Pss:")), 0) * 1024


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its living descendants."""
    return over_tree(pid, "stat", _cpu_ticks) / os.sysconf("SC_CLK_TCK")


def _cpu_ticks(text: str) -> int:
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


class PeakPss:
    """Samples :func:`tree_pss` of this process every ``every`` seconds, keeps the peak."""

    def __init__(self, every: float = 0.2) -> None:
        self.peak, self.every = 0, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_pss(os.getpid()))
            self._stop.wait(self.every)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_pss(os.getpid()))


def shard_bytes(manifest: Manifest) -> int:
    return sum(entry.bytes for entry in manifest.split_shards("train"))


def measure(data: Path, args, layout: str, k: int, dtype: str = "float32") -> dict:
    manifest = Manifest.load(str(data))
    options = dict(
        source=str(data), split="train", mode="train", batch_size=args.batch_size,
        num_workers=args.workers, catchments_per_window=k, layout=layout,
        window_samples=args.window_samples if layout == "windows" else 1, image_dtype=dtype,
    )  # fmt: skip
    with PeakPss() as pss:
        loader = build_loader(rank=0, world_size=1, **options)
        loader.set_epoch(0)
        batches, samples, nbytes, image_bytes = len(loader), 0, 0, 0
        t0 = None
        for i, batch in enumerate(loader):
            if i == 0:
                t0, cpu0 = time.perf_counter(), tree_cpu(os.getpid())
            else:
                samples += int(batch["weight"].shape[0])
            tensors = [v for v in batch.values() if isinstance(v, torch.Tensor)]
            nbytes += sum(t.nbytes for t in tensors)
            image_bytes += sum(
                batch[n].nbytes for n in ("precip", "soil", "temp") if n in batch
            )  # fmt: skip
            if i + 1 >= args.batches:
                break
        seconds, cpu = time.perf_counter() - t0, tree_cpu(os.getpid()) - cpu0
        seen = i + 1
        del batch, loader
    per_sample = nbytes / (seen * args.batch_size)
    epoch_samples = batches * args.batch_size
    dropped = manifest_dropped(data, options)
    shards = shard_bytes(manifest)
    return {
        "layout": layout,
        "images": dtype,
        "k": k,
        "batches_per_epoch": batches,
        "bytes_per_sample_MB": per_sample / 1e6,
        "image_share": image_bytes / nbytes,
        "epoch_to_trainer_GB": per_sample * epoch_samples / 1e9,
        "shards_GB": shards / 1e9,
        "trainer_over_shards": per_sample * epoch_samples / shards,
        "samples_per_s": samples / seconds,
        "GB_per_s": samples * per_sample / seconds / 1e9,
        "cpu_ms_per_sample": 1e3 * cpu / samples,
        "peak_pss_GB": pss.peak / 1e9,
        "dropped_share": dropped / max(epoch_samples + dropped, 1),
    }


def manifest_dropped(data: Path, options: dict) -> int:
    loader = build_loader(rank=0, world_size=1, **{**options, "num_workers": 0})
    return loader.dataset.dropped_samples(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/hydromae-bench-scale"))
    parser.add_argument("--years", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--catchments", type=int, default=671)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--window-samples", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    for years in args.years:
        data = make_dataset(args.work, years, args.catchments)
        for layout, dtype in KINDS:
            for k in (0, 8):
                row = measure(data, args, layout, k, dtype)
                row = {key: round(v, 3) if isinstance(v, float) else v for key, v in row.items()}
                print(json.dumps({"years": years, **row}), flush=True)


if __name__ == "__main__":
    main()
