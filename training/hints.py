"""The decoder's hints: what the visible values alone say about each masked position.

A mask query also carries, through a linear embedding, the classical fills of its position,
computed by the very functions the baselines are scored with (``training.baselines``):
linear interpolation in time between the visible days and, for images, the mean of the
visible neighbouring patches that day. A series' query also carries the catchment's rain
on its day and the ``RAIN_LAGS`` days before, as the visible values estimate it (rain
reaches the outlet mostly a day or two later), and the day's catchment weather
(``training.catchment.catchment_weather``). The prediction starts from a learned mix
of the fills (``mix``), so the decoder learns a correction to classical gap-filling.
With ``nearness`` a series' query, and the gate, also carry how near its nearest visible
days are (``visible_nearness``): interpolation is good a day from a visible value and poor a
month from one, where the memory's riverflow (``flow_fill``) is the better fill.
Hints read visible values only, like the encoder.

Shapes: B batch, T days, N valid patches, P = p*p pixels, L a group's tokens (T*N or T),
w a token's values (k*P or k for k fused modalities), Dd the decoder's width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.schema import IMAGE_MODALITIES
from training.baselines import interpolate_time, known_days, neighbour_mean, patch_neighbours
from training.catchment import Parts

RAIN_LAGS = 3  # a series' query: the catchment's rain on the day and the 3 days before
FLOW = "riverflow"  # riverflow's group
NEAR_DAYS = 7.0  # the nearness of a visible day d days away: exp(-d / NEAR_DAYS)


def visible_nearness(seen: Tensor) -> Tensor:
    """How near each day's nearest visible days are, before and after it: ``[B, T, 2k]``
    from ``seen [B, T, k]`` (bool), ``exp(-days / NEAR_DAYS)``: 1 on a visible day, 0 where
    none is visible on that side; columns ``[before_1, after_1, before_2, ...]``."""
    days, prev_day, next_day = known_days(seen)
    t = seen.shape[1]
    back = torch.where(prev_day >= 0, days - prev_day, -1)  # -1: none before
    ahead = torch.where(next_day < t, next_day - days, -1)
    gaps = torch.stack([back, ahead], dim=-1).to(torch.float32)  # [B, T, k, 2]
    near = torch.where(gaps >= 0, torch.exp(-gaps / NEAR_DAYS), 0.0)
    return near.flatten(2)


class DecoderHints(nn.Module):
    """Hints for every token group, their query embeddings and the learned mix."""

    def __init__(
        self,
        groups: list[tuple[str, tuple[str, ...]]],
        image_groups: set[str],
        width: dict[str, int],
        valid_patch_indices: Tensor,
        patch_cols: int,
        patch_pixels: int,
        decoder_dim: int,
        weather: int,
        gated: bool = False,
        flow_fill: bool = False,
        nearness: bool = False,
    ) -> None:
        super().__init__()
        self.groups, self.image_groups = groups, image_groups
        self.patch_pixels = patch_pixels
        # kinds of hint: interpolation in time, and for images neighbours; with flow_fill,
        # riverflow's second is the catchment memory's riverflow (training.memory)
        kinds = {n: 2 if n in image_groups else 1 for n in width}
        self.flow_fill = flow_fill
        if flow_fill:
            kinds[FLOW] = 2
        self.register_buffer(
            "adjacency", patch_neighbours(valid_patch_indices, patch_cols), persistent=False
        )
        rain = {n: 0 if n in image_groups else RAIN_LAGS + 1 + weather for n in width}
        # a series' nearness columns (visible_nearness), the last of its extra features
        self.near = {
            n: 2 * w if nearness and n not in image_groups else 0 for n, w in width.items()
        }
        rain = {n: c + self.near[n] for n, c in rain.items()}
        self.embed = nn.ModuleDict(
            {n: nn.Linear(kinds[n] * w + rain[n], decoder_dim) for n, w in width.items()}
        )
        # [kinds, modalities]: starts as the kinds' plain average
        self.mix = nn.ParameterDict(
            {
                n: nn.Parameter(torch.full((kinds[n], len(mods)), 1.0 / kinds[n]))
                for n, mods in groups
            }
        )
        self.gate = None
        if gated:  # decoder token (and nearness) -> a change of each kind's weight per
            # modality, zero at first
            self.gate = nn.ModuleDict(
                {
                    n: nn.Linear(decoder_dim + self.near[n], kinds[n] * len(mods))
                    for n, mods in groups
                }
            )
            for layer in self.gate.values():
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(
        self, batch: dict, parts: dict[str, Parts], weather: Tensor, flow: Tensor | None = None
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Per group: the hint ``[B, L, kinds, w]`` and extra features ``[B, L, c]`` (the
        series: the catchment's lagged rain and the day's catchment weather ``weather``
        ``[B, T, 2k]``, ``training.catchment.catchment_weather``, then with ``nearness``
        the group's ``visible_nearness`` ``[B, T, 2w]``; images: nothing, ``c = 0``).
        With ``flow_fill``, ``flow [B, T]`` is the memory's riverflow (normalised), the last
        kind of riverflow's hint."""
        days = weather.shape[1]
        hints = {name: self.fills(mods, *parts[name], days=days) for name, mods in self.groups}
        if self.flow_fill:
            if flow is None:
                raise ValueError("flow_fill: the decoder's hints need the memory's riverflow")
            hints[FLOW] = torch.cat([hints[FLOW], flow[:, :, None, None]], dim=2)  # [B, T, 2, 1]
        first = self.groups[0][0]  # the group led by precipitation (images come first)
        rain = self.rain_history(batch, hints[first], *parts[first][1:], days=days)
        series = torch.cat([rain, weather], dim=-1)  # [B, T, RAIN_LAGS + 1 + 2k]
        out = {}
        for name, hint in hints.items():  # series carry rain and weather, images nothing more
            if name in self.image_groups:
                out[name] = (hint, hint.new_zeros(*hint.shape[:2], 0))
            elif self.near[name]:
                _, v, mask = parts[name]
                near = visible_nearness((v > 0) & ~mask[..., None])  # [B, T, 2w]
                out[name] = (hint, torch.cat([series, near.to(series.dtype)], dim=-1))
            else:
                out[name] = (hint, series)
        return out

    def fills(self, mods: tuple[str, ...], x: Tensor, v: Tensor, mask: Tensor, days: int) -> Tensor:
        """What the visible values of a group say about each of its positions:
        ``[B, L, kinds, w]`` in normalised units. Kind 0 is linear interpolation in time
        between the visible days; for images kind 1 is the visible neighbouring patches'
        mean that day (interpolation where none is visible)."""
        b, length, w = x.shape
        seen = (v > 0) & ~mask[..., None]  # [B, L, w]: what the encoder could see
        if mods[0] not in IMAGE_MODALITIES:
            return interpolate_time(x, seen)[:, :, None]  # [B, T, 1, k]
        n, k = length // days, len(mods)
        xs = x.view(b, days, n, k, w // k)  # [B, T, N, k, P]
        ss = seen.view(b, days, n, k, w // k)
        hidden = mask.view(b, days, n)  # [B, T, N]
        if not bool(hidden.any()):  # nothing masked (simulate): each fill is the value itself
            return x.view(b, length, 1, w).expand(b, length, 2, w)
        interp, near = [], []
        for j in range(k):
            values, known = xs[..., j, :], ss[..., j, :]  # [B, T, N, P] each
            # in time, a patch's visible days (searched per patch, not per pixel; a pixel
            # missing on such a day lends its 0, the training mean)
            filled = interpolate_time(values, ~hidden[..., None])
            interp.append(filled)
            near.append(neighbour_mean(values, known, hidden, self.adjacency, filled))
        kinds = torch.stack([torch.cat(interp, -1), torch.cat(near, -1)], dim=3)  # [B,T,N,2,w]
        return kinds.view(b, length, 2, w)

    def rain_history(self, batch: dict, hint: Tensor, v: Tensor, mask: Tensor, days: int) -> Tensor:
        """The catchment's rain, as the visible values estimate it, on each day and the
        ``RAIN_LAGS`` days before: ``[B, T, RAIN_LAGS + 1]`` (normalised precipitation, 0
        before the window). ``hint`` ``[B, T*N, kinds, w]`` is the precipitation group's (its
        first ``P`` columns, kind 1: the visible value where the patch is visible, the
        neighbours' estimate where it is masked); ``v`` ``[B, T*N, w]``, ``mask`` ``[B, T*N]``."""
        if "catchment_weight" not in batch:
            return hint.new_zeros(hint.shape[0], days, RAIN_LAGS + 1)
        p = self.patch_pixels
        seen = (v[..., :p] > 0) | mask[..., None]  # [B, T*N, P]: a masked patch's estimate
        patch = (hint[:, :, 1, :p] * seen).sum(-1) / seen.sum(-1).clamp_min(1)  # [B, T*N]
        w = batch["catchment_weight"].float()  # [B, N]
        daily = (patch.view(w.shape[0], days, -1) * w[:, None]).sum(-1)  # [B, T]
        daily = daily / w.sum(-1, keepdim=True).clamp_min(1e-6)
        return torch.stack([F.pad(daily, (k, 0))[:, :days] for k in range(RAIN_LAGS + 1)], -1)

    def query(self, name: str, hint: Tensor, extra: Tensor) -> Tensor:
        """A hint ``[B, S, kinds, w]`` with its extra features ``[B, S, c]`` as a decoder
        query term ``[B, S, Dd]``."""
        return self.embed[name](torch.cat([hint.flatten(2), extra], dim=-1))

    def start(self, name: str, hint: Tensor, x: Tensor, extra: Tensor) -> Tensor:
        """The output's starting point ``[B, S, w]``: the learned mix of a hint's kinds
        ``[B, S, kinds, w]``, changed per position by the gate on the decoder's output
        tokens ``x`` ``[B, S, Dd]`` (and with ``nearness`` the nearness columns of the
        extra features ``[B, S, c]``) when ``gated``."""
        mix = self.mix[name]  # [kinds, modalities]
        if self.gate is not None:
            c = self.near[name]
            read = torch.cat([x, extra[..., -c:]], dim=-1) if c else x  # [B, S, Dd + c]
            mix = mix + self.gate[name](read).view(*x.shape[:2], *mix.shape)  # [B, S, kinds, k]
        return (hint * mix.repeat_interleave(hint.shape[-1] // mix.shape[-1], dim=-1)).sum(-2)
