"""MAE's decoder: mask tokens inserted at the masked positions, self-attention over all.

Every position of every group gets a query: a visible one carries its encoder output, a
masked one the mask token (plus, with hints, its hint's embedding); all attend to each
other and to the static token, and every position is predicted (the loss keeps the masked
ones). Shapes as in ``training.decoder``.
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
    ) -> Decoded:
        dd = h.shape[-1]
        queries, starts, offset = [], {}, 1
        for name, _ in self.groups:
            order, n_keep, mask, encoded = restore[name]
            b, length = mask.shape
            seq = self.mask_token.expand(b, length, dd).clone()  # [B, L, Dd]
            if encoded == length:  # encoder_tokens "all": every position, in order
                seq = torch.where(mask[..., None], seq, h[:, offset : offset + length])
            else:  # visible positions carry their encoder output
                enc = h[:, offset : offset + n_keep]  # [B, n_keep, Dd]
                seq.scatter_(1, order[:, :n_keep, None].expand(-1, -1, dd), enc)
            offset += encoded
            every = torch.arange(length, device=h.device).expand(b, -1)
            seq = seq + self.position(batch, name, every)
            if hints:  # on the mask tokens only; visible positions carry the encoder's
                query, starts[name] = self.hints.query(name, *hints[name])
                seq = seq + torch.where(mask[..., None], query, 0.0)
            queries.append(seq + self.group_embed[name])
        x = torch.cat([h[:, :1], *queries], dim=1)  # [B, 1 + sum L, Dd]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)[:, 1:]
        out, offset = {}, 0
        for (name, _), q in zip(self.groups, queries, strict=True):
            length = q.shape[1]
            pred = self.head[name](x[:, offset : offset + length])  # [B, L, w]
            out[name] = (pred + starts[name] if hints else pred, restore[name][2])
            offset += length
        return out
