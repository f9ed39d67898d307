"""What the visible image patches say about a sample's catchment, day by day.

Both use visible positions only: :func:`catchment_weather` weighs each visible pixel by
the sample's ``catchment_pixels`` ``[B, N, P]`` (its share of the catchment's area; the
encoder's series tokens, the decoder's hints and the catchment memory read it),
:func:`catchment_tokens` each visible patch's embedding by ``catchment_weight`` ``[B, N]``
(the catchment's rain onto the series' tokens). :func:`attribute_features` turns its
static attributes into the features the static token and the memory read;
:func:`history_values` reads the weather of the days before the window and
:func:`history_bins` summarises it.

Shapes: B batch, T days, N valid patches, P = p*p pixels, k a group's modalities, S a
group's encoded tokens, D the encoder's width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.catchment import catchment_means
from pipeline.history import HISTORY_FEATURES
from pipeline.normalize import Normalizer

Parts = tuple[Tensor, Tensor, Tensor]  # a group's values, validity [B, L, w], mask [B, L]


def attribute_features(
    static: Tensor | None, valid: Tensor | None, width: int, like: Tensor
) -> Tensor:
    """The catchment's static attributes ``static [B, A]`` (0 where not ``valid``) as the
    model reads them, ``[B, 2A]``: their signed log and validity; ``[B, width]`` zeros on
    ``like``'s device without any (``like`` any ``[B, ...]`` tensor)."""
    if static is not None and valid is not None and static.shape[-1]:
        s = static.float()
        return torch.cat([torch.sign(s) * torch.log1p(s.abs()), valid.float()], -1)
    return torch.zeros(like.shape[0], width, device=like.device)


def catchment_weather(
    image_parts: list[tuple[tuple[str, ...], Parts]], batch: dict, days: int, pixels: int
) -> Tensor:
    """Each day's catchment weather as the visible values say it: ``[B, T, 2 * k]`` for the
    ``k`` image modalities, per modality the mean of the catchment's visible, valid pixels,
    each weighted by its share of the catchment's area (``catchment_pixels``,
    ``pipeline.catchment.catchment_means``; normalised units) and the share of the
    catchment's area they cover (0 on a day none is visible). Zeros without
    ``catchment_pixels``. ``image_parts``: each image group's modalities and (values,
    validity ``[B, T*N, k*P]``, mask ``[B, T*N]``)."""
    features = []
    for mods, (x, v, mask) in image_parts:
        b, length, _ = x.shape
        if "catchment_pixels" not in batch:
            features.append(x.new_zeros(b, days, 2 * len(mods)))
            continue
        xs = x.view(b, days, n := length // days, len(mods), pixels).transpose(2, 3)
        seen = (v.view(b, days, n, len(mods), pixels) > 0) & ~mask.view(b, days, n, 1, 1)
        w = batch["catchment_pixels"].float()  # [B, N, P]
        mean, covered = catchment_means(xs, seen.transpose(2, 3), w)  # [B, T, k] each
        share = covered / w.sum((1, 2)).clamp_min(1e-6)[:, None, None]  # [B, T, k]
        features.append(torch.stack([mean, share], dim=-1).flatten(2))  # [B, T, 2k]
    return torch.cat(features, dim=-1)


def catchment_tokens(batch: dict, tokens: Tensor, seen: Tensor, pad: Tensor, days: int) -> Tensor:
    """Per day, the ``catchment_weight``-weighted mean of the visible image tokens
    ``tokens`` ``[B, S, D]`` at positions ``seen`` ``[B, S]`` (``t * N + n``; ``pad``
    marks padding): ``[B, T, D]``."""
    w = batch["catchment_weight"].float()  # [B, N]
    n = w.shape[1]
    day_of = seen // n  # [B, S]
    weight = torch.where(pad, 0.0, w.gather(1, seen % n))  # [B, S]
    share = weight.new_zeros(w.shape[0], days).scatter_add(1, day_of, weight)  # [B, T]
    total = tokens.new_zeros(w.shape[0], days, tokens.shape[-1]).scatter_add(
        1, day_of[..., None].expand_as(tokens), weight[..., None] * tokens
    )  # [B, T, D]
    return total / share.clamp_min(1e-6)[..., None]


def history_values(batch: dict, days: int, normalizer: Normalizer) -> tuple[Tensor, Tensor]:
    """The catchment's weather on the ``days`` before the window in normalised units, 0
    where invalid, and its validity: ``[B, H, F]`` each (``HISTORY_FEATURES``)."""
    if "history" not in batch:
        raise ValueError(
            f"the model takes {days} days of history, but the batch has none: build the "
            f"loader with history_days={days}"
        )
    x, valid = batch["history"], batch["history_valid"]  # [B, H, F] each
    if x.shape[1] != days:
        raise ValueError(f"the batch has {x.shape[1]} days of history, the model takes {days}")
    return normalizer.where_valid_features(HISTORY_FEATURES, x, valid), valid


def history_bins(x: Tensor, valid: Tensor, k: int) -> Tensor:
    """The weather before the window, ``x [B, H, F]`` (normalised, 0 where not ``valid``),
    summarised per bin of ``k`` days: each feature's mean over its valid days and the share
    of days valid, ``[B, 2 F H / k]`` (the static token's history MLP reads it)."""
    b, f = x.shape[0], x.shape[-1]
    count = valid.float().reshape(b, -1, k, f).sum(2)  # [B, H/k, F]
    mean = x.reshape(b, -1, k, f).sum(2) / count.clamp_min(1.0)
    return torch.cat([mean, count / k], dim=-1).flatten(1)
