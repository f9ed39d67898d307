"""Evaluate a run against honest baselines (hydromae evaluate --run RUN --data DATA).

The loader gives the split's windows with the collate's ``eval`` masks (keyed by sample,
identical in every evaluation); each strategy of ``pipeline.strategies`` turns them into
the batch the model sees: the specification's masks (``seed``), a ``block`` of days,
``riverflow`` withheld, ``simulate`` (images and evaporation seen, riverflow on every
day predicted: a rainfall-runoff model's setting) and ``forcing`` (``simulate`` with soil
moisture hidden too: flow from rain, temperature and evaporation alone). ``holdout`` is
``simulate`` on the catchments the dataset held out of training (prediction in ungauged
basins), ``holdout_forcing`` ``forcing`` on them (ungauged, and from the forcing alone:
what a rainfall-runoff model trained on the gauged catchments, such as CudaLSTM, answers
there); the other strategies score the other catchments.

For every modality: RMSE and MAE of the masked, valid values in normalised and physical
units, for the model, its hints' mix (the network's correction silenced), its catchment
memory's own riverflow (with the memory's flow head: the LSTM alone), and the
baselines on exactly the same masks: climatology, interpolation in time, the visible
neighbouring patches (images) and, for riverflow, the lag regressions (``training.
regression``) on the catchment means of its visible rain and evaporation (``regression``,
``pooled``) and of its visible rain, evaporation and soil moisture (``regression_soil``,
``pooled_soil``: the strongest simple baseline where soil moisture is seen, as under
``simulate``), each per catchment and pooled across catchments with their static
attributes (the ``pooled`` ones: the baselines for held-out catchments, the only
regressions the held-out strategies score). Riverflow also gets NSE and KGE per
catchment, median and IQR. Padding samples (``weight`` 0) are never scored.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.loader import build_loader
from pipeline.manifest import Manifest
from pipeline.masking import new_generator
from pipeline.schema import IMAGE_MODALITIES, MODALITIES, SPLITS
from pipeline.strategies import EVALUATION, apply
from training.baselines import (
    Climatology,
    image_fills,
    interpolate_time,
    patch_neighbours,
)
from training.checkpoint import load_model
from training.device import pick_device
from training.fit_baselines import fit_climatology, fit_regressions, holdout_indices
from training.plots import WHOLE_SPLIT, draw_examples, plot_whole_split
from training.scoring import (
    IMAGE_REGRESSORS,
    REGRESSION_MASKS,
    Positions,
    SameMasks,
    Scores,
    hidden_of,
    model_predictions,
    regression_inputs,
    regression_predictions,
    score,
    truths,
)

METHODS = (
    "model",
    "mix",
    "memory",
    "climatology",
    "interpolation",
    "neighbours",
    "regression",
    "pooled",
    "regression_soil",
    "pooled_soil",
)
HOLDOUT = "holdout"  # simulate, on the held-out catchments
# strategies scored on the held-out catchments only, and the strategy whose masks they apply
HELD_OUT = {HOLDOUT: "simulate", "holdout_forcing": "forcing"}
MASKS = {**{s: s for s in EVALUATION}, **HELD_OUT}  # a strategy's masks


@dataclass
class EvaluateConfig:
    run: Path = field(metadata={"path": True, "metavar": "RUN_DIR"})
    data: Path = field(metadata={"path": True, "metavar": "DIR"})
    split: str = field(default="val", metadata={"choices": SPLITS})
    out: Path = field(default=Path("metrics.json"), metadata={"path": True, "metavar": "JSON"})
    batch_size: int = field(default=8, metadata={"min": 1})
    workers: int = field(default=0, metadata={"min": 0})
    max_batches: int = field(
        default=0, metadata={"min": 0, "help": "stop after this many (0: all)"}
    )
    strategies: list[str] = field(
        default_factory=list,
        metadata={
            "choices": (*EVALUATION, *HELD_OUT),
            "help": "strategies to score (none given: all; the held-out ones, holdout and "
            "holdout_forcing, where the dataset holds catchments out)",
        },
    )
    device: str = field(
        default="auto", metadata={"help": "auto (the GPU if there is one), cpu, cuda:N"}
    )
    progress: bool = True
    plots: bool = field(
        default=True, metadata={"help": "draw a masked day's maps and hydrographs beside --out"}
    )


def block_offsets(keys: list[str], seed: int) -> list[float]:
    """Where each sample's block of days lies (``block``), keyed by the sample."""
    return [float(new_generator(seed, "block", key).random()) for key in keys]


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    manifest = Manifest.read(cfg.data)
    model, state = load_model(Path(cfg.run), Path(cfg.data))
    model = model.to(pick_device(cfg.device))
    norm = model.normalizer
    train_cfg = state["config"]
    loader = build_loader(
        source=str(cfg.data), split=cfg.split, mode="eval", batch_size=cfg.batch_size,
        num_workers=cfg.workers, seed=train_cfg["seed"], mask_mode=train_cfg["mask_mode"],
        rank=0, world_size=1, history_days=model.cfg.history_days,
    )  # fmt: skip
    started = time.perf_counter()
    clim = fit_climatology(Path(cfg.data), manifest, norm)
    regressions = fit_regressions(Path(cfg.data), manifest, model.cfg.history_days)
    held = torch.from_numpy(holdout_indices(manifest))
    strategies = [*EVALUATION, *(HELD_OUT if held.numel() else ())]
    strategies = [s for s in strategies if not cfg.strategies or s in cfg.strategies]
    valid_idx = torch.tensor(manifest.valid_patch_indices)
    adjacency = patch_neighbours(valid_idx, manifest.grid.patch_cols)
    scores = Scores()
    shown: dict[tuple[str, str, str], torch.Tensor] = {}  # first batch, for the pictures
    series: dict[str, dict[int, list]] = {s: {} for s in WHOLE_SPLIT}  # catchments' windows
    fitted = time.perf_counter()
    samples = passes = 0  # real samples, and (sample, strategy) forward passes
    total = min(len(loader), cfg.max_batches or len(loader))
    bar = tqdm(total=total, desc=f"evaluate {cfg.split}", unit="batch", disable=not cfg.progress)
    with torch.inference_mode():
        for i, batch in enumerate(loader):
            if cfg.max_batches and i >= cfg.max_batches:
                break
            bar.update()
            is_held = torch.isin(batch["catchment_index"], held)
            real = batch["weight"] > 0
            samples += int(real.sum())
            same = SameMasks()  # results the batch's strategies share
            b = len(batch["sample_key"])
            offsets = block_offsets(batch["sample_key"], train_cfg["seed"])  # block's days
            for strategy in strategies:
                rows = real & (is_held if strategy in HELD_OUT else ~is_held)
                if not rows.any():
                    continue
                seen = apply(batch, [MASKS[strategy]] * b, offsets)
                passes += int(rows.sum())
                phys = score_batch(
                    batch, seen, strategy, rows, model, clim, regressions, scores, same,
                    valid_idx, adjacency, full=i == 0,
                )  # fmt: skip
                if i == 0:
                    shown.update({(strategy, m, k): v for (m, k), v in phys.items()})
                if cfg.plots and strategy in WHOLE_SPLIT:  # kept for the pictures only
                    methods = ("model", WHOLE_SPLIT[strategy][0])
                    for j in np.flatnonzero(rows.numpy()):
                        series[strategy].setdefault(int(batch["catchment_index"][j]), []).append(
                            (batch["start"][j], batch["riverflow"][j], batch["riverflow_valid"][j],
                             {k: phys[("riverflow", k)][j] for k in methods})
                        )  # fmt: skip
            if i == 0 and cfg.plots:
                seed = apply(batch, ["seed"] * b)
                folder = Path(cfg.out).parent
                draw_examples(batch, seed, shown, manifest, Path(cfg.data), cfg.split, folder)
    bar.close()
    seconds = time.perf_counter() - fitted
    units = {m: manifest.variables[m].units for m in MODALITIES}
    result: dict[str, Any] = {
        "split": cfg.split,
        "run": str(cfg.run),
        "holdout": list(manifest.catchments.holdout),
        # days before each window the model and the regressions read (these at most LAGS)
        "history_days": model.cfg.history_days,
        "strategies": scores.result(strategies, MODALITIES, METHODS, units),
        "timing": {
            "fit_baselines_s": fitted - started,
            "seconds": seconds,  # the loop: loading, forward passes, scoring
            "samples": samples,
            "samples_per_s": samples / max(seconds, 1e-9),
            "strategy_passes_per_s": passes / max(seconds, 1e-9),
            "device": str(next(model.parameters()).device),
        },
    }
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(result, indent=1) + "\n")
    for strategy, kept in series.items():
        if kept:
            png = Path(cfg.out).parent / f"hydrograph_{strategy}.png"
            plot_whole_split(kept, strategy, manifest, cfg.split, png)
    print(table(result))
    return result


