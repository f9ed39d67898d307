"""CrossMAE's decoder: only masked positions are queried, and they attend to the encoder
output alone (not to each other), optionally a random share of them per training step
(``cross_fraction``). The cheaper decoder on a CPU. Shapes as in ``training.decoder``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.decoder import Decoded, Decoder, Restore


class CrossDecoder(Decoder):
    cross = True

    def __init__(self, *args, cross_fraction: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cross_fraction = cross_fraction

    def decode(
        self,
        batch: dict,
        h: Tensor,
        restore: dict[str, Restore],
        hints: dict[str, tuple[Tensor, Tensor]],
    ) -> Decoded:
        picked, gathered, starts = {}, [], {}
        for name, _ in self.groups:
            order, n_keep, _, _ = restore[name]
            masked = order[:, n_keep:]  # [B, n_masked]
            n = masked.shape[1]
            take = max(1, round(n * self.cross_fraction)) if self.training and n else n
            if take < n:
                choice = torch.rand(masked.shape, device=masked.device).argsort(dim=1)[:, :take]
                masked = torch.gather(masked, 1, choice)
            picked[name] = masked
            query = self.mask_token + self.position(batch, name, masked) + self.group_embed[name]
            if hints:  # query [B, picked, Dd]
                hint, extra = hints[name]  # [B, L, kinds, w], [B, L, c]
                at = masked[..., None, None].expand(-1, -1, *hint.shape[2:])
                near = extra.gather(1, masked[..., None].expand(-1, -1, extra.shape[-1]))
                term, starts[name] = self.hints.query(name, hint.gather(1, at), near)
                query = query + term
            gathered.append(query)
        x = torch.cat(gathered, dim=1)  # [B, sum picked, Dd]
        for block in self.blocks:
            x = block(x, context=h)
        x = self.norm(x)
        out, offset = {}, 0
        for name, _ in self.groups:
            idx = picked[name]
            b, length = restore[name][2].shape
            pred = self.head[name](x[:, offset : offset + idx.shape[1]])  # [B, picked, w]
            if hints:
                pred = pred + starts[name]
            offset += idx.shape[1]
            full = pred.new_zeros(b, length, pred.shape[-1]).scatter(
                1, idx[..., None].expand(-1, -1, pred.shape[-1]), pred
            )
            where = torch.zeros(b, length, dtype=torch.bool, device=pred.device)
            out[name] = (full, where.scatter(1, idx, True))
        return out
