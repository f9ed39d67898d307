"""Pictures of a run: training curves, a masked day's maps and a catchment's hydrograph.

Everything is drawn from plain arrays in physical units, so the same functions serve
``hydromae evaluate`` and the demo. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.grid import PatchGrid, unpatchify
from pipeline.pictures import draw_coastline

OCEAN, HIDDEN = "#dbe9f6", "#9a9a9a"
LABELS = {
    "precip": "precipitation",
    "soil": "soil moisture",
    "temp": "air temperature",
    "evap": "evaporation",
    "riverflow": "riverflow",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics: Path, png: Path) -> Path:
    """Training curves from ``metrics.jsonl``: the loss and each modality's loss per step
    (normalised MSE on masked positions, log scale), validation loss, and the learning rate."""
    records = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line]
    # after a resume a step may be logged twice: the resumed run's record wins
    train = list({r["step"]: r for r in records if "loss" in r}.values())
    val = list({r["step"]: r for r in records if "val_loss" in r}.values())
    if not train:
        raise ValueError(f"{metrics}: no training steps logged")
    plt = _pyplot()
    fig, (ax, lr_ax) = plt.subplots(
        2, 1, figsize=(8, 6.5), sharex=True, height_ratios=[3, 1], layout="constrained"
    )
    steps = [r["step"] for r in train]
    ax.plot(steps, [r["loss"] for r in train], color="k", lw=1.8, label="train loss")
    for name, label in LABELS.items():
        values = [r.get(f"loss_{name}", np.nan) for r in train]
        ax.plot(steps, values, lw=0.9, alpha=0.8, label=f"train {label}")
    if val:
        ax.plot(
            [r["step"] for r in val],
            [r["val_loss"] for r in val],
            "o-",
            color="tab:red",
            lw=1.5,
            label="validation loss (eval masks)",
        )
    ax.set_yscale("log")
    ax.set_ylabel("masked MSE (normalised units)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncols=2)
    rate = train[-1].get("samples_per_s")
    ax.set_title(
        f"Training curves: {steps[-1]} steps"
        + (f", {rate:.1f} samples/s at the end" if rate else "")
    )
    lr_ax.plot(steps, [r["lr"] for r in train], color="tab:purple")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimizer step")
    lr_ax.grid(alpha=0.3)
    return _save(fig, png)


@dataclass
class DayMaps:
    """One sample's day, per image modality, in physical units.

    ``truth`` and ``pred`` are ``[N, P]`` over the valid patches (NaN where a pixel has no
    value: sea or missing), ``masked`` ``[N]`` is the MAE mask of the day.
    """

    grid: PatchGrid
    land: np.ndarray  # [H, W] bool
    valid_patch_indices: np.ndarray  # [N]
    truth: dict[str, np.ndarray]
    pred: dict[str, np.ndarray]
    masked: dict[str, np.ndarray]
    units: dict[str, str]
    title: str


def _to_grid(values: np.ndarray, maps: DayMaps) -> np.ndarray:
    """``[N, P]`` over the valid patches -> ``[H, W]``, NaN outside them."""
    g = maps.grid
    full = np.full((g.num_patches, g.patch_size, g.patch_size), np.nan)
    full[maps.valid_patch_indices] = values.reshape(-1, g.patch_size, g.patch_size)
    return unpatchify(full, g)


def plot_day_maps(maps: DayMaps, png: Path) -> Path:
    """Rows: image modalities. Columns: truth, visible input (masked patches grey),
    reconstruction (the model on masked patches, the input elsewhere) and its error."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(maps.truth)
    g = maps.grid
    fig, axes = plt.subplots(
        len(names), 4, figsize=(12, 4.6 * len(names)), squeeze=False, layout="constrained"
    )
    extent = (0, g.width, 0, g.height)
    for row, name in zip(axes, names, strict=True):
        hidden = np.repeat(maps.masked[name][:, None], g.patch_pixels, axis=1)  # [N, P]
        truth = maps.truth[name]
        visible = np.where(hidden, np.nan, truth)
        recon = np.where(hidden, np.where(np.isnan(truth), np.nan, maps.pred[name]), truth)
        error = np.where(hidden, recon - truth, np.nan)
        grids = [_to_grid(a, maps) for a in (truth, visible, recon, error)]
        finite = grids[0][np.isfinite(grids[0])]
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        cmap = "Blues" if name == "precip" else "YlGnBu" if name == "soil" else "RdYlBu_r"
        limit = float(np.nanmax(np.abs(grids[3]))) if np.isfinite(grids[3]).any() else 1.0
        scored = np.isfinite(error)
        rmse = float(np.sqrt(np.mean(error[scored] ** 2))) if scored.any() else float("nan")
        titles = ("truth", "visible input", "reconstruction", f"error, RMSE {rmse:.3g}")
        for col, (ax, image, title) in enumerate(zip(row, grids, titles, strict=True)):
            ax.imshow(
                np.where(maps.land, np.nan, 1.0),
                origin="lower",
                extent=extent,
                cmap=ListedColormap([OCEAN]),
            )
            if col == 1:  # masked patches, in grey
                hid = _to_grid(np.where(hidden, 1.0, np.nan), maps)
                ax.imshow(hid, origin="lower", extent=extent, cmap=ListedColormap([HIDDEN]))
            shown = ax.imshow(
                image,
                origin="lower",
                extent=extent,
                cmap="RdBu_r" if col == 3 else cmap,
                vmin=-limit if col == 3 else lo,
                vmax=limit if col == 3 else hi,
                interpolation="nearest",
            )
            draw_coastline(ax, maps.land, width=0.4)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{LABELS.get(name, name)}: {title}", fontsize=9)
            if col in (2, 3):
                fig.colorbar(shown, ax=ax, shrink=0.7, label=maps.units[name])
    fig.legend(
        handles=[
            Patch(color=HIDDEN, label="masked patch (hidden from the encoder)"),
            Patch(color=OCEAN, label="sea"),
        ],
        loc="outside lower center",
        ncols=2,
    )
    fig.suptitle(maps.title)
    return _save(fig, png)


