"""Evaluate a run against honest baselines (hydromae evaluate --run RUN --data DATA).

On exactly the same masks (the collate's ``eval`` masks, keyed by sample, identical in
every evaluation), for every modality: RMSE and MAE of the masked, valid values in
normalised units and in physical units, for the model and for the baselines of
``training.baselines`` (climatology fitted on the training period of the store, linear
interpolation in time, and for images the mean of the visible neighbouring patches). For
riverflow also NSE and KGE per catchment over its masked days, as median and IQR.
Padding samples (``weight`` 0) are never scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.loader import build_loader
from pipeline.manifest import Manifest
from pipeline.masking import new_generator
from pipeline.normalize import Normalizer
from pipeline.schema import IMAGE_MODALITIES, LAND_MASK_NPY, MODALITIES, SPLITS
from pipeline.store import open_store
from training.baselines import (
    HARMONICS,
    Climatology,
    interpolate_time,
    neighbour_mean,
    patch_neighbours,
)
from training.checkpoint import load_model
from training.loss import modality_slices
from training.metrics import ErrorSums, FlowRecords
from training.model import normalised
from training.plots import DayMaps, Hydrograph, plot_day_maps, plot_hydrograph

METHODS = ("model", "climatology", "interpolation", "neighbours")
STRATEGIES = ("seed", "block", "riverflow")


@dataclass
class EvaluateConfig:
    run: Path = field(metadata={"path": True, "metavar": "RUN_DIR"})
    data: Path = field(metadata={"path": True, "metavar": "DIR"})
    split: str = field(default="val", metadata={"choices": SPLITS})
    out: Path = field(default=Path("metrics.json"), metadata={"path": True, "metavar": "JSON"})
    batch_size: int = 8
    workers: int = 0
    max_batches: int = field(default=0, metadata={"help": "stop after this many (0: all)"})
    progress: bool = True
    plots: bool = field(
        default=True, metadata={"help": "draw a masked day's maps and a hydrograph beside --out"}
    )


def fit_climatology(data: Path, manifest: Manifest, norm: Normalizer) -> dict[str, Climatology]:
    """Per valid pixel and per catchment, in normalised units, over the training period."""
    store = open_store(data)
    positions = manifest.store_positions()
    train = manifest.split("train")
    days = store["time"].to_index()
    rows = np.flatnonzero(
        (days >= train.start.isoformat()) & (days <= f"{train.end.isoformat()}T23:59")
    )
    doy = days.day_of_year.to_numpy()
    clim: dict[str, Climatology] = {}
    for name in MODALITIES:
        array = store[name]
        series = None
        for block in np.array_split(rows, max(1, len(rows) // manifest.window)):
            values = array.isel(time=block).values  # [t, N_store, p, p] or [t, C]
            if name in IMAGE_MODALITIES:
                values = values[:, positions]
            values = norm.normalize(name, values.astype(np.float64).reshape(len(block), -1))
            series = series or Climatology(values.shape[1], HARMONICS if len(rows) >= 365 else 0)
            series.fit(values, doy[block])
        clim[name] = series
    return clim


def harder(batch: dict[str, Any], strategy: str, seed: int) -> dict[str, Any]:
    """The batch the model sees under a masking strategy (the loader's batch is 'seed').

    ``block``: the vector series lose one contiguous block of as many days as the seed's
    masks hide (67 of 90), at an offset keyed by sample; the images keep the seed's masks.
    ``riverflow``: riverflow is withheld on every day (never visible, as if the gauge had
    no record), so it must come from the other modalities; scored on the seed's masked days.
    """
    out = dict(batch)
    if strategy == "block":
        mask = batch["evap_mask"]  # [B, T]
        t, n = mask.shape[1], int(mask[0].sum())
        block = torch.zeros_like(mask)
        for i, key in enumerate(batch["sample_key"]):
            start = int(new_generator(seed, "block", key).integers(0, t - n + 1))
            block[i, start : start + n] = True
        out["evap_mask"] = out["riverflow_mask"] = block
    elif strategy == "riverflow":
        out["riverflow_valid"] = torch.zeros_like(batch["riverflow_valid"])
    return out


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    manifest = Manifest.read(cfg.data)
    model, state = load_model(Path(cfg.run), Path(cfg.data))
    norm = model.normalizer
    train_cfg = state["config"]
    loader = build_loader(
        source=str(cfg.data), split=cfg.split, mode="eval", batch_size=cfg.batch_size,
        num_workers=cfg.workers, seed=train_cfg["seed"], mask_mode=train_cfg["mask_mode"],
        rank=0, world_size=1,
    )  # fmt: skip
    clim = fit_climatology(Path(cfg.data), manifest, norm)
    valid_idx = torch.tensor(manifest.valid_patch_indices)
    adjacency = patch_neighbours(valid_idx, manifest.grid.patch_cols)
    units = ("normalised", "physical")
    sums = {
        (s, m, method, u): ErrorSums()
        for s in STRATEGIES
        for m in MODALITIES
        for method in METHODS
        for u in units
    }
    flows = {(s, method): FlowRecords() for s in STRATEGIES for method in METHODS}
    p = model.geometry.patch_pixels
    shown: dict[tuple[str, str, str], torch.Tensor] = {}  # first batch, for the pictures
    total = min(len(loader), cfg.max_batches or len(loader))
    bar = tqdm(total=total, desc=f"evaluate {cfg.split}", unit="batch", disable=not cfg.progress)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if cfg.max_batches and i >= cfg.max_batches:
                break
            bar.update()
            real = batch["weight"] > 0  # [B]
            doy = batch["doy"].long().numpy()
            # what does not depend on the masks: once per batch
            truths = {m: normalised(norm, m, batch[m], batch[f"{m}_valid"]) for m in MODALITIES}
            seasons = {
                m: _season(clim[m], doy, batch, batch[m].shape, m in IMAGE_MODALITIES)
                for m in MODALITIES
            }
            baselines: dict[tuple, dict[str, torch.Tensor]] = {}  # per (modality, masks)
            for strategy in STRATEGIES:
                seen = harder(batch, strategy, train_cfg["seed"])
                out = model(seen)
                for group, m, cols in modality_slices(model.groups, p):
                    image = m in IMAGE_MODALITIES
                    physical = batch[m]  # [B, T, N, P] or [B, T], 0 where invalid
                    valid, truth = batch[f"{m}_valid"], truths[m]
                    masked = seen[f"{m}_mask"][..., valid_idx] if image else seen[f"{m}_mask"]
                    hidden = masked[..., None] if image else masked
                    known = seen[f"{m}_valid"] & ~hidden  # what the encoder could see
                    # the baselines depend on the masks only: once per batch for masks a
                    # strategy leaves as they were (the images' under every strategy)
                    key = (m, id(seen[f"{m}_mask"]), id(seen[f"{m}_valid"]))
                    if key not in baselines:
                        baselines[key] = {"interpolation": interpolate_time(truth, known)}
                        if image:
                            baselines[key]["neighbours"] = neighbour_mean(
                                truth, known, masked, adjacency
                            )
                    preds = {
                        "model": out[group]["pred"][..., cols].reshape(physical.shape),
                        "climatology": seasons[m],
                        **baselines[key],
                    }
                    scored = valid & hidden & real.view(-1, *([1] * (valid.dim() - 1)))
                    for method, pred in preds.items():
                        phys = norm.denormalize(m, pred.double())
                        if i == 0:
                            shown[(strategy, m, method)] = phys
                        sums[(strategy, m, method, "normalised")].add(pred, truth, scored)
                        sums[(strategy, m, method, "physical")].add(phys, physical.double(), scored)
                        if m == "riverflow":
                            flows[(strategy, method)].add(
                                batch["catchment_index"], phys, physical.double(), scored
                            )
            if i == 0 and cfg.plots:
                draw_examples(batch, harder(batch, "seed", 0), shown, manifest, cfg)
    bar.close()
    result: dict[str, Any] = {"split": cfg.split, "run": str(cfg.run), "strategies": {}}
    for strategy in STRATEGIES:
        entry: dict[str, Any] = {}
        for m in MODALITIES:
            entry[m] = {
                method: {u: sums[(strategy, m, method, u)].result() for u in units}
                for method in METHODS
                if sums[(strategy, m, method, "normalised")].count
            }
            entry[m]["units"] = manifest.variables[m].units
        entry["riverflow_catchments"] = {
            method: flows[(strategy, method)].summary()
            for method in METHODS
            if flows[(strategy, method)].obs
        }
        result["strategies"][strategy] = entry
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return result


def draw_examples(
    batch: dict[str, Any],
    seen: dict[str, Any],
    shown: dict[tuple[str, str, str], torch.Tensor],
    manifest: Manifest,
    cfg: EvaluateConfig,
) -> list[Path]:
    """The first batch's pictures, beside ``cfg.out``: the middle day's maps of the real
    sample with the most varied riverflow, and that sample's hydrograph (seed masks)."""
    real = np.flatnonzero(batch["weight"].numpy() > 0)
    flow = np.where(batch["riverflow_valid"].numpy(), batch["riverflow"].numpy(), np.nan)
    spread = np.nan_to_num(np.nanstd(flow[real], axis=1), nan=-1.0) if real.size else [0]
    b = int(real[int(np.argmax(spread))]) if real.size else 0
    t = batch["evap"].shape[1]
    day = t // 2
    grid = manifest.patch_grid()
    valid_idx = np.asarray(manifest.valid_patch_indices)
    units = {m: manifest.variables[m].units for m in MODALITIES}
    start = np.datetime64(batch["start"][b], "D")
    dates = start + np.arange(t)
    key = batch["sample_key"][b]

    def physical(m: str, values: torch.Tensor) -> np.ndarray:
        return np.where(batch[f"{m}_valid"][b].numpy(), values[b].numpy(), np.nan)

    maps = DayMaps(
        grid=grid,
        land=np.load(Path(cfg.data) / LAND_MASK_NPY).astype(bool),
        valid_patch_indices=valid_idx,
        truth={m: physical(m, batch[m])[day] for m in IMAGE_MODALITIES},
        pred={m: shown[("seed", m, "model")][b, day].numpy() for m in IMAGE_MODALITIES},
        masked={m: seen[f"{m}_mask"][b, day, valid_idx].numpy() for m in IMAGE_MODALITIES},
        units=units,
        title=f"{cfg.split} sample {key}, {dates[day]}: the seed's masks",
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
        },
        units=units["riverflow"],
        title=f"Riverflow, {cfg.split} sample {key}: masked days shaded",
    )
    folder = Path(cfg.out).parent
    return [
        plot_day_maps(maps, folder / "masked_day_maps.png"),
        plot_hydrograph(hydro, folder / "hydrograph.png"),
    ]


