"""The model's building blocks: sin-cos embeddings, a transformer block, token positions.

Shapes: B batch, L tokens, S context tokens, D width, H heads, N valid patches, T days.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sincos(positions: Tensor, dim: int) -> Tensor:
    """Sin-cos embedding of positions: ``[...] -> [..., dim]`` (dim even)."""
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(0, dim, 2, device=positions.device) / dim
    )  # [dim/2]
    angles = positions.float()[..., None] * freqs  # [..., dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, or (``cross``) attention to a context.

    Attention runs through ``torch.nn.functional.scaled_dot_product_attention``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(dim) if cross else None
        self.q, self.kv, self.proj = (
            nn.Linear(dim, dim),
            nn.Linear(dim, 2 * dim),
            nn.Linear(dim, dim),
        )
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self, x: Tensor, context: Tensor | None = None, keys: Tensor | None = None
    ) -> Tensor:
        """``x [B, L, D]``; ``context [B, S, D]`` for cross-attention (else ``x`` itself);
        ``keys [B, S]`` bool, the keys that take part (None: all); padding is left out."""
        b, n, d = x.shape  # [B, L, D]
        h = self.norm1(x)
        c = h if self.norm_ctx is None else self.norm_ctx(context)  # [B, S, D]
        q = self.q(h).view(b, n, self.heads, d // self.heads).transpose(1, 2)  # [B, H, L, D/H]
        k, v = self.kv(c).view(b, c.shape[1], 2, self.heads, d // self.heads).unbind(2)
        mask = None if keys is None else keys[:, None, None, :]  # [B, 1, 1, S]
        att = F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class TokenPositions(nn.Module):
    """Where and when a token is: 2-D sin-cos of its patch's row and column on the patch
    grid (``where [N, D]``, made once), sin-cos of the day within the window, and a
    learned projection of the cyclic day of year."""

    def __init__(self, dim: int, patch_row: Tensor, patch_col: Tensor) -> None:
        super().__init__()
        rows, cols = sincos(patch_row, dim // 2), sincos(patch_col, dim // 2)
        self.register_buffer("where", torch.cat([rows, cols], dim=-1), persistent=False)
        self.doy = nn.Linear(2, dim)

    def forward(self, batch: dict, idx: Tensor, image: bool) -> Tensor:
        """Positions ``[B, S, D]`` of a group's tokens ``idx [B, S]``, numbered day-major
        (``t * N + n`` for image patches, ``t`` for daily series)."""
        dim = self.where.shape[-1]
        doy = batch["doy"].float() if "doy" in batch else torch.zeros(batch["evap"].shape)
        doy = doy.to(idx.device)  # [B, T]
        t = doy.shape[1]
        day = sincos(torch.arange(t, device=doy.device), dim)  # [T, D]
        angle = 2 * math.pi * doy / 365.25
        when = day + self.doy(torch.stack([angle.sin(), angle.cos()], dim=-1))  # [B, T, D]
        if image:
            n = self.where.shape[0]
            day_of, patch_of = idx // n, idx % n  # [B, S] each
            return when.gather(1, day_of[..., None].expand(-1, -1, dim)) + self.where[patch_of]
        return when.gather(1, idx[..., None].expand(-1, -1, dim))
