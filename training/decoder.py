"""What both decoders share: the queries' parts, the blocks, the heads and the hints.

The encoder's output ``[B, 1 + S, D]`` is projected to the decoder's width; a query for a
masked position is the learned ``mask_token`` plus its position (``TokenPositions``) and
its group's embedding, plus (with hints) the embedding of what the visible values say
about it (``training.hints``) and, for the series with a catchment memory, the memory's
state that day (``training.memory``). Each group's head turns decoder tokens into its values; with
hints, the prediction is the head's output added to the learned mix of the fills.
``MAEDecoder`` and ``CrossDecoder`` differ in which queries they build and what they
attend to (``decode``).

Shapes: B batch, L a group's tokens, w a token's values, D encoder width, Dd decoder width.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from training.hints import DecoderHints, Parts
from training.layers import Block, TokenPositions


class Restore(NamedTuple):
    """How one group's tokens were encoded, for the decoder to put them back in place."""

    order: Tensor  # [B, L] positions, the encoded ones first (day-major within each part)
    counts: Tensor  # [B] tokens encoded per sample
    mask: Tensor  # [B, L] bool, MAE-masked
    keep: Tensor  # [B, L] bool, encoded (visible, within the image budget)
    width: int  # encoder slots of the group per sample (the largest count; padding after)
    in_order: bool  # every position encoded in order (the encoder_tokens="all" ablation)


# per group: pred [B, L, w], predicted [B, L] bool, mix [B, L, w] (with hints, else None)
Decoded = dict[str, tuple[Tensor, Tensor, Tensor | None]]


class Decoder(nn.Module):
    """The shared parts. Subclasses implement ``decode(batch, h [B, 1 + S, Dd], restore,
    hints, terms) -> Decoded``; ``forward`` projects ``h`` and computes the hints first."""

    cross = False  # blocks attend to the encoder output (CrossMAE) instead of themselves

    def __init__(
        self,
        groups: list[tuple[str, tuple[str, ...]]],
        image_groups: set[str],
        width: dict[str, int],
        positions: TokenPositions,
        dim: int,
        decoder_dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        hints: DecoderHints | None,
    ) -> None:
        super().__init__()
        self.groups, self.image_groups = groups, image_groups
        self.positions = positions
        self.proj = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(decoder_dim))
        self.group_embed = nn.ParameterDict(
            {n: nn.Parameter(torch.zeros(decoder_dim)) for n in width}
        )
        self.head = nn.ModuleDict({n: nn.Linear(decoder_dim, w) for n, w in width.items()})
        self.blocks = nn.ModuleList(
            Block(decoder_dim, heads, mlp_ratio, self.cross) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(decoder_dim)
        self.hints = hints
        nn.init.normal_(self.mask_token, std=0.02)
        for p in self.group_embed.values():
            nn.init.normal_(p, std=0.02)

    def forward(
        self,
        batch: dict,
        h: Tensor,
        restore: dict[str, Restore],
        parts: dict[str, Parts],
        weather: Tensor,
        terms: dict[str, Tensor],
        flow: Tensor | None = None,
    ) -> Decoded:
        """Predictions of every group from the encoder's output ``h [B, 1 + S, D]``, the
        day's catchment weather ``[B, T, 2k]``, extra query terms of some groups
        ``[B, L, Dd]`` (the catchment memory's, ``training.memory``) and the memory's
        riverflow ``[B, T]`` for the hints (``flow_fill``)."""
        hints = {} if self.hints is None else self.hints(batch, parts, weather, flow)
        return self.decode(batch, self.proj(h), restore, hints, terms)

    def position(self, batch: dict, name: str, idx: Tensor) -> Tensor:
        """Decoder positions ``[B, S, Dd]`` of a group's tokens ``idx [B, S]``."""
        return self.positions(batch, idx, name in self.image_groups)
