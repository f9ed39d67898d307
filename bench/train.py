"""Benchmark: training-step throughput of the MAE's design choices (``make bench``; not a test).

On the real Great Britain geometry (290 x 180, 10 x 10 patches, 94 valid), T = 90 days,
one batch from ``MultiScaleMaskedCollate`` under the seed's masks, in one run:

  (1) the encoder on the visible tokens only (MAE) against the same encoder given every
      token with a learned mask token in place of the masked ones (``encoder_tokens =
      "all"``): encoder forward + backward, and a whole training step with the MAE decoder;
  (2) the CrossMAE decoder (mask queries attend to the encoder output) against MAE's
      self-attention decoder over all tokens: a whole training step;
  (3) fused image tokens (``unified``: one token per day and patch for the three image
      modalities) against per-modality tokens (``independent``): a whole training step, both
      with the CrossMAE decoder (MAE's decoder over 25,560 per-modality tokens takes over a
      minute a step on two cores).

A training step is forward, loss, backward and an AdamW step. Absolute times on a shared
machine are noisy: read the ratios (throughput of ours / throughput of the other), which
are measured in the same run, with the variants interleaved in every round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from collate import dataset_samples  # bench/collate.py: samples in the dataset layout

from pipeline import MODALITIES, MultiScaleMaskedCollate
from pipeline.normalize import Normalizer, VariableStats
from training.loss import LossConfig, mae_loss
from training.model import Geometry, HydroMAE
from training.model_config import ModelConfig

STATS = Normalizer({m: VariableStats("none", 0.0, 1.0) for m in MODALITIES})


def batch_for(mask_mode: str, batch: int) -> tuple[dict, Geometry]:
    """One collated batch on the GB grid, with the schema's per-sample extras."""
    collate = MultiScaleMaskedCollate(mask_mode=mask_mode, seed=0)
    samples = dataset_samples(collate, batch, 0)
    for i, s in enumerate(samples):
        s["static"] = np.array([100.0 + i, 250.0, 3.0], dtype=np.float32)
        s["catchment_weight"] = np.full(collate.num_valid, 1 / collate.num_valid, np.float32)
        share = 1 / (collate.num_valid * collate.grid.patch_pixels)  # every land pixel alike
        s["catchment_pixels"] = np.full((collate.num_valid, collate.grid.patch_pixels), share,
                                        np.float32)  # fmt: skip
        s["doy"] = np.arange(1, collate.seq_len + 1, dtype=np.int16)
    g = collate.grid
    geometry = Geometry(
        patch_rows=g.rows, patch_cols=g.cols, patch_pixels=g.patch_pixels,
        valid_patch_indices=tuple(collate.valid_patch_indices.tolist()),
        static_attributes=3, mask_mode=mask_mode,
    )  # fmt: skip
    return collate(samples), geometry


def model_for(geometry: Geometry, args: argparse.Namespace, **changes) -> HydroMAE:
    torch.manual_seed(0)
    # hints off: the ratios compare the token layouts and decoders of docs/masking.md, and
    # the hints (the same work under every variant) would only dilute them
    cfg = ModelConfig(
        dim=args.dim, depth=args.depth, heads=args.heads, decoder_dim=args.decoder_dim,
        decoder_depth=args.decoder_depth, decoder_heads=args.decoder_heads, hints=False,
    )  # fmt: skip
    for key, value in changes.items():
        setattr(cfg, key, value)
    return HydroMAE(cfg, geometry, STATS)


def training_step(model: HydroMAE, batch: dict) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        out = model(batch)
        loss, _ = mae_loss(out, model.groups, model.geometry.patch_pixels, LossConfig())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def encoder_step(model: HydroMAE, batch: dict) -> Callable[[], None]:
    def step() -> None:
        h = model.forward_encoder(batch).h  # [B, 1 + S, D]
        h.square().mean().backward()
        model.zero_grad(set_to_none=True)

    return step


def median_s(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="steps per figure and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; figures are medians")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--decoder-dim", type=int, default=64)
    parser.add_argument("--decoder-depth", type=int, default=2)
    parser.add_argument("--decoder-heads", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead")
    args = parser.parse_args()

    unified, geometry = batch_for("unified", args.batch)
    independent, geometry_ind = batch_for("independent", args.batch)
    variants = {
        "encoder_visible": encoder_step(model_for(geometry, args), unified),
        "encoder_all": encoder_step(model_for(geometry, args, encoder_tokens="all"), unified),
        "step_visible": training_step(model_for(geometry, args), unified),
        "step_all": training_step(model_for(geometry, args, encoder_tokens="all"), unified),
        "step_cross": training_step(model_for(geometry, args, decoder="cross"), unified),
        "step_independent": training_step(
            model_for(geometry_ind, args, decoder="cross"), independent
        ),
    }
    idx = list(geometry.valid_patch_indices)
    seen_patches = int((~unified["precip_mask"][0][:, idx]).sum())  # 24 a day x 90 days
    seen_days = int((~unified["evap_mask"][0]).sum())  # 23
    tokens = {  # the static token, image tokens, vector tokens
        "unified_visible": 1 + seen_patches + seen_days,
        "unified_all": 1 + 90 * len(idx) + 90,
        "independent_visible": 1 + 3 * seen_patches + 2 * seen_days,
    }
    rounds = [
        {name: median_s(fn, args.repeats) for name, fn in variants.items()}
        for _ in range(args.rounds)
    ]
    s = {name: statistics.median(r[name] for r in rounds) for name in variants}
    figures = {f"{k}_s": v for k, v in s.items()} | {
        "encoder_visible_vs_all": s["encoder_all"] / s["encoder_visible"],
        "step_visible_vs_all": s["step_all"] / s["step_visible"],
        "cross_vs_mae_decoder": s["step_visible"] / s["step_cross"],
        "fused_vs_per_modality": s["step_independent"] / s["step_cross"],
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "tokens": tokens,
        "model": {k: getattr(args, k) for k in ("dim", "depth", "heads", "decoder_dim")},
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"B={args.batch}, T=90, 94 valid patches, encoder {args.dim} x {args.depth}, "
        f"decoder {args.decoder_dim} x {args.decoder_depth}, torch threads {figures['threads']}"
    )
    print(
        f"  encoder tokens: {tokens['unified_visible']} visible (unified), "
        f"{tokens['unified_all']} all, {tokens['independent_visible']} visible (independent)"
    )
    rows = [
        ("encoder fwd+bwd, visible tokens (MAE)", "encoder_visible"),
        ("encoder fwd+bwd, all tokens, mask tokens in place", "encoder_all"),
        ("training step, visible-only encoder, MAE decoder", "step_visible"),
        ("training step, all-token encoder, MAE decoder", "step_all"),
        ("training step, CrossMAE decoder", "step_cross"),
        ("training step, per-modality image tokens, CrossMAE", "step_independent"),
    ]
    for label, key in rows:
        print(f"  {label:<52}{1000 * s[key]:10.1f} ms")
    print(
        f"  (1) visible-only encoder: {figures['encoder_visible_vs_all']:.1f}x the throughput "
        f"of the all-token encoder; whole step {figures['step_visible_vs_all']:.1f}x "
        "(MAE reports >= 3x)"
    )
    print(f"  (2) CrossMAE decoder: {figures['cross_vs_mae_decoder']:.2f}x the MAE decoder")
    print(
        f"  (3) fused image tokens: {figures['fused_vs_per_modality']:.2f}x per-modality tokens "
        "(both CrossMAE)"
    )


if __name__ == "__main__":
    main()
