"""The multi-modal masked autoencoder (MAE) of ``MASK_STRATEGY.md``, in one file.

Token groups. Under ``unified`` masks (the seed's default) one token per (day, valid patch)
fuses the three image modalities' ``p*p`` values each, and one token per day fuses
evaporation and riverflow; under ``independent`` masks every modality is its own group,
one token per (modality, day, patch) or (modality, day). A static-attribute token tells
the encoder which catchment it is; a catchment-rain feature, the ``catchment_weight``-
weighted mean of the day's *visible* image tokens, is added to each day's vector token, so
the model knows which patches' rain falls on the catchment.

Where and when: 2-D sin-cos embeddings of the patch's row and column on the (non-square)
patch grid, sin-cos of the day within the window, a learned projection of the cyclic day of
year, and a learned embedding per group.

The encoder sees only the visible tokens: masked ones are removed (gathered away), never
zeroed, and really-missing values enter as zeros with a validity flag, never as values.
Because the collate's counts are exact, every sample of a batch keeps the same number of
visible tokens, so no padding is needed. The decoder is MAE's (mask tokens inserted, self-
attention over all tokens) or CrossMAE's (mask queries attend to the encoder output only,
optionally a random subset of them per step). Attention runs through
``torch.nn.functional.scaled_dot_product_attention``.

Hints (``hints = True``): a mask query also carries what the visible values alone say about
its position, computed by the very functions the baselines are scored with
(``training.baselines``): linear interpolation in time between the visible days and, for
images, the mean of the visible neighbouring patches that day. A vector query also
carries the catchment's rain on its day and the ``RAIN_LAGS`` days before, as the visible
values estimate it (rain reaches the outlet mostly a day or two later). Hints enter the
query through a linear embedding and the output through a learned per-modality mix, so
the decoder learns a correction to classical gap-filling instead of re-deriving a
window's level from nothing. Hints read visible values only, like the encoder.

Shapes: B batch, T days, N valid patches, P = p*p pixels, D width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.collate import IMAGE_MODALITIES, VECTOR_MODALITIES
from pipeline.normalize import Normalizer
from training.baselines import interpolate_time, neighbour_mean, patch_neighbours

DECODERS = ("mae", "cross")
RAIN_LAGS = 3  # vector hints: the catchment's rain on the day and the 3 days before
PRESETS = ("tiny", "small", "full")


@dataclass
class ModelConfig:
    dim: int = 256
    depth: int = 6
    heads: int = 8
    decoder: str = field(default="mae", metadata={"choices": DECODERS})
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mlp_ratio: float = 4.0
    cross_fraction: float = 1.0  # CrossMAE: share of masked tokens reconstructed per step
    # "visible": MAE, masked tokens removed from the encoder; "all": the ablation MAE is
    # measured against (SimMIM-style), every token encoded with a learned mask token in place
    encoder_tokens: str = field(default="visible", metadata={"choices": ("visible", "all")})
    # mask queries carry the visible values' interpolation in time and neighbours' mean
    hints: bool = True

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        presets = {
            # CPU tests
            "tiny": cls(dim=32, depth=2, heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2),
            # a CPU run of half an hour: the learning run of record
            "small": cls(
                dim=64, depth=3, heads=4, decoder_dim=64, decoder_depth=1, decoder_heads=4
            ),
            # a GPU
            "full": cls(),
        }
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; known: {sorted(presets)}")
        return presets[name]


@dataclass(frozen=True)
class Geometry:
    """What the model must know of the data: patch grid, valid patches, attributes."""

    patch_rows: int
    patch_cols: int
    patch_pixels: int
    valid_patch_indices: tuple[int, ...]
    static_attributes: int
    mask_mode: str = "unified"

    def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Token groups: (name, modalities fused into one token)."""
        if self.mask_mode == "unified":
            return [("image", IMAGE_MODALITIES), ("vector", VECTOR_MODALITIES)]
        return [(m, (m,)) for m in IMAGE_MODALITIES + VECTOR_MODALITIES]


def normalised(normalizer: Normalizer, name: str, values: Tensor, valid: Tensor) -> Tensor:
    """``values`` in normalised units where ``valid``, 0 (the training mean) elsewhere."""
    raw = values.float()
    if normalizer.stats[name].transform == "log1p":
        raw = raw.clamp_min(0.0)  # log1p needs x > -1; invalid entries are zeroed below
    x = normalizer.normalize(name, raw)
    return torch.where(valid, x, torch.zeros_like(x))


