"""The catchment's memory: a recurrent state over its daily weather, for the series' queries.

Riverflow is a catchment's slow answer to its rain: water held in the soil and the ground
drains for weeks to months. A transformer over a window's tokens has to find that response
by attention, with no notion of a store that fills and empties; rainfall-runoff models
(neuralhydrology's CudaLSTM) carry it as a state. ``CatchmentMemory`` is such a state: an
LSTM run forward in time over the catchment's days, first the ``history_days`` before the
window (``pipeline.history``), then the window's, each day's input what the visible values
say of the catchment (:func:`memory_inputs`: the catchment means of the visible rain,
soil moisture and temperature and the share of the catchment they cover, evaporation and
riverflow where visible, the static attributes). Its state on each day of the window is
embedded into the decoder's queries of that day's series tokens, beside the mask token, the
position and the hints. It reads visible values only, as the encoder does.

With ``history_flow`` it also predicts riverflow on each day before the window, from its
state that day (the LSTM has read that day's weather and never a flow value): a training
target on every day of the history, as every day of the record is one of a rainfall-runoff
LSTM's, where the window's own flow is a target on a share of 90 days at most.

Shapes: B batch, H days before the window, T days of the window, F input features a day,
M the memory's width, Dd the decoder's width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.history import HISTORY_FEATURES
from pipeline.normalize import Normalizer
from training.catchment import attribute_features

# the LSTM's forget-gate bias at the start: a state that keeps most of itself from one day
# to the next, so that the gradient reaches the months before (as CudaLSTM's
# initial_forget_bias)
FORGET_BIAS = 3.0


def memory_inputs(
    weather: Tensor,
    series: list[tuple[Tensor, Tensor, Tensor]],
    attributes: Tensor,
    before: tuple[Tensor, Tensor] | None,
) -> Tensor:
    """The memory's inputs ``[B, H + T, F]``. A day of the window: its catchment weather
    ``weather [B, T, 2k]`` (per image modality the visible mean and the share of the
    catchment it covers), then per series of ``series`` (evaporation, riverflow: values and
    validity ``[B, T, 1]``, mask ``[B, T]``) its value and a flag where visible, 0 and 0
    where not. A day before the window (``before``: ``pipeline.history.HISTORY_FEATURES``,
    normalised, 0 where invalid, and their validity, ``[B, H, k + 1]`` each): the same
    columns by :func:`unseen_flow_days`. Every day ends with the static ``attributes [B, 2A]``."""
    columns = [weather]
    for x, v, mask in series:
        seen = (v[..., 0] > 0) & ~mask  # [B, T]
        columns += [torch.where(seen, x[..., 0], 0.0)[..., None], seen.float()[..., None]]
    days = torch.cat(columns, dim=-1)  # [B, T, 2k + 2 * len(series)]
    if before is not None:
        days = torch.cat([unseen_flow_days(*before, days.shape[-1]), days], dim=1)
    return with_attributes(days, attributes)


def window_unseen(
    weather: Tensor, series: list[tuple[Tensor, Tensor, Tensor]], attributes: Tensor, at: int
) -> Tensor | None:
    """The window's days as :func:`memory_inputs` makes them, with the series ``at``
    (riverflow) unseen: ``[B, T, F]``; None where none of its values is seen (the window's
    own inputs are that already)."""
    x, v, mask = series[at]
    if not bool(((v[..., 0] > 0) & ~mask).any()):
        return None
    unseen = [*series[:at], (x, v, torch.ones_like(mask)), *series[at + 1 :]]
    return memory_inputs(weather, unseen, attributes, None)


def flow_targets(
    flow: Tensor,
    days: int,
    target: Tensor,
    valid: Tensor,
    window: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The memory's riverflow ``flow [B, H + T]`` against the history's ``target`` and
    ``valid`` ``[B, H]``: ``pred``, ``target``, ``valid`` ``[B, H]``; with ``window`` (the
    window's riverflow values and validity ``[B, T, 1]``, for a flow that never read them)
    the window's days too, ``[B, H + T]``."""
    if window is None:
        return {"pred": flow[:, :-days], "target": target, "valid": valid}
    x, v = window
    target = torch.cat([target, x[..., 0]], dim=1)
    return {"pred": flow, "target": target, "valid": torch.cat([valid, v[..., 0] > 0], dim=1)}


