"""Scores of masked reconstruction: RMSE and MAE per modality; NSE and KGE per catchment.

Errors are accumulated over the masked, valid positions of many batches (``ErrorSums``)
and reduced at the end, so that every evaluated value counts once whatever the batching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@dataclass
class ErrorSums:
    """Running sums of errors over scored positions."""

    count: int = 0
    squared: float = 0.0
    absolute: float = 0.0

    def add(self, pred: Tensor, truth: Tensor, scored: Tensor | None = None) -> None:
        """``pred`` and ``truth`` of one shape, scored where ``scored`` (bool, the same
        shape; None: everywhere, for values already gathered); errors in the inputs'
        precision, sums accumulated in float64."""
        err = pred - truth if scored is None else torch.where(scored, pred - truth, 0.0)
        self.count += err.numel() if scored is None else int(scored.sum())
        self.squared += float((err * err).sum(dtype=torch.float64))
        self.absolute += float(err.abs().sum(dtype=torch.float64))

    def merge(self, other: ErrorSums) -> None:
        """Add the sums of another accumulator (the same scores under another strategy)."""
        self.count += other.count
        self.squared += other.squared
        self.absolute += other.absolute

    def result(self) -> dict[str, float]:
        if self.count == 0:
            return {"rmse": float("nan"), "mae": float("nan"), "count": 0}
        return {
            "rmse": float(np.sqrt(self.squared / self.count)),
            "mae": self.absolute / self.count,
            "count": self.count,
        }


def nse(sim: np.ndarray, obs: np.ndarray) -> float:
    """Nash-Sutcliffe efficiency: 1 - sum((sim - obs)^2) / sum((obs - mean(obs))^2)."""
    spread = ((obs - obs.mean()) ** 2).sum()
    return float("nan") if spread == 0 else float(1 - ((sim - obs) ** 2).sum() / spread)


def kge(sim: np.ndarray, obs: np.ndarray) -> float:
    """Kling-Gupta efficiency: 1 - sqrt((r - 1)^2 + (alpha - 1)^2 + (beta - 1)^2)."""
    if obs.size < 2 or obs.std() == 0 or obs.mean() == 0 or sim.std() == 0:
        return float("nan")
    r = np.corrcoef(sim, obs)[0, 1]
    alpha = sim.std() / obs.std()
    beta = sim.mean() / obs.mean()
    return float(1 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2))


@dataclass
class FlowRecords:
    """Masked riverflow predictions and observations per catchment, in physical units."""

    sim: dict[int, list[float]] = field(default_factory=dict)
    obs: dict[int, list[float]] = field(default_factory=dict)

    def add(self, catchment: Tensor, pred: Tensor, truth: Tensor, scored: Tensor) -> None:
        """``catchment [B]``, ``pred``/``truth``/``scored`` ``[B, T]``."""
        for b, c in enumerate(catchment.tolist()):
            keep = scored[b]
            self.sim.setdefault(c, []).extend(pred[b][keep].tolist())
            self.obs.setdefault(c, []).extend(truth[b][keep].tolist())

    def merge(self, other: FlowRecords) -> None:
        """Add another's values (the same predictions under another strategy)."""
        for c, values in other.sim.items():
            self.sim.setdefault(c, []).extend(values)
            self.obs.setdefault(c, []).extend(other.obs[c])

    def summary(self, minimum: int = 10) -> dict[str, float]:
        """Median and interquartile range of NSE and KGE over catchments with enough values."""
        scores: dict[str, list[float]] = {"nse": [], "kge": []}
        for c, obs in self.obs.items():
            if len(obs) < minimum:
                continue
            o, s = np.asarray(obs), np.asarray(self.sim[c])
            scores["nse"].append(nse(s, o))
            scores["kge"].append(kge(s, o))
        out: dict[str, float] = {}
        for name, values in scores.items():
            v = np.asarray([x for x in values if np.isfinite(x)])
            if v.size:
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                out |= {f"{name}_median": med, f"{name}_q25": q1, f"{name}_q75": q3}
            out[f"{name}_catchments"] = int(v.size)
        return out
