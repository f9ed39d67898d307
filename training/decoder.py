"""What both decoders share: the queries' parts, the blocks, the heads and the hints.

The encoder's output ``[B, 1 + S, D]`` is projected to the decoder's width; a query for a
masked position is the learned ``mask_token`` plus its position (``TokenPositions``) and
its group's embedding, plus (with hints) the embedding of what the visible values say
about it (``training.hints``). Each group's head turns decoder tokens into its values; with
hints, the prediction is the head's output added to the learned mix of the fills.
``MAEDecoder`` and ``CrossDecoder`` differ in which queries they build and what they
attend to (``decode``).

Shapes: B batch, L a group's tokens, w a token's values, D encoder width, Dd decoder width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.hints import DecoderHints, Parts
from training.layers import Block, TokenPositions

# per group: (order [B, L] visible first, visible count, mask [B, L], tokens encoded)
Restore = tuple[Tensor, int, Tensor, int]
Decoded = dict[str, tuple[Tensor, Tensor]]  # per group: pred [B, L, w], predicted [B, L]


class Decoder(nn.Module):
    """The shared parts. Subclasses implement ``decode(batch, h [B, 1 + S, Dd], restore,
    hints) -> Decoded``; ``forward`` projects ``h`` and computes the hints first."""

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
        self, batch: dict, h: Tensor, restore: dict[str, Restore], parts: dict[str, Parts]
    ) -> Decoded:
        """Predictions of every group from the encoder's output ``h [B, 1 + S, D]``."""
        days = batch["evap"].shape[1]
        hints = {} if self.hints is None else self.hints(batch, parts, days)
        return self.decode(batch, self.proj(h), restore, hints)

    def position(self, batch: dict, name: str, idx: Tensor) -> Tensor:
        """Decoder positions ``[B, S, Dd]`` of a group's tokens ``idx [B, S]``."""
        return self.positions(batch, idx, name in self.image_groups)
