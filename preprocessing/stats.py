"""Normalisation statistics: NaN-aware, float64, mergeable in a fixed order.

Each block of days contributes ``Moments`` (count, mean, M2) of the transformed values;
blocks merge with Chan et al.'s pairwise formula in block order, so a resumed run, which
reloads finished blocks' moments from the journal, gives bit-identical statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pipeline.normalize import VariableStats

# the transform each variable's statistics are taken after (``docs/dataset.md``)
TRANSFORMS = {
    "precip": "log1p",
    "soil": "none",
    "temp": "none",
    "evap": "none",
    "riverflow": "log1p",
}


@dataclass(frozen=True)
class Moments:
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    @classmethod
    def of(cls, values: np.ndarray, transform: str) -> Moments:
        """Moments of the finite values of ``values`` after ``transform``, in float64."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if transform == "log1p":
            v = np.log1p(v)
        if v.size == 0:
            return cls()
        mean = float(v.mean())
        return cls(int(v.size), mean, float(((v - mean) ** 2).sum()))

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return Moments(n, mean, m2)

    def to_dict(self) -> dict:
        return asdict(self)

    def stats(self, transform: str, name: str) -> VariableStats:
        if self.count < 2:
            raise ValueError(f"{name}: fewer than two valid training values for statistics")
        std = float(np.sqrt(self.m2 / self.count))
        if std == 0.0:
            raise ValueError(f"{name}: training values are constant, the std is 0")
        return VariableStats(transform, self.mean, std, self.count)
