"""Grid and patch geometry.

The image grid is ``H x W`` cells (HadUK-Grid 5 km: 290 x 180, row 0 the southernmost,
y ascending northwards as stored in the files). It is cut into ``p x p`` patches,
``(H/p) x (W/p)`` of them (29 x 18 = 522), numbered row-major:
``patch = row_block * (W/p) + col_block``.

One helper, :func:`patchify`, turns grids into patches for numpy arrays and torch
tensors alike; :func:`unpatchify` is its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class PatchGrid:
    """The patch geometry of an ``height x width`` grid cut into ``patch_size`` blocks."""

    height: int = 290
    width: int = 180
    patch_size: int = 10

    def __post_init__(self) -> None:
        for name in ("height", "width", "patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value <= 0:
                raise ValueError(f"grid {name} must be a positive integer, got {value!r}")
        if self.height % self.patch_size or self.width % self.patch_size:
            raise ValueError(
                f"grid {self.height} x {self.width} is not divisible into "
                f"{self.patch_size} x {self.patch_size} patches"
            )

    @property
    def rows(self) -> int:
        """Patch rows (south to north): H / p."""
        return self.height // self.patch_size

    @property
    def cols(self) -> int:
        """Patch columns (west to east): W / p."""
        return self.width // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.rows * self.cols

    @property
    def patch_pixels(self) -> int:
        return self.patch_size * self.patch_size

    def patch_row_col(self, patch: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Row block and column block of patch numbers."""
        return np.divmod(np.asarray(patch), self.cols)

    def check_shape(self, shape: tuple[int, ...], what: str) -> None:
        if tuple(shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"{what} has spatial shape {tuple(shape[-2:])}, expected "
                f"({self.height}, {self.width}) = (image_height, image_width)"
            )


def patchify(x: Array, grid: PatchGrid) -> Array:
    """Cut grids into patches: ``[..., H, W] -> [..., H/p * W/p, p, p]`` (row-major patches)."""
    grid.check_shape(tuple(x.shape), "grid")
    p, rows, cols = grid.patch_size, grid.rows, grid.cols
    lead = tuple(x.shape[:-2])
    blocks = x.reshape(*lead, rows, p, cols, p).swapaxes(-3, -2)  # [..., rows, cols, p, p]
    return blocks.reshape(*lead, rows * cols, p, p)


def unpatchify(x: Array, grid: PatchGrid) -> Array:
    """Inverse of :func:`patchify`: ``[..., N_patches, p, p] -> [..., H, W]``."""
    p, rows, cols = grid.patch_size, grid.rows, grid.cols
    if tuple(x.shape[-3:]) != (grid.num_patches, p, p):
        raise ValueError(
            f"patches have shape {tuple(x.shape[-3:])}, expected ({grid.num_patches}, {p}, {p})"
        )
    lead = tuple(x.shape[:-3])
    blocks = x.reshape(*lead, rows, cols, p, p).swapaxes(-3, -2)  # [..., rows, p, cols, p]
    return blocks.reshape(*lead, grid.height, grid.width)
