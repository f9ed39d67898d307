"""The multi-modal masked autoencoder (MAE) of the masking specification (``docs/masking.md``).

Token groups. Under ``unified`` masks (the default) one token per (day, valid patch) fuses
the three image modalities' ``p*p`` values each, and one token per day fuses evaporation
and riverflow; under ``independent`` masks every modality is its own group, one token per
(modality, day, patch) or (modality, day). A static-attribute token tells the encoder which
catchment it is; a catchment-rain feature, the ``catchment_weight``-weighted mean of the
day's *visible* image tokens, is added to each day's vector token, so the model knows which
patches' rain falls on the catchment.

Where and when: 2-D sin-cos embeddings of the patch's row and column on the (non-square)
patch grid, sin-cos of the day within the window, a learned projection of the cyclic day of
year (``training.layers.TokenPositions``), and a learned embedding per group.

``forward_encoder`` sees only the visible tokens: masked ones are removed (gathered away),
never zeroed, and really-missing values enter as zeros with a validity flag, never as
values. Because the collate's counts are exact, every sample of a batch keeps the same
number of visible tokens, so no padding is needed. ``forward_decoder`` is MAE's
(``training.mae_decoder``) or CrossMAE's (``training.cross_decoder``), optionally with
hints (``training.hints``); ``forward_loss`` is ``training.loss.mae_loss``.

Shapes: B batch, T days, N valid patches, P = p*p pixels, L a group's tokens, S visible
tokens, w a token's values, D encoder width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pipeline.manifest import Manifest
from pipeline.normalize import Normalizer
from pipeline.schema import IMAGE_MODALITIES, VECTOR_MODALITIES
from training.cross_decoder import CrossDecoder
from training.decoder import Decoded, Decoder, Restore
from training.hints import DecoderHints, Parts
from training.layers import Block, TokenPositions
from training.loss import LossConfig, mae_loss
from training.mae_decoder import MAEDecoder

DECODERS = ("mae", "cross")
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
    mask_mode: str = "unified"  # one of pipeline.schema.MASK_MODES

    @classmethod
    def from_manifest(cls, manifest: Manifest, mask_mode: str) -> Geometry:
        g = manifest.grid
        return cls(
            patch_rows=g.patch_rows,
            patch_cols=g.patch_cols,
            patch_pixels=g.patch_size**2,
            valid_patch_indices=manifest.valid_patch_indices,
            static_attributes=len(manifest.catchments.static_attributes),
            mask_mode=mask_mode,
        )

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
        d, pp = cfg.dim, geometry.patch_pixels
        valid = torch.tensor(geometry.valid_patch_indices)
        row, col = valid // geometry.patch_cols, valid % geometry.patch_cols
        # the groups whose tokens are image patches (the rest are daily series)
        self.image_groups = {n for n, mods in self.groups if mods[0] in IMAGE_MODALITIES}
        width = {n: len(mods) * (pp if n in self.image_groups else 1) for n, mods in self.groups}
        self.width = width
        # values and validity flags in, one token out
        self.embed = nn.ModuleDict({n: nn.Linear(2 * w, d) for n, w in width.items()})
        self.group_embed = nn.ParameterDict({n: nn.Parameter(torch.zeros(d)) for n in width})
        self.positions = TokenPositions(d, row, col)
        self.static = nn.Linear(2 * max(geometry.static_attributes, 1), d)
        self.rain = nn.Linear(d, d)  # catchment-rain feature onto the vector tokens
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)
        if cfg.encoder_tokens == "all":
            self.encoder_mask_token = nn.Parameter(torch.zeros(d))
            nn.init.normal_(self.encoder_mask_token, std=0.02)
        for p in self.group_embed.values():
            nn.init.normal_(p, std=0.02)
        hints = None
        if cfg.hints:
            hints = DecoderHints(
                self.groups, self.image_groups, width, valid, geometry.patch_cols, pp,
                cfg.decoder_dim,
            )  # fmt: skip
        parts = dict(
            groups=self.groups,
            image_groups=self.image_groups,
            width=width,
            positions=TokenPositions(cfg.decoder_dim, row, col),
            dim=d,
            decoder_dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            heads=cfg.decoder_heads,
            mlp_ratio=cfg.mlp_ratio,
            hints=hints,
        )
        self.decoder: Decoder = (
            CrossDecoder(**parts, cross_fraction=cfg.cross_fraction)
            if cfg.decoder == "cross"
            else MAEDecoder(**parts)
        )

    # ------------------------------------------------------------ inputs
    def _values(self, batch: dict, name: str) -> tuple[Tensor, Tensor]:
        """Normalised values with invalid ones zeroed, and validity as 0/1 floats."""
        valid = batch[f"{name}_valid"]
        return normalised(self.normalizer, name, batch[name], valid), valid.float()

    def _group_tokens(self, batch: dict, name: str, mods: tuple[str, ...]) -> Parts:
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

    def _static(self, batch: dict) -> Tensor:
        """The static-attribute token ``[B, 1, D]`` (signed log of the attributes, validity)."""
        if "static" in batch and batch["static"].shape[-1]:
            s = batch["static"].float()
            x = torch.cat([torch.sign(s) * torch.log1p(s.abs()), batch["static_valid"].float()], -1)
        else:
            x = torch.zeros(batch["evap"].shape[0], self.static.in_features, device=self.device)
        return self.static(x)[:, None, :]

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    # ------------------------------------------------------------ forward
    def forward_encoder(self, batch: dict) -> tuple[Tensor, dict[str, Restore], dict[str, Parts]]:
        """Encode the visible tokens: features ``[B, 1 + S_visible, D]`` (static token first;
        ``[B, 1 + S_all, D]`` under ``encoder_tokens = "all"``), how to restore each group's
        order, and each group's (values, validity, mask). Only the tokens the encoder sees
        are embedded: masked values are gathered away before anything touches them."""
        dev = self.device
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
            tokens = tokens + self.positions(batch, idx, name in self.image_groups)
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

    def forward_decoder(
        self, batch: dict, h: Tensor, restore: dict[str, Restore], parts: dict[str, Parts]
    ) -> Decoded:
        """Per group: predictions ``[B, L, w]`` and where they were made ``[B, L]`` (bool)."""
        dev = self.device
        batch = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in batch.items()}
        return self.decoder(batch, h, restore, parts)

    def forward_loss(
        self, out: dict[str, dict[str, Tensor]], cfg: LossConfig
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The masked loss of :meth:`forward`'s output (``training.loss.mae_loss``)."""
        return mae_loss(out, self.groups, self.geometry.patch_pixels, cfg)

    def forward(self, batch: dict) -> dict[str, dict[str, Tensor]]:
        """Per group: ``pred`` ``[B, L, w]`` (normalised units), ``target`` and ``valid``
        ``[B, L, w]``, ``mask`` ``[B, L]`` (MAE-masked) and ``predicted`` ``[B, L]``."""
        h, restore, parts = self.forward_encoder(batch)
        decoded = self.forward_decoder(batch, h, restore, parts)
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
