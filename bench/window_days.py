"""Diagnostic: does a window start cold? Riverflow error by day of the window.

A model that sees one 90-day window at a time knows nothing of the rain before it, so its
first days' flow (fed by groundwater that drained in over the months before) should be
its worst. This prints, for a run's checkpoint under ``simulate`` (riverflow withheld on
every day, everything else visible) on the gauged catchments of a split, the riverflow
RMSE (mm/day) of the model and of the per-catchment lag regression, over consecutive
blocks of ``--block`` days of the window: the regression started cold (a lag before the
window takes the training mean) and, when the run was trained with ``--history-days``,
the regression reading the days before the window (as ``hydromae evaluate`` does).

    python bench/window_days.py --run RUN --data DATASET --split test
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pipeline.loader import build_loader
from pipeline.manifest import Manifest
from pipeline.strategies import apply
from training.baselines import patch_neighbours
from training.checkpoint import load_model
from training.fit_baselines import fit_regressions, holdout_indices
from training.scoring import regression_inputs, regression_predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--block", type=int, default=15, help="days per printed block")
    args = parser.parse_args()

    manifest = Manifest.read(args.data)
    model, state = load_model(args.run, args.data)
    norm, history = model.normalizer, model.cfg.history_days
    loader = build_loader(
        source=str(args.data), split=args.split, mode="eval", batch_size=8, num_workers=0,
        seed=state["config"]["seed"], rank=0, world_size=1, history_days=history,
    )  # fmt: skip
    fitted = {"regression, cold": (fit_regressions(args.data, manifest), False)}
    if history:
        fitted["regression, history"] = (fit_regressions(args.data, manifest, history), True)
    valid = torch.tensor(manifest.valid_patch_indices)
    adjacency = patch_neighbours(valid, manifest.grid.patch_cols)
    held = torch.from_numpy(holdout_indices(manifest))
    days = manifest.window
    squared = {name: np.zeros(days) for name in ("model", *fitted)}
    count = np.zeros(days)
    with torch.inference_mode():
        for batch in loader:
            seen = apply(batch, ["simulate"] * len(batch["sample_key"]))
            pred = {
                "model": norm.denormalize("riverflow", model(seen)["riverflow"]["pred"][..., 0])
            }
            visible = regression_inputs(batch, seen, valid, adjacency)
            cold = {k: v for k, v in batch.items() if not k.startswith("history")}
            for name, (regressions, warm) in fitted.items():
                fit = regression_predictions(
                    batch if warm else cold, visible, regressions, norm, ("regression",)
                )
                pred[name] = norm.denormalize("riverflow", fit["regression"])
            rows = (batch["weight"] > 0) & ~torch.isin(batch["catchment_index"], held)
            ok = (batch["riverflow_valid"] & rows[:, None]).numpy()  # [B, T]
            truth = batch["riverflow"].numpy()
            for name, p in pred.items():
                squared[name] += np.where(ok, (p.numpy() - truth) ** 2, 0.0).sum(0)
            count += ok.sum(0)
    print(f"riverflow RMSE (mm/day) under simulate, {args.split} split, history_days {history}")
    edges = range(0, days, args.block)
    print(f"{'days':<22}" + "".join(f"{f'{a + 1}-{min(a + args.block, days)}':>10}" for a in edges))
    for name, sq in squared.items():
        cells = "".join(
            f"{np.sqrt(sq[a : a + args.block].sum() / count[a : a + args.block].sum()):>10.3f}"
            for a in edges
        )
        print(f"{name:<22}{cells}")


if __name__ == "__main__":
    main()
