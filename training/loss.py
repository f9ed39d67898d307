"""The MAE loss: mean squared error in normalised units, on masked positions only.

Per modality, the squared errors count where the token was masked (and, for CrossMAE,
reconstructed this step) and the value is valid: sea pixels and missing values are left
out pixel by pixel. Each modality is averaged over its own count, and the modalities are
combined with configurable weights; a modality without a single target in the batch adds
nothing (and never a NaN). With ``norm_pix_loss`` (MAE's per-patch target normalisation)
each image token's targets are standardised by their own valid pixels, with a floor on
the variance since a dry patch has none; such runs are not evaluated in physical units.

With ``flow_units = "physical"`` riverflow's squared errors are taken in mm/day instead,
divided by the training flow's variance (``flow_std`` squared): a pooled NSE loss. Flow
is normalised after ``log1p``, so the default loss weighs a low flow's relative error as
much as a flood's; NSE, the hydrologist's score, is dominated by the floods.

With ``flow_units = "catchment"`` each sample's riverflow errors (mm/day) are divided by its
own catchment's training spread plus ``nse_eps`` (``catchment_flow_std[catchment_index]``):
a per-catchment NSE loss, as neuralhydrology's NSE loss, so that a wet catchment's floods
do not outweigh a dry catchment's whole record.

With the catchment memory's ``history_flow`` (``training.memory``), its riverflow on the
days before the window (with ``flow_fill``, the window's days too: that flow never reads the
gauge) is a further term: the mean squared error in normalised units over the days the
gauge has a value, weighted by ``LossConfig.history_flow``; on rainfall-runoff
sequences (``pipeline.runoff``), the same over their target days, weighted by
``LossConfig.runoff``. Both are riverflow, so ``flow_units`` scales them as it scales the
window's (with "catchment", each by its own catchment's spread: neuralhydrology's NSE loss
on every target day), unless ``memory_flow_units`` gives them units of their own: the
memory is a rainfall-runoff model and can take its NSE loss while the window's flow, which
the decoder fills beside interpolation, stays in normalised units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pipeline.schema import IMAGE_MODALITIES, MODALITIES


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 1.0))
    norm_pix_loss: bool = False
    variance_floor: float = 1e-2  # in normalised units squared
    # "physical": riverflow's errors in mm/day / flow_std; "catchment": in mm/day over
    # (catchment_flow_std[catchment] + nse_eps)
    flow_units: str = "normalised"
    # the memory's riverflow terms (history, sequences): None, as flow_units; or their own
    memory_flow_units: str | None = None
    flow_std: float = 1.0  # mm/day, the training flow's standard deviation
    catchment_flow_std: Tensor | None = None  # [C] mm/day, each catchment's, on the device
    nse_eps: float = 0.1  # mm/day
    # normalised values beyond this are clipped before turning physical (exp overflow)
    flow_clip: float = 8.0
    history_flow: float = 0.0  # the weight of the memory's riverflow on the history days
    runoff: float = 0.0  # the weight of its riverflow on rainfall-runoff sequences

    def memory_units(self) -> str:
        """The units of the memory's riverflow terms."""
        return self.flow_units if self.memory_flow_units is None else self.memory_flow_units

    def scales(self) -> set[str]:
        """The flow units any riverflow term is taken in (what the loss needs fitted)."""
        return {self.flow_units, self.memory_units()}


HISTORY_FLOW = "history_flow"  # the model output's entry for it (training.model)
RUNOFF = "runoff"  # and for the rainfall-runoff sequences' (pipeline.runoff)


def modality_slices(groups: list[tuple[str, tuple[str, ...]]], patch_pixels: int):
    """(group, modality, column slice) of every modality within its group's token."""
    for group, mods in groups:
        width = patch_pixels if mods[0] in IMAGE_MODALITIES else 1
        for i, m in enumerate(mods):
            yield group, m, slice(i * width, (i + 1) * width)


def _standardise(target: Tensor, valid: Tensor, floor: float) -> Tensor:
    """Per token, ``(target - mean) / sqrt(var + floor)`` over its valid pixels."""
    count = valid.sum(-1, keepdim=True).clamp_min(1)
    mean = (target * valid).sum(-1, keepdim=True) / count
    var = (((target - mean) * valid) ** 2).sum(-1, keepdim=True) / count
    return (target - mean) / torch.sqrt(var + floor)