def sincos(positions: Tensor, dim: int) -> Tensor:
    """Sin-cos embedding of positions: ``[...] -> [..., dim]`` (dim even)."""
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(0, dim, 2, device=positions.device) / dim
    )  # [dim/2]
    angles = positions.float()[..., None] * freqs  # [..., dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, or (``cross``) attention to a context."""

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

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        b, n, d = x.shape  # [B, L, D]
        h = self.norm1(x)
        c = h if self.norm_ctx is None else self.norm_ctx(context)  # [B, S, D]
        q = self.q(h).view(b, n, self.heads, d // self.heads).transpose(1, 2)  # [B, H, L, D/H]
        k, v = self.kv(c).view(b, c.shape[1], 2, self.heads, d // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class HydroMAE(nn.Module):
    def __init__(self, cfg: ModelConfig, geometry: Geometry, normalizer: Normalizer) -> None:
        super().__init__()
        if cfg.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {cfg.decoder!r}")
        if cfg.encoder_tokens not in ("visible", "all"):
            raise ValueError(f"encoder_tokens must be visible or all, got {cfg.encoder_tokens!r}")
        if cfg.dim % 4 or cfg.decoder_dim % 4:
            raise ValueError("model widths must be multiples of 4 (2-D sin-cos embeddings)")
        self.cfg, self.geometry, self.normalizer = cfg, geometry, normalizer
        self.groups = geometry.groups()
        d, dd, pp = cfg.dim, cfg.decoder_dim, geometry.patch_pixels
        valid = torch.tensor(geometry.valid_patch_indices)
        self.register_buffer("patch_row", valid // geometry.patch_cols, persistent=False)
        self.register_buffer("patch_col", valid % geometry.patch_cols, persistent=False)
        # where each valid patch is: 2-D sin-cos on the patch grid, [N, dim], made once
        for key, width_ in (("where", cfg.dim), ("decoder_where", cfg.decoder_dim)):
            rows, cols = sincos(self.patch_row, width_ // 2), sincos(self.patch_col, width_ // 2)
            self.register_buffer(key, torch.cat([rows, cols], dim=-1), persistent=False)
        # the groups whose tokens are image patches (the rest are daily series)
        self.image_groups = {n for n, mods in self.groups if mods[0] in IMAGE_MODALITIES}
        width = {n: len(mods) * (pp if n in self.image_groups else 1) for n, mods in self.groups}
        self.width = width
        # values and validity flags in, one token out; one prediction head out per group
        self.embed = nn.ModuleDict({n: nn.Linear(2 * w, d) for n, w in width.items()})
        self.head = nn.ModuleDict({n: nn.Linear(dd, w) for n, w in width.items()})
        self.group_embed = nn.ParameterDict({n: nn.Parameter(torch.zeros(d)) for n in width})
        self.decoder_group_embed = nn.ParameterDict(
            {n: nn.Parameter(torch.zeros(dd)) for n in width}
        )
        self.doy = nn.Linear(2, d)
        self.decoder_doy = nn.Linear(2, dd)
        self.static = nn.Linear(2 * max(geometry.static_attributes, 1), d)
        self.rain = nn.Linear(d, d)  # catchment-rain feature onto the vector tokens
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)
        self.to_decoder = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(dd))
        if cfg.encoder_tokens == "all":
            self.encoder_mask_token = nn.Parameter(torch.zeros(d))
            nn.init.normal_(self.encoder_mask_token, std=0.02)
        cross = cfg.decoder == "cross"
        self.decoder_blocks = nn.ModuleList(
            Block(dd, cfg.decoder_heads, cfg.mlp_ratio, cross) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd)
        if cfg.hints:  # kinds of hint: interpolation in time, and for images neighbours
            kinds = {n: 2 if n in self.image_groups else 1 for n in width}
            self.register_buffer(
                "adjacency", patch_neighbours(valid, geometry.patch_cols), persistent=False
            )
            rain = {n: 0 if n in self.image_groups else RAIN_LAGS + 1 for n in width}
            self.hint_embed = nn.ModuleDict(
                {n: nn.Linear(kinds[n] * w + rain[n], dd) for n, w in width.items()}
            )
            # [kinds, modalities]: starts as the kinds' plain average
            self.hint_mix = nn.ParameterDict(
                {
                    n: nn.Parameter(torch.full((kinds[n], len(mods)), 1.0 / kinds[n]))
                    for n, mods in self.groups
                }
            )
        nn.init.normal_(self.mask_token, std=0.02)
        for p in (*self.group_embed.values(), *self.decoder_group_embed.values()):
            nn.init.normal_(p, std=0.02)

    # ------------------------------------------------------------ inputs
    def _values(self, batch: dict, name: str) -> tuple[Tensor, Tensor]:
        """Normalised values with invalid ones zeroed, and validity as 0/1 floats."""
        valid = batch[f"{name}_valid"]
        return normalised(self.normalizer, name, batch[name], valid), valid.float()

    def _group_tokens(
        self, batch: dict, name: str, mods: tuple[str, ...]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Values ``[B, L, w]``, validity ``[B, L, w]`` and mask ``[B, L]`` of one group."""
        xs, vs = zip(*(self._values(batch, m) for m in mods), strict=True)
        if mods[0] in IMAGE_MODALITIES:  # [B, T, N, P] each -> [B, T*N, k*P]
            b, t, n, _ = xs[0].shape
            x = torch.cat(xs, dim=-1).reshape(b, t * n, -1)
            v = torch.cat(vs, dim=-1).reshape(b, t * n, -1)
            idx = batch["valid_patch_indices"].to(x.device)
            mask = batch[f"{mods[0]}_mask"][..., idx].reshape(b, t * n)  # [B, T*N]
        else:  # [B, T] each -> [B, T, k]
            x, v = torch.stack(xs, dim=-1), torch.stack(vs, dim=-1)
            mask = batch[f"{mods[0]}_mask"]
        return x, v, mask.to(x.device)

    def _position(
        self, batch: dict, name: str, where: Tensor, doy_layer: nn.Linear, idx: Tensor
    ) -> Tensor:
        """Where and when the tokens ``idx`` ``[B, S]`` of a group are: ``[B, S, dim]``.

        ``idx`` numbers a group's tokens day-major (``t * N + n`` for images, ``t`` for
        vectors); ``where`` ``[N, dim]`` is the patch embedding."""
        dim = where.shape[-1]
        doy = batch["doy"].float() if "doy" in batch else torch.zeros(batch["evap"].shape)
        doy = doy.to(idx.device)  # [B, T]
        t = doy.shape[1]
        day = sincos(torch.arange(t, device=doy.device), dim)  # [T, dim]
        angle = 2 * math.pi * doy / 365.25
        when = day + doy_layer(torch.stack([angle.sin(), angle.cos()], dim=-1))  # [B, T, dim]
        if name in self.image_groups:
            n = where.shape[0]
            day_of, patch_of = idx // n, idx % n  # [B, S] each
            return when.gather(1, day_of[..., None].expand(-1, -1, dim)) + where[patch_of]
        return when.gather(1, idx[..., None].expand(-1, -1, dim))

    # ------------------------------------------------------------ forward
    def encode(self, batch: dict) -> tuple[Tensor, dict, dict]:
        """Encode the visible tokens: features ``[B, 1 + S_visible, D]`` (static token first;
        ``[B, 1 + S_all, D]`` under ``encoder_tokens = "all"``), how to restore each group's
        order, and each group's (values, validity, mask). Only the tokens the encoder sees
        are embedded: masked values are gathered away before anything touches them."""
        dev = self.mask_token.device
        batch = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in batch.items()}
        encoded, restore, parts = [], {}, {}
        image: tuple[Tensor, Tensor] | None = None
        everything = self.cfg.encoder_tokens == "all"
        for name, mods in self.groups:
            x, v, mask = self._group_tokens(batch, name, mods)  # [B, L, w] x2, [B, L]
            b, length = mask.shape
            n_keep = int((~mask[0]).sum())
            if not bool(((~mask).sum(dim=1) == n_keep).all()):
                raise ValueError(f"{name}: samples of a batch must keep the same number of tokens")
            order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible first
            seen = order[:, :n_keep]  # [B, n_keep], day-major
            idx = torch.arange(length, device=dev).expand(b, -1) if everything else seen
            values = torch.cat([x, v], dim=-1)  # [B, L, 2w]
            values = torch.gather(values, 1, idx[..., None].expand(-1, -1, values.shape[-1]))
            tokens = self.embed[name](values)  # [B, S, D]
            tokens = tokens + self._position(batch, name, self.where, self.doy, idx)
            tokens = tokens + self.group_embed[name]
            if everything:  # the ablation: masked tokens replaced in place, [B, L, D]
                tokens = torch.where(mask[..., None], self.encoder_mask_token, tokens)
            visible = (
                tokens
                if not everything
                else torch.gather(tokens, 1, seen[..., None].expand(-1, -1, tokens.shape[-1]))
            )  # [B, n_keep, D]
            if mods[0] == IMAGE_MODALITIES[0]:
                image = (visible, seen)  # precipitation's tokens carry the catchment's rain
            elif mods[0] in VECTOR_MODALITIES and image is not None and "catchment_weight" in batch:
                rain = self._catchment_rain(batch, *image, days=mask.shape[1])  # [B, T, D]
                tokens = tokens + self.rain(rain.gather(1, idx[..., None].expand_as(tokens)))
            encoded.append(tokens)
            restore[name] = (order, n_keep, mask, tokens.shape[1])
            parts[name] = (x, v, mask)
        h = torch.cat([self._static(batch), *encoded], dim=1)  # [B, 1 + S, D]
        for block in self.blocks:
            h = block(h)
        return self.norm(h), restore, parts

    def forward(self, batch: dict) -> dict[str, dict[str, Tensor]]:
        """Per group: ``pred`` ``[B, L, w]`` (normalised units), ``target`` and ``valid``
        ``[B, L, w]``, ``mask`` ``[B, L]`` (MAE-masked) and ``predicted`` ``[B, L]``."""
        h, restore, parts = self.encode(batch)
        days = batch["evap"].shape[1]
        hints = {}  # per group: (hint [B, L, kinds, w], extra features [B, L, c])
        if self.cfg.hints:
            for name, mods in self.groups:
                hints[name] = self._hints(mods, *parts[name], days=days)
            first = self.groups[0][0]  # the group led by precipitation (images come first)
            rain = self._rain_history(batch, hints[first], *parts[first][1:], days=days)
            for name, hint in hints.items():  # series carry the rain, images nothing more
                none = hint.new_zeros(*hint.shape[:2], 0)
                hints[name] = (hint, none if name in self.image_groups else rain)
        decoded = self._decode(batch, self.to_decoder(h), restore, hints)
        return {
            name: {
                "pred": decoded[name][0],
                "predicted": decoded[name][1],
                "target": parts[name][0],
                "valid": parts[name][1] > 0,
                "mask": parts[name][2],
            }
            for name, _ in self.groups
        }

    def _catchment_rain(self, batch: dict, tokens: Tensor, seen: Tensor, days: int) -> Tensor:
        """Per day, the ``catchment_weight``-weighted mean of the visible image tokens
        ``tokens`` ``[B, S, D]`` at positions ``seen`` ``[B, S]`` (``t * N + n``): ``[B, T, D]``."""
        w = batch["catchment_weight"].float()  # [B, N]
        n = w.shape[1]
        day_of = seen // n  # [B, S]
        weight = w.gather(1, seen % n)  # [B, S]
        share = weight.new_zeros(w.shape[0], days).scatter_add(1, day_of, weight)  # [B, T]
        total = tokens.new_zeros(w.shape[0], days, tokens.shape[-1]).scatter_add(
            1, day_of[..., None].expand_as(tokens), weight[..., None] * tokens
        )  # [B, T, D]
        return total / share.clamp_min(1e-6)[..., None]

    def _hints(
        self, mods: tuple[str, ...], x: Tensor, v: Tensor, mask: Tensor, days: int
    ) -> Tensor:
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

    def _rain_history(
        self, batch: dict, hint: Tensor, v: Tensor, mask: Tensor, days: int
    ) -> Tensor:
        """The catchment's rain, as the visible values estimate it, on each day and the
        ``RAIN_LAGS`` days before: ``[B, T, RAIN_LAGS + 1]`` (normalised precipitation, 0
        before the window). ``hint`` ``[B, T*N, kinds, w]`` is the precipitation group's (its
        first ``P`` columns, kind 1: the visible value where the patch is visible, the
        neighbours' estimate where it is masked); ``v`` ``[B, T*N, w]``, ``mask`` ``[B, T*N]``."""
        if "catchment_weight" not in batch:
            return hint.new_zeros(hint.shape[0], days, RAIN_LAGS + 1)
        p = self.geometry.patch_pixels
        seen = (v[..., :p] > 0) | mask[..., None]  # [B, T*N, P]: a masked patch's estimate
        patch = (hint[:, :, 1, :p] * seen).sum(-1) / seen.sum(-1).clamp_min(1)  # [B, T*N]
        w = batch["catchment_weight"].float()  # [B, N]
        daily = (patch.view(w.shape[0], days, -1) * w[:, None]).sum(-1)  # [B, T]
        daily = daily / w.sum(-1, keepdim=True).clamp_min(1e-6)
        return torch.stack([F.pad(daily, (k, 0))[:, :days] for k in range(RAIN_LAGS + 1)], -1)

    def _hint_parts(self, name: str, hint: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
        """A hint ``[B, S, kinds, w]`` with its extra features ``[B, S, c]`` as a decoder
        query term ``[B, S, Dd]``, and the output's starting point ``[B, S, w]`` (the
        learned mix of the hint's kinds)."""
        mix = self.hint_mix[name]  # [kinds, modalities]
        mix = mix.repeat_interleave(hint.shape[-1] // mix.shape[1], dim=1)  # [kinds, w]
        query = self.hint_embed[name](torch.cat([hint.flatten(2), extra], dim=-1))
        return query, (hint * mix).sum(2)

    def _static(self, batch: dict) -> Tensor:
        if "static" in batch and batch["static"].shape[-1]:
            s = batch["static"].float()
            x = torch.cat([torch.sign(s) * torch.log1p(s.abs()), batch["static_valid"].float()], -1)
        else:
            x = torch.zeros(
                batch["evap"].shape[0], self.static.in_features, device=self.mask_token.device
            )
        return self.static(x)[:, None, :]

    def _decode(
        self, batch: dict, h: Tensor, restore: dict, hints: dict[str, Tensor]
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Per group: predictions ``[B, L, w]`` and where they were made ``[B, L]`` (bool).

        ``hints`` (empty when off): per group ``[B, L, kinds, w]`` and ``[B, L, c]``, see
        ``_hints`` and ``_rain_history``."""
        dd = self.cfg.decoder_dim
        if self.cfg.decoder == "mae":
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
                seq = seq + self._position(batch, name, self.decoder_where, self.decoder_doy, every)
                if hints:  # on the mask tokens only; visible positions carry the encoder's
                    query, starts[name] = self._hint_parts(name, *hints[name])
                    seq = seq + torch.where(mask[..., None], query, 0.0)
                queries.append(seq + self.decoder_group_embed[name])
            x = torch.cat([h[:, :1], *queries], dim=1)  # [B, 1 + sum L, Dd]
            for block in self.decoder_blocks:
                x = block(x)
            x = self.decoder_norm(x)[:, 1:]
            out, offset = {}, 0
            for (name, _), q in zip(self.groups, queries, strict=True):
                length = q.shape[1]
                pred = self.head[name](x[:, offset : offset + length])  # [B, L, w]
                out[name] = (pred + starts[name] if hints else pred, restore[name][2])
                offset += length
            return out
        # CrossMAE: only masked positions are queried (a random share of them in training),
        # and they attend to the encoder output alone
        picked, gathered, starts = {}, [], {}
        for name, _ in self.groups:
            order, n_keep, mask, _ = restore[name]
            masked = order[:, n_keep:]  # [B, n_masked]
            n = masked.shape[1]
            take = max(1, round(n * self.cfg.cross_fraction)) if self.training and n else n
            if take < n:
                choice = torch.rand(masked.shape, device=masked.device).argsort(dim=1)[:, :take]
                masked = torch.gather(masked, 1, choice)
            picked[name] = masked
            where = self._position(batch, name, self.decoder_where, self.decoder_doy, masked)
            query = self.mask_token + where + self.decoder_group_embed[name]  # [B, picked, Dd]
            if hints:
                hint, extra = hints[name]  # [B, L, kinds, w], [B, L, c]
                at = masked[..., None, None].expand(-1, -1, *hint.shape[2:])
                near = extra.gather(1, masked[..., None].expand(-1, -1, extra.shape[-1]))
                term, starts[name] = self._hint_parts(name, hint.gather(1, at), near)
                query = query + term
            gathered.append(query)
        x = torch.cat(gathered, dim=1)  # [B, sum picked, Dd]
        for block in self.decoder_blocks:
            x = block(x, context=h)
        x = self.decoder_norm(x)
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
