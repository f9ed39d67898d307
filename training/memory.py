"""The catchment's memory: a recurrent state over its daily weather, for the series' queries.

Riverflow is a catchment's slow answer to its rain: water held in the soil and the ground
drains for weeks to months. A transformer over a window's tokens has to find that response
by attention, with no notion of a store that fills and empties; rainfall-runoff models
(neuralhydrology's CudaLSTM) carry it as a state. ``CatchmentMemory`` is such a state: an
LSTM run forward in time over the catchment's days, first the ``history_days`` before the
window (``pipeline.history``), then the window's, each day's input what the visible values
say of the catchment (``HydroMAE._memory_inputs``: the catchment means of the visible rain,
soil moisture and temperature and the share of the catchment they cover, evaporation and
riverflow where visible, the static attributes). Its state on each day of the window is
embedded into the decoder's queries of that day's series tokens, beside the mask token, the
position and the hints. It reads visible values only, as the encoder does.

Shapes: B batch, H days before the window, T days of the window, F input features a day,
M the memory's width, Dd the decoder's width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# the LSTM's forget-gate bias at the start: a state that keeps most of itself from one day
# to the next, so that the gradient reaches the months before (as CudaLSTM's
# initial_forget_bias)
FORGET_BIAS = 3.0


class CatchmentMemory(nn.Module):
    """An LSTM over ``[B, H + T, F]`` daily inputs; per series group, its state on the last
    ``T`` days embedded to the decoder's width ``[B, T, Dd]``."""

    def __init__(self, features: int, width: int, decoder_dim: int, groups: list[str]) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, width, batch_first=True)
        with torch.no_grad():  # gates are ordered input, forget, cell, output
            self.lstm.bias_hh_l0[width : 2 * width].fill_(FORGET_BIAS)
        self.embed = nn.ModuleDict({n: nn.Linear(width, decoder_dim) for n in groups})

    def forward(self, inputs: Tensor, days: int) -> dict[str, Tensor]:
        """``inputs [B, H + T, F]`` -> per series group ``[B, T, Dd]``."""
        state, _ = self.lstm(inputs)  # [B, H + T, M]
        window = state[:, -days:]  # [B, T, M]
        return {name: embed(window) for name, embed in self.embed.items()}
