"""The whole system, end to end, on the built-in Great Britain default (``make demo``).

Steps, each through the same command line a user would type (``hydromae.cli.run_command``):
the patch table of the packaged land mask; synthetic raw data in the real HadUK-Grid and
CAMELS-GB formats (``hydromae synth``) and a quick look at them; the dataset directory
(``hydromae preprocess``) and its check (``hydromae inspect``); one masked batch of real
windows from the streaming loader (two worker processes), with its mask counts; the seed's
mask visualization; a short training run of the tiny model (``hydromae train``) and its
evaluation against the baselines on the test period (``hydromae evaluate``), which prints
the table and draws a masked day's maps, a hydrograph and the training curves.

It is a smoke run: a few minutes of training on two years of data. The learning
results of record come from the longer run described in the README.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hydromae.cli import run_command
from pipeline import config
from pipeline.landmask import reference_mask_path
from pipeline.loader import build_loader
from pipeline.schema import IMAGE_MODALITIES, LAND_MASK_PT, VECTOR_MODALITIES
from preprocessing.synth.quicklook import quicklook

STEPS = 8


@dataclass
class DemoConfig:
    out: Path = field(default=Path("demo_out"), metadata={"metavar": "DIR"})
    days: int = field(default=730, metadata={"min": 3, "help": "days of synthetic data"})
    catchments: int = field(
        default=10, metadata={"min": 1, "max": 671, "help": "synthetic catchments"}
    )
    batch_size: int = field(default=8, metadata={"min": 1, "help": "samples in the demo batch"})
    workers: int = field(default=2, metadata={"min": 0, "help": "loader worker processes"})
    window: int = field(default=90, metadata={"min": 1, "help": "days in a window (the seed's 90)"})
    steps: int = field(default=120, metadata={"min": 1, "help": "training steps of the tiny model"})
    seed: int = 0


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, DemoConfig)


def _step(number: int, title: str) -> float:
    print(f"\n[{number}/{STEPS}] {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"      done in {time.perf_counter() - start:.1f} s", flush=True)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(DemoConfig, args)
    cfg.out.mkdir(parents=True, exist_ok=True)
    raw, data = cfg.out / "raw", cfg.out / "dataset"

    t = _step(1, "patch table of the packaged Great Britain land mask")
    run_command("landmask", ["--mask", str(reference_mask_path())])
    _done(t)

    t = _step(2, f"synthetic raw data: {cfg.days} days, {cfg.catchments} catchments -> {raw}")
    run_command(
        "synth",
        ["--out", str(raw), "--days", str(cfg.days), "--catchments", str(cfg.catchments),
         "--seed", str(cfg.seed)],
    )  # fmt: skip
    print(f"      quick look: {quicklook(raw, cfg.out / 'synthetic_quicklook.png')}")
    _done(t)

    t = _step(3, f"preprocess -> {data}")
    run_command(
        "preprocess",
        ["--config", str(raw / "preprocess.toml"), "--out", str(data),
         "--window", str(cfg.window), "--stride", str(cfg.window)],
    )  # fmt: skip
    _done(t)

    t = _step(4, "inspect: summary and checksums")
    if run_command("inspect", [str(data)]) != 0:
        raise ValueError(f"{data} failed its checks")
    _done(t)

    t = _step(5, f"one masked training batch of {cfg.batch_size} samples from the loader")
    loader = build_loader(
        source=str(data),
        split="train",
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        seed=cfg.seed,
    )
    loader.set_epoch(0)
    batch = next(iter(loader), None)
    if batch is None:
        raise ValueError(
            f"the training split gives no batch of {cfg.batch_size} (per worker): use more "
            "--days, a smaller --batch-size or fewer --workers"
        )
    print(f"      {len(loader)} batches an epoch; first keys {batch['sample_key'][:3]} ...")
    num_valid, seq_len = batch["valid_patch_indices"].numel(), batch["evap"].shape[1]
    for name in IMAGE_MODALITIES:
        masked = batch[f"{name}_mask"].sum(-1)  # [B, T] masked patches a day
        print(
            f"      {name:<9} {tuple(batch[name].shape)}  masked patches a day: "
            f"{masked.min().item()}..{masked.max().item()} of {num_valid} valid, "
            f"valid pixels {batch[f'{name}_valid'].float().mean().item():.1%}"
        )
    for name in VECTOR_MODALITIES:
        masked = batch[f"{name}_mask"].sum(-1)  # [B]
        print(
            f"      {name:<9} {tuple(batch[name].shape)}  masked days: "
            f"{masked.min().item()}..{masked.max().item()} of {seq_len}, "
            f"missing days {(~batch[f'{name}_valid']).sum().item()}"
        )
    floats = [v for v in batch.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    print(f"      no NaN in the batch tensors: {all(bool(v.isfinite().all()) for v in floats)}")
    _done(t)

    t = _step(6, "the seed's mask visualization")
    png = cfg.out / "mask_visualization_with_legend.png"
    run_command("viz-mask", ["--mask", str(data / LAND_MASK_PT), "--out", str(png)])
    _done(t)

    run_dir = cfg.out / "run"
    t = _step(7, f"train the tiny MAE for {cfg.steps} steps -> {run_dir}")
    train = ["--data", str(data), "--out", str(run_dir), "--preset", "tiny", "--decoder",
             "cross", "--steps", str(cfg.steps), "--batch-size", "4", "--workers", "1",
             "--warmup", str(max(1, cfg.steps // 10)), "--lr", "2e-3", "--log-every", "5",
             "--val-every", str(max(1, cfg.steps // 4)), "--val-batches", "2",
             "--seed", str(cfg.seed)]  # fmt: skip
    if (run_dir / "checkpoint.pt").exists():
        train.append("--resume")  # a rerun continues (or finds the run finished)
    if run_command("train", train) != 0:
        raise ValueError(f"training into {run_dir} failed")
    _done(t)

    t = _step(8, "evaluate on the test period: the model against the baselines (smoke run)")
    metrics = cfg.out / "evaluation" / "metrics.json"
    evaluate = ["--run", str(run_dir), "--data", str(data), "--split", "test",
                "--out", str(metrics), "--batch-size", "4"]  # fmt: skip
    if run_command("evaluate", evaluate) != 0:
        raise ValueError(f"evaluating {run_dir} failed")
    print(
        "      (a smoke run of a few minutes: the learning results of record are the longer "
        "run's, in the README)"
    )
    _done(t)
    pictures = [
        png,
        cfg.out / "synthetic_quicklook.png",
        run_dir / "training_curves.png",
        metrics.parent / "masked_day_maps.png",
        metrics.parent / "hydrograph.png",
    ]
    print(f"\ndemo finished: outputs in {cfg.out}/; pictures to look at:")
    for picture in pictures:
        print(f"  {picture}{'' if picture.exists() else '  (missing!)'}")
    return 0
