"""Diagnostic: how a gated mix (``--gated-mix``) weighs the fills by the length of the gap.

Under the specification's masks a masked image patch is filled, before the network's
correction, by a mix of two classical fills: linear interpolation in time between the
patch's visible days, and the mean of its visible neighbouring patches that day. With
``--gated-mix`` the decoder sets that mix per position. This prints, for a run's checkpoint
on ``--batches`` batches of a split, the mean weight of each fill per image modality by the
distance in days from the masked day to the patch's nearest visible day (1: the day before
or after is visible), next to the run's one mix per group, and draws it (``--out``).

    python bench/mix_weights.py --run RUN --data DATASET --split test --out mix_weights.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from pipeline.loader import build_loader
from pipeline.schema import IMAGE_MODALITIES
from pipeline.strategies import apply
from training.checkpoint import load_model

BUCKETS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 90))  # days to the nearest visible


def nearest_visible(hidden: torch.Tensor) -> torch.Tensor:
    """Days from each day to the nearest day its patch is visible: ``hidden`` ``[B, T, N]``
    (bool) -> ``[B, T, N]`` (0 where visible; T where the patch is never visible)."""
    b, t, n = hidden.shape
    far = torch.full((b, n), float(t))
    before, after = torch.empty(b, t, n), torch.empty(b, t, n)
    last = far.clone()  # days since the last visible day
    for d in range(t):
        last = torch.where(hidden[:, d], last + 1, 0.0)
        before[:, d] = last
    last = far.clone()
    for d in reversed(range(t)):
        last = torch.where(hidden[:, d], last + 1, 0.0)
        after[:, d] = last
    return torch.minimum(before, after).clamp_max(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("mix_weights.png"))
    args = parser.parse_args()

    model, state = load_model(args.run, args.data)
    hints = model.decoder.hints
    if hints is None or hints.gate is None or "image" not in hints.gate:
        raise SystemExit(f"{args.run}: not trained with --gated-mix under unified masks")
    loader = build_loader(
        source=str(args.data), split=args.split, mode="eval", batch_size=8, num_workers=0,
        seed=state["config"]["seed"], rank=0, world_size=1,
        history_days=model.cfg.history_days,
    )  # fmt: skip
    mix = hints.mix["image"].detach()  # [2, k]
    captured: list[torch.Tensor] = []
    hook = hints.gate["image"].register_forward_hook(lambda _m, _i, out: captured.append(out))
    weights, distances = [], []
    idx = torch.tensor(model.geometry.valid_patch_indices)
    with torch.inference_mode():
        for i, batch in enumerate(loader):
            if i >= args.batches:
                break
            seen = apply(batch, ["seed"] * len(batch["sample_key"]))
            captured.clear()
            model(seen)
            hidden = seen["precip_mask"][..., idx]  # [B, T, N]
            b, t, n = hidden.shape
            mask = hidden.reshape(b, t * n)
            gate = captured[0].view(b, -1, *mix.shape)  # [B, Q or L, 2, k]
            if gate.shape[1] == t * n:  # MAE's decoder: every position, in order
                at, real = torch.arange(t * n).expand(b, -1), mask
            else:  # CrossMAE's: its queries (in evaluation, every masked position)
                at, real = model.decoder.queries(mask)
            dist = nearest_visible(hidden).reshape(b, t * n).gather(1, at)
            weights.append((mix + gate)[real])  # [M, 2, k]
            distances.append(dist[real])
    hook.remove()
    w, dist = torch.cat(weights).numpy(), torch.cat(distances).numpy()

    print(f"{args.run}, {args.split}, {len(dist)} masked image tokens (specification's masks)")
    print(f"one mix per group: interpolation {mix[0].tolist()}, neighbours {mix[1].tolist()}")
    print("weight of interpolation / neighbours, mean by days to the nearest visible day:")
    print(f"{'days':>6} {'tokens':>7} " + " ".join(f"{m:>18}" for m in IMAGE_MODALITIES))
    rows = []
    for lo, hi in BUCKETS:
        keep = (dist >= lo) & (dist <= hi)
        if not keep.any():
            continue
        mean = w[keep].mean(0)  # [2, k]
        label = f"{lo}" if lo == hi else f"{lo}-{hi}" if hi < 90 else f"{lo}+"
        rows.append((lo, label, mean))
        cells = " ".join(f"{mean[0, j]:>8.2f} / {mean[1, j]:<7.2f}" for j in range(mean.shape[1]))
        print(f"{label:>6} {int(keep.sum()):>7} {cells}")

    fig, axes = plt.subplots(1, len(IMAGE_MODALITIES), figsize=(11, 3.4), sharey=True)
    x = [lo for lo, _, _ in rows]
    for j, (ax, name) in enumerate(zip(axes, IMAGE_MODALITIES, strict=True)):
        ax.plot(x, [r[0, j] for _, _, r in rows], "o-", label="interpolation in time")
        ax.plot(x, [r[1, j] for _, _, r in rows], "s-", label="neighbouring patches")
        ax.axhline(float(mix[0, j]), color="C0", ls=":", lw=1)
        ax.axhline(float(mix[1, j]), color="C1", ls=":", lw=1)
        ax.set_title(name)
        ax.set_xscale("log")
        ax.set_xticks(x, [label for _, label, _ in rows])
        ax.set_xlabel("days to the nearest visible day")
    axes[0].set_ylabel("mean weight in the mix")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{args.run.name}: the gated mix of the fills (dotted: one mix per group)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
