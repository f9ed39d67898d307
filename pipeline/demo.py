"""Run what hydromae has so far, end to end, on the built-in Great Britain default.

Steps: the patch table of the packaged land mask, one masked batch of random data with its
mask counts, and the seed's mask visualization. Each step runs through the same command
line a user would type (``pipeline.cli.run_command``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline import config
from pipeline.cli import run_command
from pipeline.collate import IMAGE_MODALITIES, VECTOR_MODALITIES, MultiScaleMaskedCollate
from pipeline.landmask import reference_mask_path


@dataclass
class DemoConfig:
    out: Path = field(default=Path("demo_out"), metadata={"metavar": "DIR"})
    batch_size: int = field(default=8, metadata={"help": "samples in the demo batch"})
    seed: int = 0


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, DemoConfig)


def random_sample(collate: MultiScaleMaskedCollate, rng: np.random.Generator, key: str) -> dict:
    """A sample in the seed's layout: full ``[T, H, W]`` grids with NaN over sea."""
    grid, days = collate.grid, collate.seq_len
    sea = ~collate.land_mask
    sample: dict = {"sample_key": key}
    for name in IMAGE_MODALITIES:
        image = rng.standard_exponential((days, grid.height, grid.width), dtype=np.float32)
        image[:, sea] = np.nan
        sample[name] = image
    for name in VECTOR_MODALITIES:
        series = rng.standard_exponential(days, dtype=np.float32)
        series[rng.random(days) < 0.05] = np.nan  # a few really-missing days
        sample[name] = series
    return sample


def _step(number: int, title: str) -> float:
    print(f"\n[{number}/3] {title}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(DemoConfig, args)
    cfg.out.mkdir(parents=True, exist_ok=True)
    mask = reference_mask_path()

    t = _step(1, f"patch table of the packaged Great Britain land mask ({mask.name})")
    run_command("landmask", ["--mask", str(mask)])
    print(f"      done in {time.perf_counter() - t:.1f} s")

    t = _step(2, f"one masked batch of {cfg.batch_size} random samples (seq_len 90, ratio 0.75)")
    collate = MultiScaleMaskedCollate(land_mask_path=mask, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    batch = collate([random_sample(collate, rng, f"demo-{i}") for i in range(cfg.batch_size)])
    for name in IMAGE_MODALITIES:
        masked = batch[f"{name}_mask"].sum(-1)  # [B, T] masked patches a day
        print(
            f"      {name:<9} {tuple(batch[name].shape)}  masked patches a day: "
            f"{masked.min().item()}..{masked.max().item()} of {collate.num_valid} valid, "
            f"valid pixels {batch[f'{name}_valid'].float().mean().item():.1%}"
        )
    for name in VECTOR_MODALITIES:
        masked = batch[f"{name}_mask"].sum(-1)  # [B]
        print(
            f"      {name:<9} {tuple(batch[name].shape)}  masked days: "
            f"{masked.min().item()}..{masked.max().item()} of {collate.seq_len}, "
            f"missing days {(~batch[f'{name}_valid']).sum().item()}"
        )
    floats = [v for v in batch.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    finite = all(bool(v.isfinite().all()) for v in floats)
    print(f"      no NaN in the batch tensors: {finite}")
    print(f"      done in {time.perf_counter() - t:.1f} s")

    t = _step(3, "the seed's mask visualization")
    png = cfg.out / "mask_visualization_with_legend.png"
    run_command("viz-mask", ["--mask", str(mask), "--out", str(png), "--seed", str(cfg.seed)])
    print(f"      done in {time.perf_counter() - t:.1f} s")
    print(f"\ndemo finished: outputs in {cfg.out}/")
    return 0
