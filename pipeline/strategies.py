"""Masking strategies beyond the specification's: what is hidden from the model, and where.

The specification's masks (``seed``) hide 70 of 94 patches a day and 67 of 90 days of the
series, scattered: a model can fill them by interpolation. Hydrology asks harder questions,
each a strategy here, applied to a batch's ``*_mask`` (and ``*_valid``) tensors per sample:

- ``seed``: the specification's masks, unchanged.
- ``block``: the images keep their masks; the series lose one contiguous block of as many
  days as the specification hides (67 of 90), at a keyed offset, the same block for both.
- ``riverflow``: the specification's masks, but riverflow is withheld on every day (never
  visible, as if the gauge had no record); it is scored on the masked days.
- ``simulate`` (also the training strategy ``withhold``): every image patch and every day of
  evaporation visible, riverflow masked on every day: a rainfall-runoff model's setting,
  scored on every valid day.
- ``forcing`` (evaluation and training): ``simulate`` with soil moisture withheld too,
  in the window and in the history before it (never valid, as riverflow is under
  ``riverflow``: with unified masks a patch's token carries all three images, so soil
  cannot be masked apart from rain): flow from the meteorological forcing alone (rain,
  temperature, evaporation), what a rainfall-runoff model such as neuralhydrology's
  CudaLSTM reads. Soil moisture is a state of the land; where it is seen it tells a model
  much of the flow. Riverflow is scored on every valid day.
- ``ungauged`` (training): the images and evaporation keep the specification's masks,
  riverflow is masked on every day and trained on every valid one: ``riverflow``'s
  question (flow from the weather as scattered visible patches estimate it), with a target.

A strategy does two things: it sets the masks (:func:`hide`) and it may withhold a
modality by its validity (:func:`withhold`: ``riverflow``'s flow, ``forcing``'s soil
moisture). Training mixes strategies per sample, drawn by (seed, epoch, sample_key) like
the masks (:func:`draw`), so batch composition, workers and resumption change nothing: the
collate draws and hides, and the model withholds by the batch's ``strategy`` names once
its images are each sample's own. Evaluation applies one strategy to every sample
(:func:`apply`, both steps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pipeline.history import HISTORY_FEATURES
from pipeline.schema import IMAGE_MODALITIES, VECTOR_MODALITIES

TRAINING = ("seed", "block", "withhold", "ungauged", "forcing")  # what a training mix may hold
EVALUATION = ("seed", "block", "riverflow", "simulate", "forcing")  # what evaluate scores


def check_mix(mix: Mapping[str, float], where: str = "strategies") -> dict[str, float]:
    """A training mix ``{strategy: weight}``: known names, weights >= 0, not all 0."""
    unknown = sorted(set(mix) - set(TRAINING))
    if unknown:
        raise ValueError(f"{where}: unknown strategy {unknown[0]!r}; known: {', '.join(TRAINING)}")
    weights = {k: float(v) for k, v in mix.items()}
    if any(not math.isfinite(w) or w < 0 for w in weights.values()) or not sum(weights.values()):
        raise ValueError(f"{where}: weights must be >= 0 and not all 0, got {dict(mix)}")
    return weights


def draw(mix: Mapping[str, float], rng: np.random.Generator) -> tuple[str, float]:
    """One sample's strategy from ``mix`` and a uniform number for its offsets, both drawn
    from ``rng`` (a generator keyed by the sample)."""
    names = [n for n in TRAINING if mix.get(n, 0) > 0]
    weights = np.array([mix[n] for n in names], dtype=np.float64)
    u, offset = rng.random(2)
    pick = int(np.searchsorted(np.cumsum(weights) / weights.sum(), u, side="right"))
    return names[min(pick, len(names) - 1)], float(offset)


def block(days: int, hidden: int, offset: float) -> torch.Tensor:
    """``[days]`` bool: ``hidden`` contiguous days masked, starting at ``offset`` (in [0, 1))
    of the possible starts."""
    start = min(int(offset * (days - hidden + 1)), days - hidden)
    mask = torch.zeros(days, dtype=torch.bool)
    mask[start : start + hidden] = True
    return mask


def apply(batch: dict, strategies: Sequence[str], offsets: Sequence[float] | None = None) -> dict:
    """A copy of ``batch`` whose masks and validity follow each sample's strategy:
    :func:`hide`, then :func:`withhold`. Tensors not changed are shared with ``batch``."""
    return withhold(hide(batch, strategies, offsets), strategies)


def hide(batch: dict, strategies: Sequence[str], offsets: Sequence[float] | None = None) -> dict:
    """A copy of ``batch`` whose five ``*_mask`` tensors follow each sample's strategy (all
    ``batch`` needs). ``offsets`` place the ``block`` strategy's block (one number in
    [0, 1) a sample; default 0.5)."""
    out = dict(batch)
    offsets = [0.5] * len(strategies) if offsets is None else list(offsets)
    masks = {f"{m}_mask": batch[f"{m}_mask"].clone() for m in IMAGE_MODALITIES + VECTOR_MODALITIES}
    for i, name in enumerate(strategies):
        if name in ("seed", "riverflow"):  # riverflow: withheld by its validity
            continue
        if name == "block":
            days = masks["evap_mask"].shape[1]
            hidden = int(batch["evap_mask"][i].sum())
            for m in VECTOR_MODALITIES:
                masks[f"{m}_mask"][i] = block(days, hidden, offsets[i])
        elif name == "ungauged":
            masks["riverflow_mask"][i] = True
        elif name in ("simulate", "withhold", "forcing"):
            for m in IMAGE_MODALITIES:
                masks[f"{m}_mask"][i] = False
            masks["evap_mask"][i] = False
            masks["riverflow_mask"][i] = True
        else:
            known = ", ".join(dict.fromkeys(EVALUATION + TRAINING))
            raise ValueError(f"unknown strategy {name!r}; known: {known}")
    out.update(masks)
    return out


def withhold(batch: dict, strategies: Sequence[str]) -> dict:
    """A copy of ``batch`` with what each sample's strategy withholds made invalid:
    riverflow on every day under ``riverflow``; soil moisture under ``forcing``, in the
    window (``soil_valid [B, T, N, P]``, the images each sample's own) and in the history
    before it (``history_valid [B, H, F]``, where the batch has one). Other strategies
    withhold nothing; tensors not changed are shared with ``batch``."""
    out = dict(batch)
    names = list(strategies)
    flow = torch.tensor([n == "riverflow" for n in names], dtype=torch.bool)
    soil = torch.tensor([n == "forcing" for n in names], dtype=torch.bool)
    if flow.any():
        valid = batch["riverflow_valid"]
        out["riverflow_valid"] = valid & ~flow.to(valid.device)[:, None]
    if soil.any():
        valid = batch["soil_valid"]
        if valid.shape[0] != len(names):
            raise ValueError(
                f"soil_valid holds {valid.shape[0]} images for {len(names)} strategies: "
                "withhold needs each sample's own images (pipeline.collate.expand_windows)"
            )
        out["soil_valid"] = valid & ~soil.to(valid.device).view(-1, 1, 1, 1)
        if "history_valid" in batch:  # [B, H, F]
            history = batch["history_valid"].clone()
            history[soil.to(history.device), :, HISTORY_FEATURES.index("soil")] = False
            out["history_valid"] = history
    return out
