"""Diagnostic: a fixed blend of the two image fills, the simple baseline a gated mix must beat.

``hydromae evaluate`` scores interpolation in time and the visible neighbouring patches'
mean separately. A gated mix (``--gated-mix``) blends them per position, and at a small
budget it learns a blend nearly the same everywhere (``bench/mix_weights.py``), so the
fair question is whether a fixed blend does as well. This fits, per image modality, the
least-squares weights of ``truth ~ a * interpolation + b * neighbours`` (normalised units)
on the scored positions of ``--fit-batches`` batches of ``--fit-split`` under the
specification's masks, then scores on ``--batches`` batches of ``--split``, on the same
positions as ``hydromae evaluate`` (real samples of the gauged catchments): each fill, the
fitted blend and the run's model, RMSE in physical units.

    python bench/fixed_blend.py --run RUN --data DATASET
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pipeline.loader import build_loader
from pipeline.manifest import Manifest
from pipeline.schema import IMAGE_MODALITIES, MODALITIES
from pipeline.strategies import apply
from training.baselines import image_fills, patch_neighbours
from training.checkpoint import load_model
from training.fit_baselines import holdout_indices
from training.scoring import hidden_of, model_predictions, truths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--fit-split", default="val")
    parser.add_argument("--split", default="test")
    parser.add_argument("--fit-batches", type=int, default=6)
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()

    manifest = Manifest.read(args.data)
    model, state = load_model(args.run, args.data)
    norm = model.normalizer
    valid_idx = torch.tensor(manifest.valid_patch_indices)
    adjacency = patch_neighbours(valid_idx, manifest.grid.patch_cols)
    held = torch.from_numpy(holdout_indices(manifest))

    def batches(split: str, count: int):
        """(batch, fills {m: (truth, interpolation, neighbours, scored)}) under the
        specification's masks; images ``[B, T, N, P]``, normalised."""
        loader = build_loader(
            source=str(args.data), split=split, mode="eval", batch_size=8, num_workers=0,
            seed=state["config"]["seed"], rank=0, world_size=1,
            history_days=model.cfg.history_days,
        )  # fmt: skip
        for i, batch in enumerate(loader):
            if i >= count:
                return
            seen = apply(batch, ["seed"] * len(batch["sample_key"]))
            rows = (batch["weight"] > 0) & ~torch.isin(batch["catchment_index"], held)
            truth = truths(batch, norm, IMAGE_MODALITIES)
            fills = {}
            for m in IMAGE_MODALITIES:
                masked, hidden = hidden_of(seen, m, valid_idx)
                valid = batch[f"{m}_valid"]
                interp, near = image_fills(truth[m], valid, masked, adjacency)
                scored = valid & hidden & rows.view(-1, 1, 1, 1)
                fills[m] = (truth[m], interp, near, scored)
            yield batch, seen, fills

    # least squares on the fit split: [a, b] per modality from the normal equations
    gram = {m: torch.zeros(2, 2, dtype=torch.float64) for m in IMAGE_MODALITIES}
    cross = {m: torch.zeros(2, dtype=torch.float64) for m in IMAGE_MODALITIES}
    with torch.inference_mode():
        for _, _, fills in batches(args.fit_split, args.fit_batches):
            for m, (truth, interp, near, scored) in fills.items():
                x = torch.stack([interp[scored], near[scored]], dim=1).double()  # [M, 2]
                gram[m] += x.T @ x
                cross[m] += x.T @ truth[scored].double()
    weights = {m: torch.linalg.solve(gram[m], cross[m]).float() for m in IMAGE_MODALITIES}

    methods = ("interpolation", "neighbours", "fixed blend", "model")
    squared = {(m, k): 0.0 for m in IMAGE_MODALITIES for k in methods}
    count = dict.fromkeys(IMAGE_MODALITIES, 0)
    with torch.inference_mode():
        for batch, seen, fills in batches(args.split, args.batches):
            shapes = {m: batch[m].shape for m in MODALITIES}
            out = model(seen)
            preds = model_predictions(out, model.groups, model.geometry.patch_pixels, shapes)
            for m, (_, interp, near, scored) in fills.items():
                a, b = weights[m]
                guesses = {
                    "interpolation": interp,
                    "neighbours": near,
                    "fixed blend": a * interp + b * near,
                    "model": preds[m]["model"],
                }
                observed = batch[m][scored]
                for k, guess in guesses.items():
                    err = norm.denormalize(m, guess[scored]) - observed
                    squared[(m, k)] += float((err.double() ** 2).sum())
                count[m] += int(scored.sum())

    print(f"{args.run}: fixed blends fitted on {args.fit_batches} batches of {args.fit_split}")
    for m in IMAGE_MODALITIES:
        a, b = weights[m].tolist()
        print(f"  {m}: {a:.3f} x interpolation + {b:.3f} x neighbours")
    print(f"RMSE on {args.batches} batches of {args.split}, the specification's masks:")
    print(f"{'modality':<10}{'values':>11}" + "".join(f"{k:>15}" for k in methods))
    for m in IMAGE_MODALITIES:
        cells = "".join(f"{(squared[(m, k)] / count[m]) ** 0.5:>15.5g}" for k in methods)
        print(f"{m:<10}{count[m]:>11}{cells}")


if __name__ == "__main__":
    main()