@dataclass
class Hydrograph:
    """One catchment's window: ``dates`` ``[T]`` (datetime64), ``observed`` ``[T]`` (NaN where
    missing), ``masked`` ``[T]`` bool, and predictions by method ``{name: [T]}``."""

    dates: np.ndarray
    observed: np.ndarray
    masked: np.ndarray
    predictions: dict[str, np.ndarray]
    units: str
    title: str


def plot_hydrograph(h: Hydrograph, png: Path) -> Path:
    """Observed flow, the model and the baselines on masked days, masked days shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.5), layout="constrained")
    days = h.dates.astype("datetime64[D]")
    for i in [] if h.masked.all() else np.flatnonzero(h.masked):  # all masked: no shading
        ax.axvspan(
            days[i] - np.timedelta64(12, "h"),
            days[i] + np.timedelta64(12, "h"),
            color="0.88",
            lw=0,
            label="masked day" if i == np.flatnonzero(h.masked)[0] else None,
        )
    ax.plot(days, h.observed, color="k", lw=1.6, label="observed")
    styles = {
        "model": ("tab:red", "-", 1.6),
        "model, all flow hidden": ("tab:purple", "--", 1.3),
        "interpolation": ("tab:blue", ":", 1.2),
        "climatology": ("tab:green", ":", 1.2),
        "pooled regression": ("tab:orange", "--", 1.2),
    }
    for name, series in h.predictions.items():
        colour, style, width = styles.get(name, (None, ":", 1.2))
        shown = np.where(h.masked, series, np.nan)
        marker = "." if len(days) <= 120 else None
        ax.plot(days, shown, style, color=colour, lw=width, marker=marker, ms=3, label=name)
    ax.set_ylabel(f"riverflow ({h.units})")
    ax.set_title(h.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=3)
    fig.autofmt_xdate()
    return _save(fig, png)


def draw_examples(
    batch: dict,
    seen: dict,
    shown: dict,
    manifest,
    data: Path,
    split: str,
    folder: Path,
) -> list[Path]:
    """The evaluation's first batch, drawn into ``folder``: the middle day's maps of the
    real sample with the most varied riverflow, and that sample's hydrograph, under the
    seed's masks (``seen``). ``shown[(strategy, modality, method)]``: predictions in
    physical units. Nothing is drawn that the evaluation's strategies did not score."""
    real = np.flatnonzero(batch["weight"].numpy() > 0)
    flow = np.where(batch["riverflow_valid"].numpy(), batch["riverflow"].numpy(), np.nan)
    spread = np.nan_to_num(np.nanstd(flow[real], axis=1), nan=-1.0) if real.size else [0]
    b = int(real[int(np.argmax(spread))]) if real.size else 0
    t = batch["evap"].shape[1]
    day = t // 2
    valid_idx = np.asarray(manifest.valid_patch_indices)
    units = {m: v.units for m, v in manifest.variables.items()}
    dates = np.datetime64(batch["start"][b], "D") + np.arange(t)
    key = batch["sample_key"][b]

    def physical(m: str, values) -> np.ndarray:
        return np.where(batch[f"{m}_valid"][b].numpy(), values[b].numpy(), np.nan)

    images = [m for m in LABELS if ("seed", m, "model") in shown and m not in ("evap", "riverflow")]
    maps = DayMaps(
        grid=manifest.patch_grid(),
        land=np.load(Path(data) / "land_mask.npy").astype(bool),
        valid_patch_indices=valid_idx,
        truth={m: physical(m, batch[m])[day] for m in images},
        pred={m: shown[("seed", m, "model")][b, day].numpy() for m in images},
        masked={m: seen[f"{m}_mask"][b, day, valid_idx].numpy() for m in images},
        units=units,
        title=f"{split} sample {key}, {dates[day]}: the seed's masks",
    )
    methods = {
        "model": ("seed", "model"),
        "model, all flow hidden": ("riverflow", "model"),
        "interpolation": ("seed", "interpolation"),
        "climatology": ("seed", "climatology"),
    }
    hydro = Hydrograph(
        dates=dates,
        observed=physical("riverflow", batch["riverflow"]),
        masked=seen["riverflow_mask"][b].numpy(),
        predictions={
            name: shown[(s, "riverflow", method)][b].numpy()
            for name, (s, method) in methods.items()
            if (s, "riverflow", method) in shown
        },
        units=units["riverflow"],
        title=f"Riverflow, {split} sample {key}: masked days shaded",
    )
    drawn = []  # what the strategies scored (seed's, riverflow's) can show
    if images:
        drawn.append(plot_day_maps(maps, Path(folder) / "masked_day_maps.png"))
    if hydro.predictions:
        drawn.append(plot_hydrograph(hydro, Path(folder) / "hydrograph.png"))
    return drawn


