"""The mask picture: red masked, green visible, ocean never touched.

``draw_masks`` draws, for one sample of a masking collate, the image mask over days x
valid patches, its spatial pattern on the patch grid for a few days (with the coastline)
and the day mask of the two series, with a legend: the original specification's
``mask_visualization_with_legend.png``. ``draw_coastline`` is shared with the
evaluation's maps (``training.plots``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.collate import MultiScaleMaskedCollate
from pipeline.schema import IMAGE_MODALITIES, VECTOR_MODALITIES
from pipeline.strategies import hide

STRATEGY_TITLES = {
    "seed": "seed (the specification's masks)",
    "block": "block (a contiguous block of days hidden)",
    "riverflow": "riverflow withheld",
    "simulate": "simulate (weather seen, riverflow predicted on every day)",
    "withhold": "withhold (weather seen, riverflow predicted on every day)",
    "forcing": "forcing (as simulate, soil moisture withheld on every day and before)",
    "ungauged": "ungauged (riverflow predicted on every day)",
}

RED, GREEN, OCEAN = "#d62728", "#2ca02c", "#dbe9f6"


def draw_coastline(ax, land: np.ndarray, width: float = 0.5) -> None:
    """The coastline of ``land`` ``[H, W]`` (bool, row 0 south) on a map drawn with
    ``origin="lower"`` and ``extent=(0, W, 0, H)``."""
    h, w = land.shape
    ax.contour(
        np.arange(w) + 0.5,
        np.arange(h) + 0.5,
        land.astype(float),
        levels=[0.5],
        colors="k",
        linewidths=width,
    )


def draw_masks(
    collate: MultiScaleMaskedCollate, out: Path, days: list[int], strategy: str = "seed"
) -> Path:
    """Draw one sample's masks from ``collate.generate_masks`` into ``out`` (PNG), under a
    strategy of ``pipeline.strategies`` (``riverflow``: its withheld days drawn masked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    grid, seq_len = collate.grid, collate.seq_len
    drawn = collate.generate_masks(1)
    drawn = hide(drawn, [strategy], [0.3])
    if strategy == "riverflow":  # withheld on every day: never seen, as a masked series is
        drawn["riverflow_mask"] = torch.ones_like(drawn["riverflow_mask"])
    masks = {k: drawn[k][0].numpy() for k in drawn if k.endswith("_mask")}
    valid = collate.valid_patch_indices.numpy()
    cmap = ListedColormap([GREEN, RED, OCEAN])  # 0 visible, 1 masked, 2 ocean
    days = [d for d in days if 1 <= d <= seq_len] or [1]

    fig = plt.figure(figsize=(4 + 2.6 * len(days), 9.5), layout="constrained")
    top, mid, bottom = fig.subfigures(3, 1, height_ratios=[3.2, 3.6, 1.3])

    # 1. image mask over time: valid patches x days
    image = masks["precip_mask"][:, valid].T.astype(int)  # [N_valid, T]
    ax = top.subplots()
    ax.imshow(
        image,
        aspect="auto",
        cmap=cmap,
        vmin=0,
        vmax=2,
        interpolation="nearest",
        extent=(0.5, seq_len + 0.5, valid.size + 0.5, 0.5),
    )
    ax.set_xlabel("day of the window")
    ax.set_ylabel(f"valid patch (of {valid.size})")
    counts = masks["precip_mask"].sum(axis=1)
    ax.set_title(
        f"Image mask ({collate.mask_mode}): {counts.min()} of {valid.size} valid patches masked "
        f"each day{', a new draw every day' if counts.max() else ''}"
        + ("; soil moisture withheld (never seen)" if strategy == "forcing" else "")
    )

    # 2. spatial pattern on the patch grid for a few days, coastline on top
    axes = np.atleast_1d(mid.subplots(1, len(days)))
    extent = (0, grid.width, 0, grid.height)
    for ax, day in zip(axes, days, strict=True):
        state = np.full(grid.num_patches, 2)
        state[valid] = masks["precip_mask"][day - 1, valid].astype(int)
        ax.imshow(
            state.reshape(grid.rows, grid.cols),
            origin="lower",
            extent=extent,
            cmap=cmap,
            vmin=0,
            vmax=2,
            interpolation="nearest",
        )
        draw_coastline(ax, collate.land_mask)
        ax.set_title(f"day {day}: {int(masks['precip_mask'][day - 1].sum())} masked")
        ax.set_xticks([])
        ax.set_yticks([])
    mid.suptitle("Spatial pattern: patches masked on single days (north up)")

    # 3. vector masks: masked days per series
    vec = np.stack([masks[f"{m}_mask"] for m in VECTOR_MODALITIES]).astype(int)  # [2, T]
    ax = bottom.subplots()
    ax.imshow(
        vec,
        aspect="auto",
        cmap=cmap,
        vmin=0,
        vmax=2,
        interpolation="nearest",
        extent=(0.5, seq_len + 0.5, len(VECTOR_MODALITIES) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(VECTOR_MODALITIES)), [m.capitalize() for m in VECTOR_MODALITIES])
    ax.set_xlabel("day of the window")
    ax.set_title(
        "Vector masks: "
        + ", ".join(
            f"{m} {int(vec[i].sum())} of {seq_len} days masked"
            for i, m in enumerate(VECTOR_MODALITIES)
        )
    )
    fig.legend(
        handles=[
            Patch(color=RED, label="masked (decoder predicts)"),
            Patch(color=GREEN, label="visible (encoder input)"),
            Patch(color=OCEAN, label="ocean patch (never used)"),
        ],
        loc="outside lower center",
        ncols=3,
    )
    fig.suptitle(
        (
            f"Multi-modal MAE masks: {', '.join(IMAGE_MODALITIES)} share the image mask"
            if collate.mask_mode == "unified"
            else "Multi-modal MAE masks (independent: precipitation shown)"
        )
        + f"; strategy: {STRATEGY_TITLES.get(strategy, strategy)}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
