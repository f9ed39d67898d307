"""CrossMAE's decoder: only masked positions are queried, and they attend to the encoder
output alone (not to each other), optionally a random share of them per training step
(``cross_fraction``). The encoder output gets the decoder's position and group embeddings
of its tokens, so that a query and the tokens of its day and patch share one basis. The
cheaper decoder on a CPU. Samples of a batch may have different numbers of masked
positions: the queries are padded to the largest, and padding is neither attended to nor
predicted. Shapes as in ``training.decoder``.
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

    def queries(self, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The masked positions to query ``[B, Q]`` (a random share of each sample's in
        training) and which of them are real ``[B, Q]`` (the rest is padding)."""
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # masked first
        counts = mask.sum(dim=1)  # [B]
        n = int(counts.max())
        masked, real = order[:, :n], torch.arange(n, device=mask.device)[None] < counts[:, None]
        if self.training and n and self.cross_fraction < 1:
            take = (counts * self.cross_fraction).round().long().clamp_min(1)  # [B]
            take = torch.where(counts > 0, take, 0)
            noise = torch.where(real, torch.rand(masked.shape, device=mask.device), 2.0)
            choice = noise.argsort(dim=1)[:, : int(take.max())]
            masked = torch.gather(masked, 1, choice)
            real = torch.arange(masked.shape[1], device=mask.device)[None] < take[:, None]
        return masked, real

    def decode(
        self,
        batch: dict,
        h: Tensor,
        restore: dict[str, Restore],
        hints: dict[str, tuple[Tensor, Tensor]],
        terms: dict[str, Tensor],
    ) -> Decoded:
        picked, gathered, fills, extras = {}, [], {}, {}
        keys = [torch.ones_like(h[:, :1, 0], dtype=torch.bool)]  # the static token
        places = [torch.zeros_like(h[:, :1])]  # the context's positions, in the queries' terms
        for name, _ in self.groups:
            order, counts, mask, _, encoded, in_order = restore[name]
            if in_order:  # encoder_tokens "all": every position encoded
                keys.append(torch.ones_like(mask))
                at = torch.arange(encoded, device=h.device).expand(mask.shape[0], -1)
            else:
                keys.append(torch.arange(encoded, device=h.device)[None] < counts[:, None])
                at = order[:, :encoded]
            places.append(self.position(batch, name, at) + self.group_embed[name])
            masked, real = self.queries(mask)  # [B, Q] each
            picked[name] = (masked, real)
            query = self.mask_token + self.position(batch, name, masked) + self.group_embed[name]
            if hints:  # query [B, Q, Dd]
                hint, extra = hints[name]  # [B, L, kinds, w], [B, L, c]
                at = masked[..., None, None].expand(-1, -1, *hint.shape[2:])
                fills[name] = hint.gather(1, at)  # [B, Q, kinds, w]
                extras[name] = extra.gather(1, masked[..., None].expand(-1, -1, extra.shape[-1]))
                query = query + self.hints.query(name, fills[name], extras[name])
            if name in terms:  # [B, L, Dd] -> the queried positions'
                at = masked[..., None].expand(-1, -1, query.shape[-1])
                query = query + terms[name].gather(1, at)
            gathered.append(query)
        context = torch.cat(keys, dim=1)  # [B, 1 + S]
        context = None if bool(context.all()) else context
        x = torch.cat(gathered, dim=1)  # [B, sum Q, Dd]
        # the encoder output carries where and when each token is in the encoder's terms;
        # adding the decoder's own lets a query find its day's and its patch's tokens
        h = h + torch.cat(places, dim=1)  # [B, 1 + S, Dd]
        for block in self.blocks:
            x = block(x, context=h, keys=context)
        x = self.norm(x)
        out, offset = {}, 0
        for name, _ in self.groups:
            idx, real = picked[name]
            b, length = restore[name].mask.shape
            tokens = x[:, offset : offset + idx.shape[1]]  # [B, Q, Dd]
            pred = self.head[name](tokens)  # [B, Q, w]
            mix = None
            if name in fills:
                mix = self.hints.start(name, fills[name], tokens, extras[name])
            if mix is not None:
                pred = pred + mix
            offset += idx.shape[1]
            at = idx[..., None].expand(-1, -1, pred.shape[-1])
            full = pred.new_zeros(b, length, pred.shape[-1]).scatter(1, at, pred * real[..., None])
            where = torch.zeros(b, length, dtype=torch.bool, device=pred.device)
            start = None
            if mix is not None:
                start = mix.new_zeros(full.shape).scatter(1, at, mix * real[..., None])
            out[name] = (full, where.scatter(1, idx, real), start)
        return out