def score_batch(
    batch: dict,
    seen: dict,
    strategy: str,
    rows: torch.Tensor,
    model,
    clim: dict[str, Climatology],
    regressions: dict,
    scores: Scores,
    same: SameMasks,
    valid_idx: torch.Tensor,
    adjacency: torch.Tensor,
    full: bool,
) -> dict[tuple[str, str], torch.Tensor]:
    """Score one strategy's batch; return the predictions in physical units (riverflow's,
    and with ``full`` every modality's: the pictures draw the first batch). The baselines
    of a modality whose masks an earlier strategy of the batch left the same are not
    computed again (``same``): their scores are the same."""
    norm = model.normalizer
    shapes = {m: batch[m].shape for m in MODALITIES}
    truth = same.get(("truths",), lambda: truths(batch, norm, MODALITIES))
    masks = tuple(seen[k] for k in sorted(seen) if k.endswith(("_mask", "_valid")))
    preds = same.get(  # a held-out strategy has another's masks: one forward pass for both
        ("model", *masks),
        lambda: model_predictions(
            {g: {k: v.cpu() for k, v in d.items()} for g, d in model(seen).items()},
            model.groups, model.geometry.patch_pixels, shapes,
        ),
    )  # fmt: skip
    catchment = batch["catchment_index"]
    phys: dict[tuple[str, str], torch.Tensor] = {}
    for m in MODALITIES:
        masked, hidden = hidden_of(seen, m, valid_idx)
        valid = batch[f"{m}_valid"]
        scored = valid & hidden & rows.view(-1, *([1] * (valid.dim() - 1)))
        if not scored.any():
            continue
        where = Positions.of(scored, truth[m], batch[m])
        for method, pred in preds[m].items():
            result = score(m, pred, where, catchment, norm, full)
            scores.add(strategy, m, method, result)
            if result.prediction is not None:
                phys[(m, method)] = result.prediction
        inputs = (m, strategy in HELD_OUT, rows, seen[f"{m}_mask"], seen[f"{m}_valid"])
        if m == "riverflow":  # the regressions read the visible rain, evaporation and soil
            inputs += tuple(seen[k] for k in REGRESSION_MASKS)
        baselines = same.get(
            inputs,
            lambda m=m, masked=masked, hidden=hidden, where=where: {
                method: score(m, pred, where, catchment, norm, full)
                for method, pred in baseline_predictions(
                    batch, seen, strategy, m, truth[m], masked, hidden, clim, regressions,
                    norm, valid_idx, adjacency, same,
                ).items()
            },
        )  # fmt: skip
        for method, result in baselines.items():
            scores.add(strategy, m, method, result)
            if result.prediction is not None:
                phys[(m, method)] = result.prediction
    return phys


