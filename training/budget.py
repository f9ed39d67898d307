"""The encoder's image budget: at most so many of a day's visible image tokens.

Under masks that leave more patches visible than the specification's (``block``,
``simulate``), the encoder would see up to all 94 patches a day; the budget keeps its cost
that of the specification's masks. Shapes: B batch, T days, N valid patches.
"""

from __future__ import annotations

import torch
from torch import Tensor


def within_budget(batch: dict, keep: Tensor, days: int, budget: int) -> Tensor:
    """At most ``budget`` of a day's visible image tokens ``keep [B, T*N]`` (bool): the
    catchment's patches first (``batch["catchment_weight"] [B, N]``), then the others in an
    order that turns with the day (so that every patch is seen over a window). Unchanged
    where few enough are visible."""
    b, length = keep.shape
    n = length // days
    by_day = keep.view(b, days, n)
    if int(by_day.sum(-1).max()) <= budget:
        return keep
    patch = torch.arange(n, device=keep.device)
    turn = (patch[None, :] + torch.arange(days, device=keep.device)[:, None]) % n
    score = (turn / n).expand(b, days, n)  # [B, T, N] in [0, 1)
    if "catchment_weight" in batch:
        w = batch["catchment_weight"].float()[:, None, :]  # [B, 1, N]
        score = score + 2 * (w > 0) + w
    score = torch.where(by_day, score, -1.0)
    top = score.topk(min(budget, n), dim=-1).indices  # [B, T, budget]
    chosen = torch.zeros_like(by_day).scatter(-1, top, True) & by_day
    return chosen.view(b, length)