def _season(clim: Climatology, doy: np.ndarray, batch: dict, shape, image: bool) -> torch.Tensor:
    """Climatology on the batch's days: per pixel, or for each sample's own catchment."""
    season = torch.from_numpy(clim.predict(doy)).float()  # [B, T, S]
    if image:
        return season.reshape(shape)
    idx = batch["catchment_index"].clamp_min(0).view(-1, 1, 1)
    return season.gather(2, idx.expand(-1, season.shape[1], 1))[..., 0]


def table(result: dict[str, Any]) -> str:
    lines = [f"masked RMSE in physical units, {result['split']} split:"]
    for strategy, entry in result["strategies"].items():
        lines.append(f"  masks: {strategy}")
        lines.append(f"    {'modality':<10}{'units':<9}" + "".join(f"{m:>14}" for m in METHODS))
        for m in MODALITIES:
            cells = "".join(
                f"{entry[m][method]['physical']['rmse']:>14.4f}"
                if method in entry[m]
                else f"{'-':>14}"
                for method in METHODS
            )
            lines.append(f"    {m:<10}{entry[m]['units']:<9}{cells}")
        flow = entry["riverflow_catchments"].get("model", {})
        if "nse_median" in flow:
            lines.append(
                f"    riverflow NSE median {flow['nse_median']:.3f} (IQR {flow['nse_q25']:.3f}.."
                f"{flow['nse_q75']:.3f}), KGE median {flow['kge_median']:.3f}, "
                f"{flow['nse_catchments']} catchments"
            )
    return "\n".join(lines)