def mae_loss(
    out: dict[str, dict[str, Tensor]],
    groups: list[tuple[str, tuple[str, ...]]],
    patch_pixels: int,
    cfg: LossConfig,
    denormalize: Callable[[str, Tensor], Tensor] | None = None,
    catchment: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss (a scalar) and each modality's mean squared error (detached scalars;
    also ``history_flow``'s and ``runoff``'s when they count).
    ``denormalize(name, x)`` (physical units) is needed for ``flow_units`` "physical" and
    "catchment", and the samples' ``catchment`` ``[B]`` (long, -1 for padding) for the
    latter."""
    total = None
    per_modality: dict[str, Tensor] = {}
    for group, m, cols in modality_slices(groups, patch_pixels):
        g = out[group]
        pred, target, valid = g["pred"][..., cols], g["target"][..., cols], g["valid"][..., cols]
        if cfg.norm_pix_loss and m in IMAGE_MODALITIES:
            target = _standardise(target, valid, cfg.variance_floor)
        if m == "riverflow" and cfg.flow_units != "normalised":
            pred, target = _flow_scaled(pred, target, cfg.flow_units, cfg, denormalize, catchment)
        scored = (g["mask"] & g["predicted"])[..., None] & valid  # [B, L, w]
        count = scored.sum()
        sq = torch.where(scored, (pred - target) ** 2, torch.zeros_like(pred))
        mse = sq.sum() / count.clamp_min(1)  # 0 where nothing is scored: never a NaN
        per_modality[m] = mse.detach()
        term = cfg.weights.get(m, 1.0) * mse
        total = term if total is None else total + term
    assert total is not None
    for key, weight in ((HISTORY_FLOW, cfg.history_flow), (RUNOFF, cfg.runoff)):
        if key in out and weight:
            mse = memory_flow_loss(out[key], cfg, denormalize, catchment)
            per_modality[key] = mse.detach()
            total = total + weight * mse
    return total, per_modality


def memory_flow_loss(
    terms: dict[str, Tensor],
    cfg: LossConfig,
    denormalize: Callable[[str, Tensor], Tensor] | None = None,
    catchment: Tensor | None = None,
) -> Tensor:
    """The mean squared error of one of the memory's riverflow terms (``terms``: ``pred``,
    ``target`` normalised and ``valid`` ``[B, H]`` or ``[A, S]``; rainfall-runoff sequences
    carry their own ``catchment`` ``[A]``, a history takes the samples' ``catchment``) in
    ``cfg.memory_units()``, over its valid days: a scalar, 0 where none is valid."""
    pred, target, valid = terms["pred"], terms["target"], terms["valid"]
    units = cfg.memory_units()
    if units != "normalised":
        of = terms.get("catchment", catchment)
        pred, target = _flow_scaled(pred, target, units, cfg, denormalize, of)
    sq = torch.where(valid, (pred - target) ** 2, 0.0)
    return sq.sum() / valid.sum().clamp_min(1)


def _flow_scaled(
    pred: Tensor,
    target: Tensor,
    units: str,
    cfg: LossConfig,
    denormalize: Callable[[str, Tensor], Tensor] | None,
    catchment: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Riverflow's ``pred`` and ``target`` (``[B, ...]``: ``[B, L, 1]`` a window's, ``[B, H]``
    a history's or sequences') in mm/day over the scale of ``units``: the pooled
    ``flow_std`` or each row's catchment's (``catchment [B]``)."""
    if denormalize is None:
        raise ValueError(f"flow units {units!r} need the normalizer's denormalize")
    if units == "physical":
        scale: Tensor | float = cfg.flow_std
    elif units == "catchment":
        if cfg.catchment_flow_std is None or catchment is None:
            raise ValueError(
                "flow units 'catchment' need catchment_flow_std and the samples' catchments"
            )
        stds = cfg.catchment_flow_std[catchment.clamp_min(0)]  # [B]
        scale = (stds + cfg.nse_eps).view(-1, *[1] * (pred.dim() - 1))  # [B, 1, ...]
    else:
        raise ValueError(f"unknown flow units {units!r}")
    clip = cfg.flow_clip
    return (
        denormalize("riverflow", pred.clamp(-clip, clip)) / scale,
        denormalize("riverflow", target.clamp(-clip, clip)) / scale,
    )
