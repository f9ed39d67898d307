"""Rainfall-runoff sequences: many catchment-periods a training step for the catchment memory.

A training window gives riverflow a target on at most 90 days of one catchment, and the
memory's ``history_flow`` adds the year before it: a few thousand windows in a run of
record. A rainfall-runoff LSTM (neuralhydrology's CudaLSTM) learns from tens of thousands
of sequences. ``RunoffSequences`` draws such sequences from the training period of the
gauged catchments, at the cost of the catchment means already read for the history
(``pipeline.history.CatchmentHistory``), never an image: each is ``length`` days of one
catchment's weather, with its riverflow as the target on the last ``target_days``:

    runoff, runoff_valid                [A, S, F] float32, bool: HISTORY_FEATURES, physical units
    runoff_flow, runoff_flow_valid      [A, S] float32, bool: mm/day; valid on target days only
    runoff_static, runoff_static_valid  [A, n] float32, bool: the catchment's static attributes
    runoff_catchment, runoff_end        [A] int64: the catchment, the store's row of the last day

values 0 where not valid, as the collate gives a sample's history. A share of the
sequences may withhold soil moisture (``forcing``), so that the memory learns the flow of
the meteorological forcing alone as well.
A target day always lies in the training period and a held-out catchment is never drawn;
the weather before the training period (the spin-up) may be read, as a training window's
history does. The draw is keyed by what the caller gives (the seed, the step, the rank),
so a resumed run draws the same sequences.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pipeline.finite import finite_values
from pipeline.history import HISTORY_FEATURES, CatchmentHistory
from pipeline.manifest import Manifest
from pipeline.masking import new_generator


class RunoffSequences:
    """The training catchments' sequences, drawn a batch at a time (:meth:`draw`)."""

    def __init__(
        self, history: CatchmentHistory, manifest: Manifest, length: int, target_days: int
    ) -> None:
        if not 0 < target_days <= length:
            raise ValueError(f"target days must be in 1..{length}, got {target_days}")
        train = manifest.split("train")
        first = (train.start - history.first_day).days  # store rows of the training period
        last = (train.end - history.first_day).days
        # a sequence ends on a training day and its first target day is one too
        self.ends = np.arange(first + target_days - 1, last + 1)
        held = set(manifest.catchments.holdout)
        self.catchments = np.array(
            [i for i, g in enumerate(manifest.catchments.ids) if g not in held], dtype=np.int64
        )
        if not self.ends.size or not self.catchments.size:
            raise ValueError(
                f"the training period ({train.start} to {train.end}) holds no {target_days}-day "
                "target of a gauged catchment for the rainfall-runoff sequences"
            )
        self.history, self.length, self.target_days = history, length, target_days
        self.static = manifest.catchment_table().static  # [C, n]

    def draw(self, count: int, *key: object, forcing: float = 0.0) -> dict[str, Tensor]:
        """``count`` sequences keyed by ``key`` (the same key, the same sequences). A share
        ``forcing`` of them (each drawn with that chance) have their soil moisture withheld
        on every day, as the ``forcing`` strategy withholds it (``pipeline.strategies``):
        flow from rain, temperature and evaporation alone."""
        rng = new_generator("runoff", *key)
        which = self.catchments[rng.integers(0, self.catchments.size, count)]  # [A]
        ends = self.ends[rng.integers(0, self.ends.size, count)]  # [A]
        rows = ends[:, None] + np.arange(1 - self.length, 1)[None, :]  # [A, S] store rows
        inside = rows >= 0  # before the store's first day: missing
        at = np.clip(rows, 0, None)
        weather = self.history.series[at, which[:, None]]  # [A, S, F]
        flow = self.history.flow[at, which[:, None]]  # [A, S]
        weather = np.where(inside[..., None], weather, np.nan)
        target = np.zeros(self.length, dtype=bool)
        target[-self.target_days :] = True
        flow = np.where(inside & target[None, :], flow, np.nan)
        if forcing:  # drawn last: the sequences themselves do not depend on the share
            blind = rng.random(count) < forcing  # [A]
            weather[blind, :, HISTORY_FEATURES.index("soil")] = np.nan
        out = {"runoff_catchment": torch.from_numpy(which), "runoff_end": torch.from_numpy(ends)}
        for suffix, values in (("", weather), ("_flow", flow), ("_static", self.static[which])):
            data, valid = finite_values(values.astype(np.float32))
            name = f"runoff{suffix}"
            out[name], out[f"{name}_valid"] = map(torch.from_numpy, (data, valid))
        return out