def unseen_flow_days(x: Tensor, valid: Tensor, columns: int) -> Tensor:
    """Days whose riverflow the memory never reads (before a window, a rainfall-runoff
    sequence's): ``x [B, S, k + 1]`` (``HISTORY_FEATURES``, normalised, 0 where invalid)
    and ``valid`` as a window day's ``columns``: each feature's value and validity (the
    whole catchment's mean, its validity as the share or flag), riverflow's value and flag
    0: ``[B, S, columns]``."""
    known = torch.stack([x, valid.float()], dim=-1).flatten(2)  # [B, S, 2(k + 1)]
    unknown = known.new_zeros(*known.shape[:2], columns - known.shape[-1])
    return torch.cat([known, unknown], dim=-1)


def with_attributes(days: Tensor, attributes: Tensor) -> Tensor:
    """Each day ``[B, S, c]`` followed by the static ``attributes [B, 2A]``: ``[B, S, c + 2A]``."""
    return torch.cat([days, attributes[:, None, :].expand(-1, days.shape[1], -1)], dim=-1)


def runoff_sequences(
    batch: dict, normalizer: Normalizer, columns: int, attribute_width: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A batch's rainfall-runoff sequences (``pipeline.runoff``) as the memory reads them:
    its inputs ``[A, S, F]`` (days it reads no flow, then the static attributes, ``columns``
    and ``attribute_width`` wide), riverflow's targets (normalised, 0 where invalid) and
    validity ``[A, S]``, and each sequence's catchment ``[A]`` (for the loss's scale)."""
    x, valid, flow, known, static, has = (
        batch[f"runoff{k}"].to(device)
        for k in ("", "_valid", "_flow", "_flow_valid", "_static", "_static_valid")
    )  # fmt: skip
    x = normalizer.where_valid_features(HISTORY_FEATURES, x, valid)
    days = unseen_flow_days(x, valid, columns)
    attributes = attribute_features(static, has, attribute_width, x)  # [A, 2A]
    target = normalizer.where_valid("riverflow", flow, known)
    catchment = batch["runoff_catchment"].to(device)
    return with_attributes(days, attributes), target, known, catchment


class CatchmentMemory(nn.Module):
    """An LSTM over ``[B, H + T, F]`` daily inputs; per series group, its state on the last
    ``T`` days embedded to the decoder's width ``[B, T, Dd]``; with ``history_flow``, its
    riverflow (normalised) on every day ``[B, H + T]``. With ``detach`` the query terms
    read the state through a stop-gradient: the window's loss trains their embedding and
    never the LSTM, which learns from its riverflow terms alone."""

    def __init__(
        self,
        features: int,
        width: int,
        decoder_dim: int,
        groups: list[str],
        history_flow: bool = False,
        detach: bool = False,
    ) -> None:
        super().__init__()
        self.detach = detach
        self.lstm = nn.LSTM(features, width, batch_first=True)
        with torch.no_grad():  # gates are ordered input, forget, cell, output
            self.lstm.bias_hh_l0[width : 2 * width].fill_(FORGET_BIAS)
        self.embed = nn.ModuleDict({n: nn.Linear(width, decoder_dim) for n in groups})
        self.flow = nn.Linear(width, 1) if history_flow else None

    def forward(
        self, inputs: Tensor, days: int, blind: Tensor | None = None
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """``inputs [B, H + T, F]`` -> per series group ``[B, T, Dd]``, and riverflow on
        every day ``[B, H + T]`` (None without ``history_flow``). With ``blind [B, T, F]``,
        the window's days with riverflow's columns 0, the riverflow of the window's days
        is the state's after reading those instead, from the same state at the window's
        start: a simulation, as on the days the flow head is trained on, which never
        read a flow value (the history's, the rainfall-runoff sequences')."""
        if blind is None:
            state, _ = self.lstm(inputs)  # [B, H + T, M]
            window, read = state[:, -days:], state  # [B, T, M], [B, H + T, M]
        else:
            h = inputs.shape[1] - days
            before, carry = self.lstm(inputs[:, :h]) if h else (None, None)  # [B, H, M]
            window, _ = self.lstm(inputs[:, h:], carry)  # [B, T, M]
            read, _ = self.lstm(blind, carry)  # [B, T, M]
            read = read if before is None else torch.cat([before, read], dim=1)
        window = window.detach() if self.detach else window
        terms = {name: embed(window) for name, embed in self.embed.items()}
        return terms, None if self.flow is None else self.flow(read)[..., 0]

    def runoff(self, inputs: Tensor) -> Tensor:
        """Riverflow (normalised) ``[A, S]`` of rainfall-runoff sequences ``inputs [A, S, F]``
        (:func:`unseen_flow_days` with the attributes): the LSTM and head of ``forward``."""
        if self.flow is None:
            raise ValueError("rainfall-runoff sequences need the memory's flow head (history_flow)")
        state, _ = self.lstm(inputs)  # [A, S, M]
        return self.flow(state)[..., 0]