# strategies whose whole split of one catchment is drawn (hydrograph_<strategy>.png): the
# baseline drawn beside the model (the strongest that reads what the strategy leaves
# seen), its label, and the title
WHOLE_SPLIT = {
    "holdout": (
        "pooled", "pooled regression",
        "Held-out catchment {gauge}, {split} period: riverflow never seen (simulate), "
        "predicted from the weather",
    ),
    "forcing": (
        "regression", "lag regression (rain, evaporation)",
        "Catchment {gauge}, {split} period: riverflow and soil moisture never seen "
        "(forcing), flow from rain, temperature and evaporation",
    ),
}  # fmt: skip


def plot_whole_split(
    series: dict[int, list], strategy: str, manifest, split: str, png: Path
) -> Path:
    """The whole split of the catchment with the most windows (the first seen of those), under
    ``strategy`` (``holdout``: a held-out catchment under ``simulate``; ``forcing``: a gauged
    one with soil moisture withheld too), riverflow never seen: observed, the model and
    the strategy's baseline (``WHOLE_SPLIT``), window after window. ``series[catchment]``:
    ``(start, observed [T], valid [T], {method: [T]})``, mm/day."""
    baseline, label, title = WHOLE_SPLIT[strategy]
    catchment = max(series, key=lambda c: len(series[c]))
    windows = sorted(series[catchment], key=lambda w: w[0])
    dates = np.concatenate(
        [np.datetime64(s, "D") + np.arange(len(obs)) for s, obs, _, _ in windows]
    )
    observed = np.concatenate([np.where(v.numpy(), o.numpy(), np.nan) for _, o, v, _ in windows])
    names = {"model": "model", baseline: label}
    predictions = {
        label: np.concatenate([w[3][method].numpy() for w in windows])
        for method, label in names.items()
    }
    gauge = manifest.catchments.ids[catchment]
    return plot_hydrograph(
        Hydrograph(
            dates=dates,
            observed=observed,
            masked=np.ones(len(dates), dtype=bool),
            predictions=predictions,
            units=manifest.variables["riverflow"].units,
            title=title.format(gauge=gauge, split=split),
        ),
        png,
    )


def _save(fig, png: Path) -> Path:
    import matplotlib.pyplot as plt

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
