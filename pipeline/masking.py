"""Mask draws: exact counts, exactly uniform, keyed so that they resume.

A draw gives every candidate (a valid patch on one day, or a day of a series) an
independent uniform noise value in float64 (53 random bits, from numpy's PCG64, faster
than torch's generator: ``docs/benchmarks.md``) and masks the ``n_mask`` largest. The
masked set is then a uniformly random ``n_mask``-subset (the noise is exchangeable;
ties have probability below 1e-12), and the count is exact by construction.
:class:`MaskDraws` makes a collate's masks from these draws, keyed by sample, and applies
a training mix of strategies (``pipeline.strategies``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.grid import PatchGrid
from pipeline.schema import IMAGE_MODALITIES, VECTOR_MODALITIES
from pipeline.strategies import draw, hide

COUNT_TOLERANCE = 1e-9


def masked_count(n: int, mask_ratio: float) -> int:
    """``floor(n * mask_ratio)`` with a small tolerance, so that ``0.29 * 100`` gives 29."""
    return math.floor(n * mask_ratio + COUNT_TOLERANCE)


def _digest(parts: tuple[object, ...], size: int) -> bytes:
    text = "\x1f".join(str(p) for p in parts).encode()
    return hashlib.blake2b(text, digest_size=size).digest()


def keyed(rng: np.random.Generator, *parts: object) -> np.random.Generator:
    """Put a PCG64 generator at the start of the stream keyed by ``parts`` (no new object).

    State and increment (which selects one of PCG64's independent streams) both come from
    a 256-bit BLAKE2b digest of the parts, so each key has its own stream.
    """
    digest = _digest(parts, 32)
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(digest[:16], "little"),
            "inc": int.from_bytes(digest[16:], "little") | 1,
        },
        "has_uint32": 0,
        "uinteger": 0,
    }
    return rng


def new_generator(*parts: object) -> np.random.Generator:
    """A fresh PCG64 generator keyed by ``parts``."""
    return keyed(np.random.Generator(np.random.PCG64(0)), *parts)


def top_mask(
    noise: torch.Tensor, n_mask: int, columns: torch.Tensor | None = None, width: int | None = None
) -> torch.Tensor:
    """Mask the ``n_mask`` largest noise values of each row: ``[..., N] -> [..., width]`` bool.

    Row position ``i`` lands in column ``columns[i]`` (default: ``i``, ``width = N``), so
    that a draw over the valid patches is placed straight onto all the grid's patches.
    The masked values are those above each row's ``(N - n_mask)``-th smallest, found by a
    partial sort (``np.partition``, faster than ``torch.topk``: ``docs/benchmarks.md``); a
    row where a tie left another count (probability about 1e-12) is
    drawn again by ``topk``, so the count is always exact.
    """
    n = noise.shape[-1]
    width = n if width is None else width
    values = noise.detach().cpu().numpy()
    if n_mask <= 0 or n_mask >= n:
        picked = np.full(values.shape, n_mask > 0)
    else:
        kth = np.partition(values, n - n_mask - 1, axis=-1)[..., n - n_mask - 1, None]
        picked = values > kth  # [..., N]
        wrong = picked.sum(axis=-1) != n_mask
        if wrong.any():
            rows = torch.from_numpy(values[wrong])
            top = rows.topk(n_mask, dim=-1, sorted=False).indices
            exact = torch.zeros(rows.shape, dtype=torch.bool).scatter_(-1, top, True)
            picked[wrong] = exact.numpy()
    if columns is None:
        return torch.from_numpy(picked) if width == n else _place(picked, np.arange(n), width)
    return _place(picked, columns.cpu().numpy(), width)


def _place(picked: np.ndarray, columns: np.ndarray, width: int) -> torch.Tensor:
    """``picked [..., N]`` bool in columns ``columns [N]`` of a ``[..., width]`` False mask."""
    mask = np.zeros((*picked.shape[:-1], width), dtype=bool)
    mask[..., columns] = picked
    return torch.from_numpy(mask)


class MaskDraws:
    """The masks of a collate: the specification's draws, keyed so that they resume, and
    (``train``, with a mix) a strategy per sample (``pipeline.strategies``).

    ``train``: keyed by (seed, epoch, sample_key); ``eval``: by (seed, sample_key),
    identical in every evaluation; ``val``: nothing masked. Samples without a key draw
    from a stream seeded by (seed, epoch, DataLoader worker) in ``train``, restarted from
    (seed) at every call in ``eval``.
    """

    def __init__(
        self,
        grid: PatchGrid,
        valid_patch_indices: torch.Tensor,
        mask_ratio: float,
        mask_mode: str,
        mode: str,
        seed: int,
        strategies: dict[str, float] | None,
    ) -> None:
        self.grid, self.valid_patch_indices = grid, valid_patch_indices
        self.num_valid = int(valid_patch_indices.numel())
        self.mask_ratio, self.mask_mode, self.mode, self.seed = mask_ratio, mask_mode, mode, seed
        self.strategies = strategies
        self.n_mask_patches = masked_count(self.num_valid, mask_ratio)
        self.epoch = 0
        self._stream: np.random.Generator | None = None
        self._keyed = new_generator(seed, "keyed")  # re-keyed for every sample with a key
        self._strategy_keyed = new_generator(seed, "strategy")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._stream = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stream"] = None  # each process seeds its own stream (see _stream_generator)
        return state

    def _stream_generator(self) -> np.random.Generator:
        """The generator for samples without a key: (seed, epoch, DataLoader worker)."""
        if self._stream is None:
            info = torch.utils.data.get_worker_info()
            worker = -1 if info is None else info.id
            self._stream = new_generator(self.seed, "stream", self.epoch, worker)
        return self._stream

    def _draws(self) -> tuple[int, int]:
        """How many image and vector masks one sample draws."""
        if self.mask_mode == "unified":
            return 1, 1
        return len(IMAGE_MODALITIES), len(VECTOR_MODALITIES)

    def _noise(self, keys: Sequence[str | None], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform noise ``[B, D_img, T, N_valid]`` and ``[B, D_vec, T]``, float64."""
        d_img, d_vec = self._draws()
        b = len(keys)
        img = np.empty((b, d_img, seq_len, self.num_valid))
        vec = np.empty((b, d_vec, seq_len))
        eval_stream = new_generator(self.seed, "eval") if self.mode == "eval" else None
        if all(k is None for k in keys):
            rng = eval_stream or self._stream_generator()
            rng.random(out=img)
            rng.random(out=vec)
        else:
            for i, key in enumerate(keys):
                if key is None:
                    rng = eval_stream or self._stream_generator()
                elif self.mode == "eval":
                    rng = keyed(self._keyed, self.seed, "eval", key)
                else:
                    rng = keyed(self._keyed, self.seed, "train", self.epoch, key)
                rng.random(out=img[i])
                rng.random(out=vec[i])
        return torch.from_numpy(img), torch.from_numpy(vec)

    def masks(self, keys: Sequence[str | None], seq_len: int) -> dict[str, Any]:
        """``{m}_mask`` for every modality (``[B, T, N_patches]`` images, ``[B, T]`` series,
        bool, True = masked); with a training mix also ``strategy``, each sample's."""
        b = len(keys)
        if self.mode == "val":
            img = torch.zeros(b, 1, seq_len, self.grid.num_patches, dtype=torch.bool)
            vec = torch.zeros(b, 1, seq_len, dtype=torch.bool)
        else:
            img_noise, vec_noise = self._noise(keys, seq_len)
            img = top_mask(  # [B, D_img, T, N_patches]
                img_noise, self.n_mask_patches, self.valid_patch_indices, self.grid.num_patches
            )
            vec = top_mask(vec_noise, masked_count(seq_len, self.mask_ratio))  # [B, D_vec, T]
        out: dict[str, Any] = {}
        for j, name in enumerate(IMAGE_MODALITIES):
            out[f"{name}_mask"] = img[:, min(j, img.shape[1] - 1)]
        for j, name in enumerate(VECTOR_MODALITIES):
            out[f"{name}_mask"] = vec[:, min(j, vec.shape[1] - 1)]
        if self.strategies is not None and self.mode == "train":
            drawn = [draw(self.strategies, self._strategy_generator(key)) for key in keys]
            out = hide(out, [name for name, _ in drawn], [offset for _, offset in drawn])
            out["strategy"] = [name for name, _ in drawn]
        return out

    def _strategy_generator(self, key: str | None) -> np.random.Generator:
        """The generator a sample's strategy is drawn from: keyed by (seed, epoch, key)."""
        if key is None:
            return self._stream_generator()
        return keyed(self._strategy_keyed, self.seed, "strategy", self.epoch, key)
