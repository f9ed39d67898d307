"""MAE's decoder: mask tokens inserted at the masked positions, self-attention over all.

Every position of every group gets a query: one the encoder saw carries its encoder output,
the others the mask token (plus, with hints, the hint's embedding at masked positions); all
attend to each other and to the static token, and every position is predicted (the loss
keeps the masked ones). Shapes as in ``training.decoder``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.decoder import Decoded, Decoder, Restore


class MAEDecoder(Decoder):
    def decode(
        self,
        batch: dict,
        h: Tensor,
        restore: dict[str, Restore],
        hints: dict[str, tuple[Tensor, Tensor]],
        terms: dict[str, Tensor],
    ) -> Decoded:
        dd = h.shape[-1]
        queries, offset = [], 1
        for name, _ in self.groups:
            order, _, mask, keep, encoded, in_order = restore[name]
            b, length = mask.shape
            seq = self.mask_token.expand(b, length, dd)  # [B, L, Dd]
            if in_order:  # encoder_tokens "all": every position, in order
                seq = torch.where(mask[..., None], seq, h[:, offset : offset + length])
            else:  # positions the encoder saw carry its output (padding lands on others)
                enc = h[:, offset : offset + encoded]  # [B, S, Dd]
                placed = seq.new_zeros(b, length, dd).scatter(
                    1, order[:, :encoded, None].expand(-1, -1, dd), enc
                )
                seq = torch.where(keep[..., None], placed, seq)
            offset += encoded
            every = torch.arange(length, device=h.device).expand(b, -1)
            seq = seq + self.position(batch, name, every)
            if hints:  # on the mask tokens only; visible positions carry the encoder's
                query = self.hints.query(name, *hints[name])
                seq = seq + torch.where(mask[..., None], query, 0.0)
            if name in terms:  # the catchment memory's, on the mask tokens too
                seq = seq + torch.where(mask[..., None], terms[name], 0.0)
            queries.append(seq + self.group_embed[name])
        x = torch.cat([h[:, :1], *queries], dim=1)  # [B, 1 + sum L, Dd]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)[:, 1:]
        out, offset = {}, 0
        for (name, _), q in zip(self.groups, queries, strict=True):
            length = q.shape[1]
            tokens = x[:, offset : offset + length]  # [B, L, Dd]
            pred = self.head[name](tokens)  # [B, L, w]
            mix = None
            if hints:
                mix = self.hints.start(name, hints[name][0], tokens, hints[name][1])
            out[name] = (pred if mix is None else pred + mix, restore[name].mask, mix)
            offset += length
        return out
