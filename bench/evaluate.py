"""Benchmark: evaluation throughput against training throughput, same model, same data.

Runs the real commands, alternately, ``--rounds`` times: ``hydromae train`` for
``--steps`` more steps (``--resume`` after the first round; samples/s from its
``metrics.jsonl``, the first logged interval of each round left out) and ``hydromae
evaluate`` on ``--batches`` batches of the validation split (samples/s and
(sample, strategy) passes/s from the ``timing`` of its ``metrics.json``). Both run in one
process with the loader in-process (``--workers 0``), so each includes its own data
loading. Evaluation scores every strategy (``seed``, ``block``, ``riverflow``,
``simulate`` and, where the dataset holds catchments out, ``holdout``), so one sample is
several forward passes; the issue's goal compares evaluation samples/s with training
samples/s. ``--strategies`` scores only those (one question at a time, as a user who
asks only ``simulate`` would). Without ``--data`` a small synthetic dataset is made
under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

TRAIN = [
    "--preset", "small", "--decoder", "cross", "--cross-fraction", "0.5", "--workers", "0",
    "--warmup", "4", "--log-every", "2", "--val-every", "0", "--checkpoint-every", "1000",
    "--no-progress",
]  # fmt: skip


def hydromae(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "hydromae", *args], check=True, stdout=subprocess.DEVNULL)


def make_dataset(work: Path) -> Path:
    raw, data = work / "raw", work / "dataset"
    if not (data / "manifest.json").exists():
        hydromae("synth", "--out", str(raw), "--days", "730", "--catchments", "10", "--no-progress")
        hydromae(
            "preprocess", "--config", str(raw / "preprocess.toml"), "--out", str(data),
            "--holdout-catchments", "2", "--no-progress",
        )  # fmt: skip
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="a dataset directory (default: synthetic)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hydromae-bench-evaluate"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument(
        "--batch-size", type=int, default=5,
        help="both commands' (5: the synthetic validation split's 10 samples, no padding)",
    )  # fmt: skip
    parser.add_argument("--strategies", nargs="+", help="evaluate's --strategies (default: all)")
    args = parser.parse_args()
    only = ["--strategies", *args.strategies] if args.strategies else []
    data = args.data or make_dataset(args.work)
    run = args.work / "run"
    train_sps, eval_sps, pass_sps = [], [], []
    for r in range(args.rounds):
        steps = str(args.steps * (r + 1))
        resume = ["--resume"] if r else []
        if not r and run.exists():
            shutil.rmtree(run)  # the previous benchmark's run, in the benchmark's own folder
        size = ["--batch-size", str(args.batch_size)]
        hydromae("train", "--data", str(data), "--out", str(run), "--steps", steps, *size, *TRAIN,
                 *resume)  # fmt: skip
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        rates = [x["samples_per_s"] for x in logged if x.get("samples_per_s")]
        intervals = args.steps // 2  # --log-every 2
        train_sps += rates[-(intervals - 1) :]  # the round's first interval left out
        out = args.work / f"eval{r}.json"
        hydromae(
            "evaluate", "--run", str(run), "--data", str(data), "--out", str(out),
            "--max-batches", str(args.batches), *size, "--no-plots", "--no-progress", *only,
        )  # fmt: skip
        timing = json.loads(out.read_text())["timing"]
        eval_sps.append(timing["samples_per_s"])
        pass_sps.append(timing["strategy_passes_per_s"])
        strategies = sorted(json.loads(out.read_text())["strategies"])
    train, ev, passes = (statistics.median(x) for x in (train_sps, eval_sps, pass_sps))
    print(
        json.dumps(
            {
                "train_samples_per_s": round(train, 3),
                "evaluate_samples_per_s": round(ev, 3),
                "evaluate_strategy_passes_per_s": round(passes, 3),
                "strategies": strategies,
                "evaluate_over_train": round(ev / train, 2),
                "passes_over_train": round(passes / train, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
