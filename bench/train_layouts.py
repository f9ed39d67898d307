"""Benchmark: does the compact batch layout slow a CPU training step? (not a test)

Runs the real command, ``hydromae train``, on one dataset for ``--steps`` steps in each
batch layout, interleaved for ``--rounds`` rounds: ``samples`` (every sample's grids),
``windows`` (each window's grids once; the model expands them) and ``windows`` with float16
grids. Prints, per layout, the median of the samples/s that ``metrics.jsonl`` logs every
``--log-every`` steps (the first interval, which holds the start, left out) and its ratio
to ``samples``::

    python bench/train_layouts.py --data DATASET
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LAYOUTS = {
    "samples": ["--layout", "samples"],
    "windows": ["--layout", "windows"],
    "windows, float16 grids": ["--layout", "windows", "--image-dtype", "float16"],
}


def run(data: Path, out: Path, args, extra: list[str]) -> list[float]:
    """``hydromae train`` in a process of its own; the logged samples/s after the first."""
    command = [sys.executable, "-m", "hydromae", "train", "--data", str(data), "--out", str(out),
               "--preset", args.preset, "--decoder", "cross", "--cross-fraction", "0.5",
               "--reader", "zarr", "--stride", "5", "--catchments-per-window", "2",
               "--batch-size", str(args.batch_size), "--workers", "1", "--steps",
               str(args.steps), "--log-every", str(args.log_every), "--checkpoint-every",
               str(args.steps), "--no-progress", "--no-tensorboard", *extra]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["samples_per_s"] for r in records if "samples_per_s" in r][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            for i, (name, extra) in enumerate(LAYOUTS.items()):
                rates[name] += run(args.data, Path(work) / f"{r}-{i}", args, extra)
    base = statistics.median(rates["samples"])
    for name, values in rates.items():
        median = statistics.median(values)
        row = {"layout": name, "samples_per_s": round(median, 3)}
        row.update(over_samples=round(median / base, 3), intervals=len(values))
        print(json.dumps(row))


if __name__ == "__main__":
    main()