def baseline_predictions(
    batch: dict,
    seen: dict,
    strategy: str,
    m: str,
    truth: torch.Tensor,
    masked: torch.Tensor,
    hidden: torch.Tensor,
    clim: dict[str, Climatology],
    regressions: dict,
    norm,
    valid_idx: torch.Tensor,
    adjacency: torch.Tensor,
    same: SameMasks,
) -> dict[str, torch.Tensor]:
    """Every baseline's prediction of a modality, normalised, from what the strategy's
    batch ``seen`` leaves visible."""
    valid, image = seen[f"{m}_valid"], m in IMAGE_MODALITIES
    out = {"climatology": season(clim[m], batch["doy"].long().numpy(), batch, truth.shape, image)}
    if image:
        out["interpolation"], out["neighbours"] = image_fills(truth, valid, masked, adjacency)
    else:  # what the encoder could see
        out["interpolation"] = interpolate_time(truth, valid & ~hidden)
    if m == "riverflow":
        # held-out catchments have no flow record: the pooled regressions only; a
        # regression that reads an image with no valid value left (soil moisture under
        # forcing) has no input: not scored
        withheld = {n for n in IMAGE_REGRESSORS if not seen[f"{n}_valid"].any()}
        which = tuple(
            k
            for k, r in regressions.items()
            if (r.pooled or strategy not in HELD_OUT) and not withheld & set(r.names)
        )
        visible = same.get(
            ("regression inputs", *(seen[k] for k in REGRESSION_MASKS)),
            lambda: regression_inputs(batch, seen, valid_idx, adjacency),
        )
        out |= regression_predictions(batch, visible, regressions, norm, which)
    return out


def season(clim: Climatology, doy: np.ndarray, batch: dict, shape, image: bool) -> torch.Tensor:
    """Climatology on the batch's days: per pixel, or for each sample's own catchment."""
    values = torch.from_numpy(clim.predict(doy)).float()  # [B, T, S]
    if image:
        return values.reshape(shape)
    idx = batch["catchment_index"].clamp_min(0).view(-1, 1, 1)
    return values.gather(2, idx.expand(-1, values.shape[1], 1))[..., 0]


def table(result: dict[str, Any]) -> str:
    """The printed summary: masked RMSE (physical units) and riverflow NSE / KGE."""
    w = max(14, 2 + max(map(len, METHODS)))  # a column per method, wide enough for its name
    lines = [f"masked RMSE in physical units, {result['split']} split:"]
    for strategy, entry in result["strategies"].items():
        lines.append(f"  masks: {strategy}")
        lines.append(f"    {'modality':<10}{'units':<9}" + "".join(f"{m:>{w}}" for m in METHODS))
        for m in MODALITIES:
            cells = "".join(
                f"{entry[m][method]['physical']['rmse']:>{w}.4f}"
                if method in entry[m]
                else f"{'-':>{w}}"
                for method in METHODS
            )
            lines.append(f"    {m:<10}{entry[m]['units']:<9}{cells}")
        for method, flow in entry["riverflow_catchments"].items():
            if "nse_median" in flow:
                lines.append(
                    f"    riverflow {method:<{w - 1}} NSE median {flow['nse_median']:.3f} (IQR "
                    f"{flow['nse_q25']:.3f}..{flow['nse_q75']:.3f}), KGE median "
                    f"{flow.get('kge_median', float('nan')):.3f}, {flow['nse_catchments']} "
                    "catchments"
                )
    return "\n".join(lines)
