"""Mask draws: exact counts, exactly uniform, keyed so that they resume.

A draw gives every candidate (a valid patch on one day, or a day of a series) an
independent uniform noise value in float64 (53 random bits, from numpy's PCG64, about
faster than torch's generator: ``docs/benchmarks.md``) and masks the ``n_mask`` largest. The
masked set is then a uniformly random ``n_mask``-subset (the noise is exchangeable;
ties have probability below 1e-12), and the count is exact by construction.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

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
