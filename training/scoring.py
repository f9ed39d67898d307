"""What one evaluated batch scores: every method's prediction of every masked value.

For one batch under one strategy, :func:`predictions` gives each modality's predictions,
``[B, T, N, P]`` for images and ``[B, T]`` for the series, in normalised units, of the
model, its hints' mix (the network's correction silenced), climatology, interpolation in
time, the neighbouring patches (images) and the rainfall-runoff regressions (riverflow,
from the visible catchment rain and evaporation, mm/day, and soil moisture, m3 m-3:
:func:`regression_inputs`; physical units converted). :func:`score` sums their errors on
the scored positions, in normalised and physical units, and keeps riverflow per catchment
for NSE and KGE; :class:`Scores` gathers them per strategy; :class:`SameMasks` keeps what
a strategy that leaves a modality's masks as they were would only compute again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pipeline.catchment import catchment_means
from pipeline.history import HISTORY_FEATURES
from pipeline.normalize import Normalizer
from pipeline.schema import IMAGE_MODALITIES
from training.baselines import image_fills, interpolate_time
from training.loss import modality_slices
from training.metrics import ErrorSums, FlowRecords
from training.regression import LagRegression

UNITS = ("normalised", "physical")
IMAGE_REGRESSORS = ("precip", "soil")  # the images whose catchment means regressions read
# what the regressions' visible inputs depend on besides the batch (a cache key)
REGRESSION_MASKS = ("precip_mask", "soil_mask", "soil_valid", "evap_mask", "evap_valid")


def hidden_of(seen: dict, m: str, valid_idx: Tensor) -> tuple[Tensor, Tensor]:
    """``(masked, hidden)`` of a modality under a strategy's batch ``seen``: the mask
    (``[B, T, N]`` for images, ``[B, T]``) and the same broadcastable to its values."""
    if m in IMAGE_MODALITIES:
        masked = seen[f"{m}_mask"][..., valid_idx]
        return masked, masked[..., None]
    return seen[f"{m}_mask"], seen[f"{m}_mask"]


def regression_inputs(
    batch: dict, seen: dict, valid_idx: Tensor, adjacency: Tensor
) -> dict[str, Tensor]:
    """The catchment series the regressions read, ``[B, T]`` each, as a strategy leaves
    them visible: ``precip`` (mm/day) and ``soil`` (m3 m-3), each the catchment mean
    (``pipeline.catchment.catchment_means``, over the catchment's own pixels) of its visible
    patches with the masked ones filled by their visible neighbours (the neighbours
    baseline in physical units); ``evap`` (mm/day) interpolated between its visible days."""
    pixels = batch["catchment_pixels"].float()  # [B, N, P]
    out = {}
    for m in IMAGE_REGRESSORS:
        masked, _ = hidden_of(seen, m, valid_idx)
        valid = batch[f"{m}_valid"]
        _, field = image_fills(batch[m], valid, masked, adjacency)
        out[m] = catchment_means(field, valid, pixels)[0]
    out["evap"] = interpolate_time(batch["evap"], seen["evap_valid"] & ~seen["evap_mask"])
    return out


def regression_predictions(
    batch: dict,
    visible: dict[str, Tensor],
    regressions: dict[str, LagRegression],
    norm: Normalizer,
    methods: tuple[str, ...],
) -> dict[str, Tensor]:
    """Riverflow ``[B, T]`` of each regression in ``methods``, in normalised units, from the
    visible catchment series ``[B, T]`` each (:func:`regression_inputs`) it reads
    (``LagRegression.names``) and, when the batch carries a history, the same series on
    the days before the window (``history``'s features, ``[B, H]`` each)."""
    static = torch.where(batch["static_valid"], batch["static"], float("nan"))
    history = None
    if "history" in batch:  # the days before the window: [B, H, F] (the last LAGS read)
        history = torch.where(batch["history_valid"], batch["history"], float("nan"))
    out = {}
    for name in methods:
        model = regressions[name]
        inputs = [visible[n] for n in model.names]
        before = None
        if history is not None:
            before = [history[..., HISTORY_FEATURES.index(n)] for n in model.names]
        flow = model.predict(inputs, batch["catchment_index"], static, before)
        out[name] = norm.normalize("riverflow", flow)
    return out


def model_predictions(out: dict, groups: list, pixels: int, shapes: dict) -> dict[str, dict]:
    """``{modality: {"model": pred, "mix": mix, "memory": flow}}`` from the model's output,
    each reshaped to the modality's values (``mix`` only with hints, ``memory`` only for
    riverflow with the memory's flow head)."""
    preds: dict[str, dict[str, Tensor]] = {}
    for group, m, cols in modality_slices(groups, pixels):
        preds[m] = {
            method: out[group][key][..., cols].reshape(shapes[m])
            for method, key in (("model", "pred"), ("mix", "mix"), ("memory", "memory"))
            if key in out[group]
        }
    return preds


@dataclass
class Scored:
    """One method's scores on one batch: error sums in both units, riverflow per catchment,
    and (when asked for) the prediction in physical units."""

    normalised: ErrorSums
    physical: ErrorSums
    flows: FlowRecords | None
    prediction: Tensor | None


@dataclass
class Positions:
    """One modality's scored positions under one strategy, gathered once for every method:
    their flat indices ``[M]`` into the values, the truth there in normalised and physical
    units ``[M]`` each, and the whole ``scored`` mask and physical values (riverflow's
    per-catchment records read them)."""

    at: Tensor
    truth: Tensor
    physical: Tensor
    scored: Tensor
    values: Tensor

    @classmethod
    def of(cls, scored: Tensor, truth: Tensor, physical: Tensor) -> Positions:
        """``scored`` (bool), ``truth`` (normalised) and ``physical`` of one shape."""
        at = scored.reshape(-1).nonzero().squeeze(1)
        return cls(at, truth.reshape(-1)[at], physical.reshape(-1)[at], scored, physical)


def score(
    m: str, pred: Tensor, where: Positions, catchment: Tensor, norm: Normalizer, full: bool
) -> Scored:
    """Score a normalised prediction at the scored positions ``where``: the errors of the
    gathered values only, in both units. ``full``: also keep the whole prediction in
    physical units (always for riverflow, whose records are per catchment)."""
    values = pred.reshape(-1)[where.at]  # [M]
    out = Scored(ErrorSums(), ErrorSums(), None, None)
    out.normalised.add(values, where.truth)
    out.physical.add(norm.denormalize(m, values), where.physical)
    if full or m == "riverflow":
        out.prediction = norm.denormalize(m, pred)
    if m == "riverflow":
        out.flows = FlowRecords()
        out.flows.add(catchment, out.prediction, where.values, where.scored)
    return out


@dataclass
class Scores:
    """Error sums per (strategy, modality, method, unit); riverflow per catchment."""

    sums: dict[tuple, ErrorSums] = field(default_factory=lambda: defaultdict(ErrorSums))
    flows: dict[tuple, FlowRecords] = field(default_factory=lambda: defaultdict(FlowRecords))

    def add(self, strategy: str, m: str, method: str, scored: Scored) -> None:
        self.sums[(strategy, m, method, "normalised")].merge(scored.normalised)
        self.sums[(strategy, m, method, "physical")].merge(scored.physical)
        if scored.flows is not None:
            self.flows[(strategy, method)].merge(scored.flows)

    def result(self, strategies, modalities, methods, units: dict[str, str]) -> dict[str, Any]:
        """The JSON-ready table: per strategy and modality, each method's RMSE, MAE and
        count in both units; riverflow NSE and KGE per catchment, median and IQR."""
        out: dict[str, Any] = {}
        for strategy in strategies:
            entry: dict[str, Any] = {}
            for m in modalities:
                entry[m] = {
                    method: {u: self.sums[(strategy, m, method, u)].result() for u in UNITS}
                    for method in methods
                    if self.sums[(strategy, m, method, "normalised")].count
                }
                entry[m]["units"] = units[m]
            entry["riverflow_catchments"] = {
                method: self.flows[(strategy, method)].summary()
                for method in methods
                if self.flows[(strategy, method)].obs
            }
            out[strategy] = entry
        return out


class SameMasks:
    """Results kept for the batch's strategies that leave a modality's masks as they were:
    looked up by the tensors they depend on, compared by value."""

    def __init__(self) -> None:
        self.kept: list[tuple[tuple, Any]] = []

    def get(self, key: tuple, compute):
        for other, value in self.kept:
            if len(other) == len(key) and all(_same(a, b) for a, b in zip(other, key, strict=True)):
                return value
        value = compute()
        self.kept.append((key, value))
        return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    return a == b


def truths(batch: dict, norm: Normalizer, modalities) -> dict[str, Tensor]:
    """Every modality's values in normalised units, 0 where invalid."""
    return {m: norm.where_valid(m, batch[m], batch[f"{m}_valid"]) for m in modalities}
