"""Normalisation: a per-variable transform, then (x - mean) / std.

Statistics come from the manifest (``Manifest.normalizer()``; float64, training period
only, land pixels only, NaN-aware). The data on disk stay in physical units; the model
applies the :class:`Normalizer` on its own device, saves it in every checkpoint, and
inverts it to report errors in physical units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)
TRANSFORMS = ("none", "log1p")


@dataclass(frozen=True)
class VariableStats:
    """Statistics of one variable after its transform."""

    transform: str  # "none" or "log1p"
    mean: float
    std: float
    count: int = 0  # values that entered the statistics

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}; known: {TRANSFORMS}")
        if not (np.isfinite(self.mean) and np.isfinite(self.std) and self.std > 0):
            raise ValueError(f"statistics need a finite mean and a positive std, got {self}")


def _forward(x: Array, transform: str) -> Array:
    if transform == "log1p":
        return torch.log1p(x) if isinstance(x, torch.Tensor) else np.log1p(x)
    return x


def _inverse(x: Array, transform: str) -> Array:
    if transform == "log1p":
        return torch.expm1(x) if isinstance(x, torch.Tensor) else np.expm1(x)
    return x


class Normalizer:
    """Normalise and denormalise named variables, for numpy arrays and torch tensors alike.

    ``normalize(name, x)`` returns ``(transform(x) - mean) / std`` in ``x``'s dtype and on
    ``x``'s device; ``denormalize`` is its exact inverse up to floating-point rounding.
    """

    def __init__(self, stats: dict[str, VariableStats]) -> None:
        self.stats = dict(stats)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(s) for name, s in self.stats.items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, dict[str, Any]]) -> Normalizer:
        return cls({name: VariableStats(**entry) for name, entry in state.items()})

    def _get(self, name: str) -> VariableStats:
        try:
            return self.stats[name]
        except KeyError:
            raise KeyError(
                f"no normalisation statistics for {name!r}; have {list(self.stats)}"
            ) from None

    def normalize(self, name: str, x: Array) -> Array:
        s = self._get(name)
        return (_forward(x, s.transform) - s.mean) / s.std

    def where_valid(self, name: str, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``values`` (float32) in normalised units where ``valid``, 0 (the training mean)
        elsewhere, whatever the invalid entries hold (NaN included)."""
        raw = values.float()
        if self._get(name).transform == "log1p":
            raw = raw.clamp_min(0.0)  # log1p needs x > -1; invalid entries are zeroed below
        x = self.normalize(name, raw)
        return torch.where(valid, x, torch.zeros_like(x))

    def where_valid_features(
        self, names: tuple[str, ...], values: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`where_valid` of each feature of ``values`` ``[..., F]`` (the variables
        ``names``, in order; ``valid`` the same shape): ``[..., F]``."""
        return torch.stack(
            [self.where_valid(n, values[..., i], valid[..., i]) for i, n in enumerate(names)],
            dim=-1,
        )

    def denormalize(self, name: str, x: Array) -> Array:
        s = self._get(name)
        return _inverse(x * s.std + s.mean, s.transform)

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{n}: {s.transform} mean={s.mean:.4g} std={s.std:.4g}" for n, s in self.stats.items()
        )
        return f"Normalizer({inner})"
