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

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import config
from pipeline.collate import IMAGE_MODALITIES, MODALITIES
from pipeline.dataset import open_store, read_manifest
from pipeline.loader import build_loader
from pipeline.normalize import Normalizer
from training import checkpoint
from training.baselines import (
    HARMONICS,
    Climatology,
    interpolate_time,
    neighbour_mean,
    patch_neighbours,
)
from training.loss import modality_slices
from training.metrics import CatchmentSeries, ErrorSums
from training.model import Geometry, HydroMAE, ModelConfig
from training.train import CHECKPOINT

METHODS = ("model", "climatology", "interpolation", "neighbours")


@dataclass
class EvaluateConfig:
    run: Path = field(metadata={"metavar": "RUN_DIR"})
    data: Path = field(metadata={"metavar": "DIR"})
    split: str = field(default="val", metadata={"choices": ("train", "val", "test")})
    out: Path = field(default=Path("metrics.json"), metadata={"metavar": "JSON"})
    batch_size: int = 8
    workers: int = 0
    max_batches: int = field(default=0, metadata={"help": "stop after this many (0: all)"})


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, EvaluateConfig)


def load_model(
    run: Path, data: Path | None, name: str = CHECKPOINT
) -> tuple[HydroMAE, dict[str, Any]]:
    """The model of a run's checkpoint, in eval mode (refused against another dataset)."""
    state = checkpoint.load(run / name, data)
    model = HydroMAE(
        ModelConfig(**state["model_config"]),
        Geometry(
            **{
                **state["geometry"],
                "valid_patch_indices": tuple(state["geometry"]["valid_patch_indices"]),
            }
        ),
        Normalizer.from_state_dict(state["normalizer"]),
    )
    model.load_state_dict(state["model"])
    return model.eval(), state


def fit_climatology(
    data: Path, manifest: dict[str, Any], norm: Normalizer
) -> dict[str, Climatology]:
    """Per valid pixel and per catchment, in normalised units, over the training period."""
    store = open_store(data)
    positions = np.searchsorted(manifest["store_patch_indices"], manifest["valid_patch_indices"])
    train = manifest["splits"]["train"]
    days = store["time"].to_index()
    rows = np.flatnonzero((days >= train["start"]) & (days <= f"{train['end']}T23:59"))
    doy = days.day_of_year.to_numpy()
    clim: dict[str, Climatology] = {}
    for name in MODALITIES:
        array = store[name]
        series = None
        for block in np.array_split(rows, max(1, len(rows) // manifest["window"])):
            values = array.isel(time=block).values  # [t, N_store, p, p] or [t, C]
            if name in IMAGE_MODALITIES:
                values = values[:, positions]
            values = norm.normalize(name, values.astype(np.float64).reshape(len(block), -1))
            series = series or Climatology(values.shape[1], HARMONICS if len(rows) >= 365 else 0)
            series.fit(values, doy[block])
        clim[name] = series
    return clim


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    manifest = read_manifest(cfg.data)
    model, state = load_model(Path(cfg.run), Path(cfg.data))
    norm = model.normalizer
    train_cfg = state["config"]
    loader = build_loader(
        source=str(cfg.data), split=cfg.split, mode="eval", batch_size=cfg.batch_size,
        num_workers=cfg.workers, seed=train_cfg["seed"], mask_mode=train_cfg["mask_mode"],
        rank=0, world_size=1,
    )  # fmt: skip
    clim = fit_climatology(Path(cfg.data), manifest, norm)
    adjacency = patch_neighbours(
        torch.tensor(manifest["valid_patch_indices"]), manifest["grid"]["patch_cols"]
    )
    sums = {
        (m, method, unit): ErrorSums()
        for m in MODALITIES
        for method in METHODS
        for unit in ("normalised", "physical")
    }
    flows = {method: CatchmentSeries() for method in METHODS if method != "neighbours"}
    p = model.geometry.patch_pixels
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if cfg.max_batches and i >= cfg.max_batches:
                break
            out = model(batch)
            real = batch["weight"] > 0  # [B]
            doy = batch["doy"].long().numpy()
            for group, m, cols in modality_slices(model.groups, p):
                g = out[group]
                b = real.shape[0]
                image = m in IMAGE_MODALITIES
                shape = (b, -1, len(manifest["valid_patch_indices"]), p) if image else (b, -1)
                truth = g["target"][..., cols].reshape(shape)  # normalised, 0 where invalid
                valid = g["valid"][..., cols].reshape(shape)
                masked = g["mask"].reshape(shape[:-1] if image else shape)
                known = valid & ~(masked[..., None] if image else masked)
                season = torch.from_numpy(clim[m].predict(doy)).float()  # [B, T, S]
                if image:
                    season = season.reshape(shape)
                else:  # each sample's own catchment
                    idx = batch["catchment_index"].clamp_min(0).view(-1, 1, 1)
                    season = season.gather(2, idx.expand(-1, season.shape[1], 1))[..., 0]
                preds = {
                    "model": g["pred"][..., cols].reshape(shape),
                    "climatology": season,
                    "interpolation": interpolate_time(truth, known),
                }
                if image:
                    preds["neighbours"] = neighbour_mean(truth, valid, masked, adjacency)
                scored = valid & (masked[..., None] if image else masked)
                scored &= real.view(-1, *([1] * (scored.dim() - 1)))
                physical = batch[m]
                for method, pred in preds.items():
                    sums[(m, method, "normalised")].add(pred, truth, scored)
                    sums[(m, method, "physical")].add(
                        norm.denormalize(m, pred.double()), physical.double(), scored
                    )
                    if m == "riverflow":
                        flows[method].add(
                            batch["catchment_index"],
                            norm.denormalize(m, pred.double()),
                            physical.double(),
                            scored,
                        )
    result: dict[str, Any] = {"split": cfg.split, "masks": "seed (eval)", "modalities": {}}
    for m in MODALITIES:
        result["modalities"][m] = {
            method: {unit: sums[(m, method, unit)].result() for unit in ("normalised", "physical")}
            for method in METHODS
            if sums[(m, method, "normalised")].count or method != "neighbours"
        }
        result["modalities"][m]["units"] = manifest["variables"][m]["units"]
    result["riverflow_catchments"] = {method: s.summary() for method, s in flows.items()}
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"masked RMSE in physical units, {result['split']} split, the seed's masks:"]
    header = f"  {'modality':<10}{'units':<9}" + "".join(f"{m:>14}" for m in METHODS)
    lines.append(header)
    for m, entry in result["modalities"].items():
        cells = "".join(
            f"{entry[method]['physical']['rmse']:>14.4f}" if method in entry else f"{'-':>14}"
            for method in METHODS
        )
        lines.append(f"  {m:<10}{entry['units']:<9}{cells}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    evaluate(config.from_args(EvaluateConfig, args))
    return 0
