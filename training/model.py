"""The multi-modal masked autoencoder (MAE) of the masking specification (``docs/masking.md``).

Token groups. Under ``unified`` masks (the default) one token per (day, valid patch) fuses
the three image modalities' ``p*p`` values each, and one token per day fuses evaporation
and riverflow; under ``independent`` masks every modality is its own group, one token per
(modality, day, patch) or (modality, day). A static-attribute token tells the encoder which
catchment it is; a catchment-rain feature, the ``catchment_weight``-weighted mean of the
day's *visible* image tokens, is added to each day's vector token, so the model knows which
patches' rain falls on the catchment. With ``history_days = H`` the static token also
carries the catchment's weather on the H days before the window (``pipeline.history``:
catchment rain, soil moisture, temperature and evaporation, never riverflow), so that a
window does not start cold: the groundwater that feeds its first weeks' flow drained in
from the months before.

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

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pipeline.collate import expand_windows
from pipeline.history import HISTORY_FEATURES
from pipeline.manifest import Manifest
from pipeline.masking import masked_count
from pipeline.normalize import Normalizer
from pipeline.schema import IMAGE_MODALITIES, VECTOR_MODALITIES
from pipeline.strategies import withhold
from training.budget import within_budget
from training.catchment import (
    attribute_features,
    catchment_tokens,
    catchment_weather,
    history_bins,
    history_values,
)
from training.cross_decoder import CrossDecoder
from training.decoder import Decoded, Decoder, Restore
from training.hints import DecoderHints, Parts
from training.layers import Block, TokenPositions
from training.loss import HISTORY_FLOW, RUNOFF, LossConfig, mae_loss
from training.mae_decoder import MAEDecoder
from training.memory import (
    CatchmentMemory,
    flow_targets,
    memory_inputs,
    runoff_sequences,
    window_unseen,
)
from training.model_config import DECODERS, ModelConfig


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
        """Token groups: (name, modalities fused into one token). Under ``unified`` masks the
        three images share one token per (day, patch); each series always has tokens of its
        own, so that one can be withheld while the other is seen."""
        if self.mask_mode == "unified":
            return [("image", IMAGE_MODALITIES), *((m, (m,)) for m in VECTOR_MODALITIES)]
        return [(m, (m,)) for m in IMAGE_MODALITIES + VECTOR_MODALITIES]


class Encoded(NamedTuple):
    """What ``forward_encoder`` gives the decoder."""

    h: Tensor  # [B, 1 + S, D] the encoder's output, static token first
    restore: dict[str, Restore]  # per group, how to put its tokens back in place
    parts: dict[str, Parts]  # per group, values and validity [B, L, w], mask [B, L]
    weather: Tensor  # [B, T, 2k] the day's catchment weather (training.catchment.catchment_weather)
    attributes: Tensor  # [B, 2A] the static attributes' signed log and validity
    before: tuple[Tensor, Tensor] | None  # the history [B, H, F] (normalised) and validity


class HydroMAE(nn.Module):
    def __init__(self, cfg: ModelConfig, geometry: Geometry, normalizer: Normalizer) -> None:
        super().__init__()
        if cfg.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {cfg.decoder!r}")
        if cfg.encoder_tokens not in ("visible", "all"):
            raise ValueError(f"encoder_tokens must be visible or all, got {cfg.encoder_tokens!r}")
        if cfg.dim % 4 or cfg.decoder_dim % 4:
            raise ValueError("model widths must be multiples of 4 (2-D sin-cos embeddings)")
        if cfg.history_days < 0 or cfg.history_bin < 1 or cfg.history_days % cfg.history_bin:
            raise ValueError(
                f"history_days ({cfg.history_days}) must be >= 0 and a multiple of history_bin "
                f"({cfg.history_bin})"
            )
        self.cfg, self.geometry, self.normalizer = cfg, geometry, normalizer
        self.groups = geometry.groups()
        d, pp = cfg.dim, geometry.patch_pixels
        valid = torch.tensor(geometry.valid_patch_indices)
        row, col = valid // geometry.patch_cols, valid % geometry.patch_cols
        n_valid = len(geometry.valid_patch_indices)
        self.image_budget = cfg.image_tokens_per_day or n_valid - masked_count(n_valid, 0.75)
        # the groups whose tokens are image patches (the rest are daily series)
        self.image_groups = {n for n, mods in self.groups if mods[0] in IMAGE_MODALITIES}
        width = {n: len(mods) * (pp if n in self.image_groups else 1) for n, mods in self.groups}
        self.width = width
        weather = 2 * len(IMAGE_MODALITIES)  # catchment_weather's features a day
        # values and validity flags in, one token out
        self.embed = nn.ModuleDict({n: nn.Linear(2 * w, d) for n, w in width.items()})
        self.group_embed = nn.ParameterDict({n: nn.Parameter(torch.zeros(d)) for n in width})
        self.positions = TokenPositions(d, row, col)
        self.static = nn.Linear(2 * max(geometry.static_attributes, 1), d)
        if cfg.history_days:  # bin means and valid shares of each feature -> onto the static token
            bins = cfg.history_days // cfg.history_bin
            self.history = nn.Sequential(
                nn.Linear(2 * len(HISTORY_FEATURES) * bins, d), nn.GELU(), nn.Linear(d, d)
            )
        self.rain = nn.Linear(d, d)  # catchment-rain feature onto the vector tokens
        self.weather = nn.Linear(weather, d)  # the day's catchment weather onto the vector tokens
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)
        if cfg.encoder_tokens == "all":
            self.encoder_mask_token = nn.Parameter(torch.zeros(d))
            nn.init.normal_(self.encoder_mask_token, std=0.02)
        for p in self.group_embed.values():
            nn.init.normal_(p, std=0.02)
        if cfg.flow_fill and not (cfg.history_flow and cfg.hints):
            raise ValueError(
                "flow_fill makes the memory's riverflow a hint: it needs history_flow and hints"
            )
        hints = None
        if cfg.hints:
            hints = DecoderHints(
                self.groups, self.image_groups, width, valid, geometry.patch_cols, pp,
                cfg.decoder_dim, weather, cfg.gated_mix, cfg.flow_fill, cfg.nearness,
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
        # a memory day's columns: its weather, each series' value and flag
        self.memory_columns = weather + 2 * len(VECTOR_MODALITIES)
        if cfg.memory:  # a day's columns, then the attributes
            features = self.memory_columns + self.static.in_features
            series = [n for n in width if n not in self.image_groups]
            self.memory = CatchmentMemory(
                features, d, cfg.decoder_dim, series, cfg.history_flow, cfg.memory_detach
            )
        elif cfg.history_flow:
            raise ValueError("history_flow is predicted by the catchment's memory: it needs memory")
        if cfg.memory_detach and not cfg.history_flow:
            raise ValueError("memory_detach trains the memory on its own flow: needs history_flow")
        self.decoder: Decoder = (
            CrossDecoder(**parts, cross_fraction=cfg.cross_fraction)
            if cfg.decoder == "cross"
            else MAEDecoder(**parts)
        )

    # ------------------------------------------------------------ inputs
    def _values(self, batch: dict, name: str) -> tuple[Tensor, Tensor]:
        """Normalised values with invalid ones zeroed, and validity as 0/1 floats."""
        valid = batch[f"{name}_valid"]
        return self.normalizer.where_valid(name, batch[name], valid), valid.float()

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

    def _static(self, attributes: Tensor, before: tuple[Tensor, Tensor] | None) -> Tensor:
        """The static-attribute token ``[B, 1, D]`` from ``attributes [B, 2A]``, with the
        summary of the history ``before`` (``training.catchment.history_values``) added."""
        token = self.static(attributes)[:, None, :]
        if before is None:
            return token
        return token + self.history(history_bins(*before, self.cfg.history_bin))[:, None, :]

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    # ------------------------------------------------------------ forward
    def seen(self, batch: dict) -> dict:
        """``batch`` on the model's device, each sample with its own images (a compact
        batch's expanded), and what its training strategies (``batch["strategy"]``, where
        the collate drew them) withhold made invalid (``pipeline.strategies.withhold``).
        The names are consumed: a batch already seen passes through unchanged, so the
        forward pass and its parts, each calling this, withhold once."""
        dev = self.device
        batch = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in batch.items()}
        batch = expand_windows(batch)  # a compact batch's images: each sample's, on device
        strategies = batch.pop("strategy", None)
        return batch if strategies is None else withhold(batch, strategies)

    def forward_encoder(self, batch: dict) -> Encoded:
        """Encode the visible tokens: features ``[B, 1 + S, D]`` (static token first; each
        group's visible tokens, padded to the batch's largest count), how to restore each
        group's order, and each group's (values, validity, mask). ``[B, 1 + S_all, D]``
        under ``encoder_tokens = "all"``. Only the tokens the encoder sees are embedded:
        masked values are gathered away before anything touches them, and padding takes no
        part in attention. The series' tokens also carry the day's catchment weather."""
        dev = self.device
        batch = self.seen(batch)
        everything = self.cfg.encoder_tokens == "all"
        days = batch["evap"].shape[1]
        parts = {name: self._group_tokens(batch, name, mods) for name, mods in self.groups}
        weather = catchment_weather(
            [(mods, parts[n]) for n, mods in self.groups if n in self.image_groups],
            batch, days, self.geometry.patch_pixels,
        )  # fmt: skip  # [B, T, 6]
        attributes = attribute_features(
            batch.get("static"), batch.get("static_valid"), self.static.in_features, weather
        )  # [B, 2A]
        before = (
            history_values(batch, self.cfg.history_days, self.normalizer)
            if self.cfg.history_days
            else None
        )
        encoded, restore, keys = [], {}, []
        image: tuple[Tensor, Tensor, Tensor] | None = None
        for name, mods in self.groups:
            x, v, mask = parts[name]  # [B, L, w] x2, [B, L]
            b, length = mask.shape
            keep = ~mask
            if name in self.image_groups and not everything:
                keep = within_budget(batch, keep, days, self.image_budget)
            counts = keep.sum(dim=1)  # [B]
            n_keep = int(counts.max())
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept first
            seen = order[:, :n_keep]  # [B, S], day-major
            pad = torch.arange(n_keep, device=dev)[None, :] >= counts[:, None]  # [B, S]
            idx = torch.arange(length, device=dev).expand(b, -1) if everything else seen
            values = torch.cat([x, v], dim=-1)  # [B, L, 2w]
            values = torch.gather(values, 1, idx[..., None].expand(-1, -1, values.shape[-1]))
            if not everything:  # padding slots hold masked positions: never their values
                values = torch.where(pad[..., None], 0.0, values)
            tokens = self.embed[name](values)  # [B, S, D]
            tokens = tokens + self.positions(batch, idx, name in self.image_groups)
            tokens = tokens + self.group_embed[name]
            if everything:  # the ablation: masked tokens replaced in place, [B, L, D]
                tokens = torch.where(mask[..., None], self.encoder_mask_token, tokens)
                pad = torch.zeros(b, length, dtype=torch.bool, device=dev)
            visible = (
                tokens
                if not everything
                else torch.gather(tokens, 1, seen[..., None].expand(-1, -1, tokens.shape[-1]))
            )  # [B, n_keep, D]
            if mods[0] == IMAGE_MODALITIES[0]:
                # precipitation's tokens carry the catchment's rain
                image = (visible, seen, torch.arange(n_keep, device=dev)[None] >= counts[:, None])
            elif mods[0] in VECTOR_MODALITIES:
                at = idx[..., None]
                tokens = tokens + self.weather(
                    weather.gather(1, at.expand(-1, -1, weather.shape[-1]))
                )
                if image is not None and "catchment_weight" in batch:
                    rain = catchment_tokens(batch, *image, days=days)  # [B, T, D]
                    tokens = tokens + self.rain(rain.gather(1, at.expand_as(tokens)))
            encoded.append(tokens)
            keys.append(~pad)
            restore[name] = Restore(order, counts, mask, keep, tokens.shape[1], everything)
        h = torch.cat([self._static(attributes, before), *encoded], dim=1)  # [B, 1 + S, D]
        attend = torch.cat([torch.ones_like(keys[0][:, :1]), *keys], dim=1)  # [B, 1 + S]
        attend = None if bool(attend.all()) else attend
        for block in self.blocks:
            h = block(h, keys=attend)
        return Encoded(self.norm(h), restore, parts, weather, attributes, before)

    def forward_memory(self, encoded: Encoded) -> tuple[dict[str, Tensor], Tensor | None]:
        """The catchment memory's query terms per series group ``[B, T, Dd]`` (none without
        ``memory``) and, with ``history_flow``, its riverflow on the history's and the
        window's days ``[B, H + T]`` (normalised units). With ``flow_fill`` that riverflow
        never reads the window's visible flow (the fill is the weather's answer)."""
        if not self.cfg.memory:
            return {}, None
        weather, attributes, parts = encoded.weather, encoded.attributes, encoded.parts
        series = [parts[name] for name in VECTOR_MODALITIES]
        inputs = memory_inputs(weather, series, attributes, encoded.before)  # [B, H + T, F]
        at = VECTOR_MODALITIES.index("riverflow")  # with flow_fill, the flow head's window
        blind = window_unseen(weather, series, attributes, at) if self.cfg.flow_fill else None
        return self.memory(inputs, weather.shape[1], blind)

    def forward_decoder(
        self, batch: dict, encoded: Encoded, terms: dict[str, Tensor], flow: Tensor | None = None
    ) -> Decoded:
        """Per group: predictions ``[B, L, w]``, where they were made ``[B, L]`` (bool) and
        (with hints) the learned mix of the hints they started from ``[B, L, w]``; ``terms``
        are :meth:`forward_memory`'s, ``flow`` its riverflow on the window's days ``[B, T]``
        (a hint with ``flow_fill``; read through a stop-gradient with ``memory_detach``)."""
        batch = self.seen(batch)
        h, restore, parts, weather, _, _ = encoded
        flow = (flow.detach() if self.cfg.memory_detach else flow) if self.cfg.flow_fill else None
        return self.decoder(batch, h, restore, parts, weather, terms, flow)

    def forward_runoff(self, batch: dict) -> dict[str, Tensor]:
        """The memory's riverflow on a batch's rainfall-runoff sequences
        (``pipeline.runoff``): ``pred``, ``target`` (normalised units) and ``valid``
        ``[A, S]``. The same LSTM and head as the window's memory, on days it reads no flow."""
        days, target, known, catchment = runoff_sequences(
            batch, self.normalizer, self.memory_columns, self.static.in_features, self.device
        )
        pred = self.memory.runoff(days)  # [A, S]
        return {"pred": pred, "target": target, "valid": known, "catchment": catchment}

    def forward_loss(
        self, out: dict[str, dict[str, Tensor]], cfg: LossConfig, catchment: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The masked loss of :meth:`forward`'s output (``training.loss.mae_loss``);
        ``catchment`` ``[B]``: the batch's ``catchment_index``."""
        return mae_loss(
            out,
            self.groups,
            self.geometry.patch_pixels,
            cfg,
            self.normalizer.denormalize,
            catchment,
        )

    def forward(self, batch: dict) -> dict[str, dict[str, Tensor]]:
        """Per group: ``pred`` ``[B, L, w]`` (normalised units), ``target`` and ``valid``
        ``[B, L, w]``, ``mask`` ``[B, L]`` (MAE-masked), ``predicted`` ``[B, L]`` and (with
        hints) ``mix`` ``[B, L, w]``, the prediction with the network's correction silenced.
        With ``history_flow``, riverflow's ``memory`` ``[B, T, 1]`` is the memory's own
        riverflow on the window's days, and for a batch that carries the history's flow
        ``out["history_flow"]`` holds the memory's riverflow on the history days ``pred``,
        its ``target`` and ``valid`` ``[B, H]`` (``[B, H + T]`` with ``flow_fill``). A batch
        with rainfall-runoff sequences (``pipeline.runoff``) adds ``out["runoff"]``."""
        batch = self.seen(batch)
        encoded = self.forward_encoder(batch)
        terms, flow = self.forward_memory(encoded)
        days = encoded.weather.shape[1]
        decoded = self.forward_decoder(
            batch, encoded, terms, None if flow is None else flow[:, -days:]
        )
        parts = encoded.parts
        out = {}
        for name, _ in self.groups:
            pred, predicted, mix = decoded[name]
            out[name] = {
                "pred": pred,
                "predicted": predicted,
                "target": parts[name][0],
                "valid": parts[name][1] > 0,
                "mask": parts[name][2],
            }
            if mix is not None:
                out[name]["mix"] = mix
        if flow is not None:
            out["riverflow"]["memory"] = flow[:, -days:, None]
        if flow is not None and "history_flow" in batch:  # a target, read only here
            seen, valid = (batch[k].to(self.device) for k in ("history_flow", "history_flow_valid"))
            target = self.normalizer.where_valid("riverflow", seen, valid)
            window = parts["riverflow"][:2] if self.cfg.flow_fill else None  # a simulation's
            out[HISTORY_FLOW] = flow_targets(flow, days, target, valid, window)
        if "runoff" in batch:
            out[RUNOFF] = self.forward_runoff(batch)
        return out
