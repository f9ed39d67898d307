"""The seed's masking collate: stack samples, own NaN, draw the MAE masks.

The contract (``docs/masking.md``). Input: a list of samples, each a dict in physical
units with NaN kept (the sample schema, ``docs/dataset.md``):

    precip, soil, temp       [T', N_in, p, p]   patches listed by ``patch_indices``
                             or [T', H, W]      the seed's full grids (run through patchify)
    evap, riverflow          [T']
    static                   [A]                optional
    catchment_weight         [N_in]             optional, aligned with the image patches
    catchment_pixels         [N_in, p*p]        optional, the same per pixel
    catchment_index          int                optional
    doy                      [T'] int16         optional
    start, sample_key        str                optional; sample_key keys the masks
    weight                   float              optional (0 for evaluation padding)
    history                  [H, F]             optional (``pipeline.history``)
    history_flow             [H]                optional, riverflow then: a target only

Samples longer than ``seq_len`` are truncated to their first ``seq_len`` days.

Output (B samples, T = seq_len, N = N_valid valid patches, P = N_patches):

    precip, soil, temp                   [B, T, N, p*p] float32  NaN and sea set to 0
    precip_valid, soil_valid, temp_valid [B, T, N, p*p] bool     land and not missing
    precip_mask, soil_mask, temp_mask    [B, T, P] bool          True = masked (valid patches only)
    evap, riverflow                      [B, T] float32          NaN set to 0
    evap_valid, riverflow_valid          [B, T] bool
    evap_mask, riverflow_mask            [B, T] bool             True = masked day
    valid_patch_indices                  [N] long                ascending patch numbers
    static, static_valid                 [B, A] float32, bool
    history, history_valid               [B, H, F] float32, bool  (samples with a history)
    history_flow, history_flow_valid     [B, H] float32, bool     (the same; never an input)
    catchment_weight                     [B, N] float32
    catchment_pixels                     [B, N, p*p] float32
    catchment_index [B] long, doy [B, T] int16, weight [B] float32, start, sample_key: lists

With ``compact=True`` each window's images travel once: ``precip``, ``soil``, ``temp`` and
their ``_valid`` are ``[W, T, N, p*p]`` for the batch's W distinct windows (samples that
share their image arrays, as the loader's samples of one window do), and
``window_index [B] long`` says which is each sample's; :func:`expand_windows` gives the
per-sample layout back (on any device). Everything else is per sample, as above. With
``image_dtype="float16"`` (compact only) the images travel in half the bytes, rounded to 11
significant bits, and :func:`expand_windows` makes them float32 again.

Each distinct image array of a call (``K`` samples cut from one window share it) is made
finite-and-land once and copied into every sample's slot; with ``reuse_images=True`` the
prepared array is also kept for later calls as long as its source array lives
(``pipeline.image_cache``). ``collate(samples, allocate=...)`` puts every output tensor
in memory the caller gives (e.g. one recycled shared buffer per batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.finite import finite_into, finite_values
from pipeline.grid import PatchGrid, patchify
from pipeline.image_cache import ImageCache, Prepared
from pipeline.landmask import PatchTable, load_land_mask, reference_mask_path
from pipeline.masking import MaskDraws, masked_count
from pipeline.schema import (
    COLLATE_MODES,
    IMAGE_DTYPES,
    IMAGE_MODALITIES,
    MASK_MODES,
    MODALITIES,
    VECTOR_MODALITIES,
)
from pipeline.strategies import check_mix

TensorSpec = dict[str, tuple[tuple[int, ...], torch.dtype]]  # name -> (shape, dtype)
Allocate = Callable[[TensorSpec], dict[str, torch.Tensor]]


class MultiScaleMaskedCollate:
    """Collate samples into a masked batch, as the masking specification says
    (``docs/masking.md``).

    Each day masks ``floor(N_valid * mask_ratio)`` valid patches (70 of 94) and each
    sample masks ``floor(seq_len * mask_ratio)`` whole days of the vectors (67 of 90).
    ``unified`` shares one image mask among the three image modalities and one day mask
    between evaporation and riverflow; ``independent`` draws one per modality.

    ``mode='train'``: masks keyed by (seed, epoch, sample_key); call :meth:`set_epoch`.
    ``mode='eval'``: keyed by (seed, sample_key), identical in every evaluation.
    ``mode='val'``: nothing masked. ``land_mask_path`` is a ``.pt``/``.npy`` file, or the
    ``[H, W]`` mask itself as an array. Samples without a ``sample_key`` draw from the
    collate's own generator, seeded by (seed, epoch, DataLoader worker) in ``train`` and
    restarted from (seed) at every call in ``eval``.

    ``strategies`` (``train`` only; default None, the specification's masks alone): a mix
    ``{"seed": 0.5, "block": 0.2, "withhold": 0.3}`` of ``pipeline.strategies``, one drawn
    per sample by (seed, epoch, sample_key) and applied to its masks; the batch then also
    holds ``strategy``, each sample's name. The specification's masks are drawn as without
    a mix, so a ``seed`` sample's masks do not depend on the mix.
    """

    def __init__(
        self,
        seq_len: int = 90,
        mask_ratio: float = 0.75,
        patch_size: int = 10,
        image_height: int = 290,
        image_width: int = 180,
        land_mask_path: str | Path | np.ndarray | None = None,
        land_threshold: float = 0.5,
        mask_mode: str = "unified",
        mode: str = "train",
        seed: int = 0,
        patch_indices: Sequence[int] | np.ndarray | None = None,
        reuse_images: bool = False,
        strategies: dict[str, float] | None = None,
        compact: bool = False,
        image_dtype: str = "float32",
    ) -> None:
        if not isinstance(seq_len, int) or seq_len <= 0:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
        if not (isinstance(mask_ratio, int | float) and 0.0 <= mask_ratio < 1.0):
            raise ValueError(
                f"mask_ratio must lie in [0, 1), got {mask_ratio!r} (a ratio of 1 or more "
                "leaves no visible patch)"
            )
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
        if mode not in COLLATE_MODES:
            raise ValueError(f"mode must be one of {COLLATE_MODES}, got {mode!r}")
        self.grid = PatchGrid(image_height, image_width, patch_size)
        self.seq_len, self.mask_ratio = seq_len, float(mask_ratio)
        self.mask_mode, self.mode, self.seed = mask_mode, mode, int(seed)

        if isinstance(land_mask_path, np.ndarray):  # the mask itself, e.g. read from a URL
            path: Path | str = "given as an array"
            self.land_mask = np.asarray(land_mask_path, dtype=bool)
        else:
            path = reference_mask_path() if land_mask_path is None else Path(land_mask_path)
            self.land_mask = load_land_mask(path, self.grid)  # [H, W] bool
        self.table = PatchTable.from_mask(self.land_mask, self.grid, land_threshold)
        valid = self.table.valid_patch_indices  # [N_valid]
        if valid.size == 0:
            raise ValueError(
                f"land mask {path}: no patch is valid at land_threshold={land_threshold}"
            )
        self.valid_patch_indices = torch.from_numpy(valid)
        self.num_valid = int(valid.size)

        self.n_mask_patches = masked_count(self.num_valid, self.mask_ratio)
        self.n_mask_days = masked_count(seq_len, self.mask_ratio)
        if self.n_mask_patches >= self.num_valid or self.n_mask_days >= seq_len:
            raise ValueError(
                f"mask_ratio={mask_ratio} masks {self.n_mask_patches} of {self.num_valid} valid "
                f"patches and {self.n_mask_days} of {seq_len} days: it must leave at least one "
                "visible patch a day and one visible day"
            )

        self.patch_indices = self._check_patch_indices(patch_indices, valid)
        # positions of the valid patches among the samples' patches (None: they are the same)
        select = np.searchsorted(self.patch_indices, valid)
        self._select = (
            None if np.array_equal(self.patch_indices, valid) else torch.from_numpy(select)
        )
        land = patchify(self.land_mask, self.grid)[valid]  # [N_valid, p, p]
        self._land_pixels = torch.from_numpy(land.reshape(self.num_valid, -1).copy())
        # prepared images kept between calls while their source lives
        self.reuse_images = bool(reuse_images)
        self.compact = bool(compact)
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype must be one of {IMAGE_DTYPES}, got {image_dtype!r}")
        if image_dtype != "float32" and not self.compact:
            raise ValueError(f"image_dtype {image_dtype!r} needs compact=True (expand_windows)")
        self.image_dtype = getattr(torch, image_dtype)
        self.images = ImageCache(keep=self.reuse_images)
        self.draws = MaskDraws(
            self.grid, self.valid_patch_indices, self.mask_ratio, mask_mode, mode, self.seed,
            None if strategies is None else check_mix(strategies),
        )  # fmt: skip

    @property
    def strategies(self) -> dict[str, float] | None:
        return self.draws.strategies

    def _check_patch_indices(self, patch_indices: Any, valid: np.ndarray) -> np.ndarray:
        if patch_indices is None:
            return valid
        idx = np.asarray(patch_indices, dtype=np.int64).reshape(-1)
        if idx.size == 0 or np.any(np.diff(idx) <= 0):
            raise ValueError("patch_indices must be non-empty, ascending and without repeats")
        if idx[0] < 0 or idx[-1] >= self.grid.num_patches:
            raise ValueError(
                f"patch_indices must lie in [0, {self.grid.num_patches}), got {idx[0]}..{idx[-1]}"
            )
        missing = np.setdiff1d(valid, idx)
        if missing.size:
            raise ValueError(
                f"patch_indices lack {missing.size} patch(es) valid at land_threshold="
                f"{self.table.land_threshold}: {missing[:10].tolist()}"
                f"{' ...' if missing.size > 10 else ''}"
            )
        return idx

    # ------------------------------------------------------------------ masks
    @property
    def epoch(self) -> int:
        return self.draws.epoch

    def set_epoch(self, epoch: int) -> None:
        """Tell the collate the epoch: ``train`` masks change with it."""
        self.draws.set_epoch(epoch)

    def generate_masks(
        self, batch_size: int, seq_len: int | None = None
    ) -> dict[str, torch.Tensor]:
        """The five ``*_mask`` tensors alone, from the collate's own generator.

        Returns ``{precip,soil,temp}_mask: [B, T, N_patches]`` and
        ``{evap,riverflow}_mask: [B, T]``, bool, True = masked.
        """
        seq_len = self.seq_len if seq_len is None else seq_len
        if masked_count(seq_len, self.mask_ratio) >= seq_len:
            raise ValueError(f"mask_ratio={self.mask_ratio} leaves no visible day of {seq_len}")
        return self.draws.masks([None] * batch_size, seq_len)

    # ------------------------------------------------------------------ data
    def _where(self, sample: dict[str, Any], index: int) -> str:
        key = sample.get("sample_key")
        return f"sample {key!r}" if key is not None else f"sample {index} of the batch"

    def _days(self, x: torch.Tensor, where: str, name: str) -> torch.Tensor:
        if x.shape[0] < self.seq_len:
            raise ValueError(
                f"{where}: {name!r} has {x.shape[0]} days, fewer than seq_len={self.seq_len}"
            )
        return x[: self.seq_len]

    def _image(self, sample: dict[str, Any], name: str, where: str) -> torch.Tensor:
        """One sample's image as ``[T, N_valid, p*p]`` (a view where it can be)."""
        x = torch.as_tensor(sample[name])
        p = self.grid.patch_size
        if x.ndim == 3:  # the seed's full grid [T', H, W]
            self.grid.check_shape(tuple(x.shape), f"{where}: {name!r}")
            x = patchify(self._days(x, where, name), self.grid)[:, self.valid_patch_indices]
        elif x.ndim == 4:  # patches [T', N_in, p, p]
            if tuple(x.shape[1:]) != (len(self.patch_indices), p, p):
                raise ValueError(
                    f"{where}: {name!r} has shape {tuple(x.shape)}, expected "
                    f"[T, {len(self.patch_indices)}, {p}, {p}] (patch_indices) or [T, "
                    f"{self.grid.height}, {self.grid.width}]"
                )
            x = self._days(x, where, name)
            if self._select is not None:
                x = x[:, self._select]
        else:
            raise ValueError(
                f"{where}: {name!r} has {x.ndim} dims {tuple(x.shape)}; expected [T, N, p, p] "
                "or [T, H, W]"
            )
        return x.reshape(self.seq_len, self.num_valid, p * p)

    def _vector(self, sample: dict[str, Any], name: str, where: str) -> torch.Tensor:
        x = torch.as_tensor(sample[name])
        if x.ndim != 1:
            raise ValueError(f"{where}: {name!r} has shape {tuple(x.shape)}, expected [T]")
        return self._days(x, where, name)

    @staticmethod
    def _stack_finite(parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack into float32 and apply :func:`finite_values`: (data, valid)."""
        data, valid = finite_values(torch.stack([p.to(torch.float32) for p in parts]).numpy())
        return torch.from_numpy(data), torch.from_numpy(valid)

    def _part(
        self, sample: dict[str, Any], name: str, where: str
    ) -> tuple[torch.Tensor | None, Any]:
        """``(image [T, N_valid, p*p] or None, source)`` of a sample, ``source = sample[name]``.

        The image is None where ``source`` was prepared (and so checked) in an earlier call.
        """
        source = sample[name]
        if self.images.kept(source) is not None:
            return None, source
        return self._image(sample, name, where), source

    def _fill_images(
        self, parts: list[tuple[torch.Tensor | None, Any]], out: torch.Tensor, valid: torch.Tensor
    ) -> None:
        """Write B images ``[T, N, p*p]`` into ``out [B, T, N, p*p]`` (float32, or float16
        when the images travel so) and ``valid`` bool.

        ``parts``: each sample's image (see :meth:`_part`) and the sample's own array.
        """
        data_np, valid_np = out.numpy(), valid.numpy()
        land = self._land_pixels.numpy()
        uses: dict[int, int] = {}
        for _, source in parts:
            uses[id(source)] = uses.get(id(source), 0) + 1
        seen: dict[int, Prepared] = {}
        half = out.dtype != torch.float32
        for i, (part, source) in enumerate(parts):
            alone = uses[id(source)] == 1 and not self.reuse_images
            if part is not None and alone and not half:
                x = part.detach().to("cpu", torch.float32).numpy()  # in place, nothing to keep
                finite_into(x, data_np[i], valid_np[i], land)
                continue
            data, ok = self.images.prepared(part, source, seen, land)
            if half:  # torch rounds to float16 with vector instructions, numpy element by element
                out[i].copy_(torch.from_numpy(data))
            else:
                np.copyto(data_np[i], data)
            np.copyto(valid_np[i], ok)

    def __call__(
        self, samples: Sequence[dict[str, Any]], allocate: Allocate | None = None
    ) -> dict[str, Any]:
        """Collate ``samples`` (see the module's docstring for the output).

        ``allocate(spec)`` (optional) returns the output tensors, ``{name: tensor}`` of the
        shapes and dtypes of ``spec`` (every tensor of the batch); by default each is a
        fresh tensor. The values are the same either way.
        """
        if len(samples) == 0:
            raise ValueError("cannot collate an empty list of samples")
        wheres = [self._where(s, i) for i, s in enumerate(samples)]
        for s, where in zip(samples, wheres, strict=True):
            missing = [m for m in MODALITIES if m not in s]
            if missing:
                raise ValueError(f"{where} lacks modality(ies) {missing}")
        holders = list(zip(samples, wheres, strict=True))
        if self.compact:  # each window's images once, held by its first sample
            number: dict[int, int] = {}  # the window's source array -> its place in the batch
            index = [number.setdefault(id(s[IMAGE_MODALITIES[0]]), len(number)) for s in samples]
            holders = [holders[index.index(w)] for w in range(len(number))]
        images = {name: [self._part(s, name, w) for s, w in holders] for name in IMAGE_MODALITIES}
        small: dict[str, Any] = {}  # every other output, computed whole (a few KB)
        for name in VECTOR_MODALITIES:
            parts = [self._vector(s, name, w) for s, w in zip(samples, wheres, strict=True)]
            small[name], small[f"{name}_valid"] = self._stack_finite(parts)
        small.update(self.draws.masks([s.get("sample_key") for s in samples], self.seq_len))
        small["valid_patch_indices"] = self.valid_patch_indices
        small.update(self._extras(samples, wheres))

        if self.compact:
            small["window_index"] = torch.tensor(index, dtype=torch.long)
        shape = (len(holders), self.seq_len, self.num_valid, self.grid.patch_size**2)
        spec: TensorSpec = {}
        for name in IMAGE_MODALITIES:
            spec[name], spec[f"{name}_valid"] = (shape, self.image_dtype), (shape, torch.bool)
        if allocate is None:
            out = {name: torch.empty(s, dtype=d) for name, (s, d) in spec.items()}
        else:
            spec.update(
                {k: (tuple(v.shape), v.dtype) for k, v in small.items() if torch.is_tensor(v)}
            )
            out = allocate(spec)
            for name, value in small.items():
                if torch.is_tensor(value):  # numpy: one thread, no thread-pool wake-ups
                    np.copyto(out[name].numpy(), value.numpy())
                    small[name] = out[name]
        batch: dict[str, Any] = {}
        for name in IMAGE_MODALITIES:
            batch[name], batch[f"{name}_valid"] = out[name], out[f"{name}_valid"]
            self._fill_images(images[name], batch[name], batch[f"{name}_valid"])
        batch.update(small)
        return batch

    def _extras(self, samples: Sequence[dict[str, Any]], wheres: list[str]) -> dict[str, Any]:
        """Stack the optional per-sample fields; every sample must carry the same ones."""
        out: dict[str, Any] = {}
        keys = set(samples[0]) - set(MODALITIES)
        for s, where in zip(samples, wheres, strict=True):
            if set(s) - set(MODALITIES) != keys:
                raise ValueError(
                    f"{where} has fields {sorted(set(s) - set(MODALITIES))}, but the first "
                    f"sample has {sorted(keys)}: samples of one batch must carry the same fields"
                )
        for key in sorted(keys):
            values = [s[key] for s in samples]
            if key in ("static", "history", "history_flow"):
                out[key], out[f"{key}_valid"] = self._stack_finite(
                    [torch.as_tensor(v) for v in values]
                )
            elif key in ("catchment_weight", "catchment_pixels"):
                w = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values])
                if w.shape[1] != len(self.patch_indices):
                    raise ValueError(
                        f"{key} has {w.shape[1]} patches, expected "
                        f"{len(self.patch_indices)} (patch_indices)"
                    )
                w = w if self._select is None else w[:, self._select]
                out[key] = torch.nan_to_num(w, nan=0.0)
            elif key == "doy":
                out[key] = torch.stack(
                    [torch.as_tensor(v)[: self.seq_len].to(torch.int16) for v in values]
                )
            elif key == "catchment_index":
                out[key] = torch.as_tensor(np.asarray(values, dtype=np.int64))
            elif key == "weight":
                out[key] = torch.as_tensor(np.asarray(values, dtype=np.float32))
            else:  # start, sample_key and anything else travel as lists
                out[key] = values
        return out


def expand_windows(batch: dict[str, Any]) -> dict[str, Any]:
    """A compact batch (``window_index``, images ``[W, T, N, P]``) in the per-sample layout
    (images ``[B, T, N, P]`` float32, whatever dtype they travelled in), on the batch's
    device; any other batch unchanged."""
    if "window_index" not in batch:
        return batch
    out = {k: v for k, v in batch.items() if k != "window_index"}
    index = batch["window_index"]
    for name in IMAGE_MODALITIES:
        for key in (name, f"{name}_valid"):
            value = batch[key].index_select(0, index.to(batch[key].device))
            out[key] = value.float() if value.is_floating_point() else value
    return out
