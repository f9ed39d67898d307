"""The land mask and the patches it makes valid.

A land mask is a boolean ``[H, W]`` array, True = land (the seed's
``gb_temp_valid_mask_290x180.pt``: the cells where temperature is valid). A patch's
land fraction is the mean of its ``p x p`` block; a patch is *valid* iff it holds some
land and its fraction is at least ``land_threshold``. Ocean patches are never masked,
encoded, predicted or scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from pipeline.files import atomic_file
from pipeline.grid import PatchGrid, patchify

REFERENCE_MASK = "gb_land_mask_290x180.npy"


def reference_mask_path() -> Path:
    """The packaged Great Britain land mask on the HadUK-Grid 5 km grid (see data/README.md)."""
    return Path(str(resources.files("pipeline") / "data" / REFERENCE_MASK))


def load_land_mask(path: str | Path, grid: PatchGrid | None = None) -> np.ndarray:
    """Read a land mask from ``.npy`` or ``.pt``: boolean ``[H, W]``, True = land.

    Accepts booleans or numbers that are all 0 or 1. With ``grid`` the shape is checked.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"land mask {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            raw = np.load(path, allow_pickle=False)
        elif suffix == ".pt":
            raw = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(raw, torch.Tensor):
                raise ValueError(f"holds a {type(raw).__name__}, not a tensor")
            raw = raw.numpy()
        else:
            raise ValueError("unknown file type: use .npy or .pt")
    except (ValueError, OSError, RuntimeError) as err:
        raise ValueError(f"land mask {path}: cannot read it: {err}") from None
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise ValueError(f"land mask {path} has shape {raw.shape}; expected a 2-D [H, W] array")
    if raw.dtype != np.bool_:
        if not np.isin(raw, (0, 1)).all():
            raise ValueError(f"land mask {path} holds values other than 0/1 (dtype {raw.dtype})")
        raw = raw.astype(bool)
    if grid is not None:
        grid.check_shape(raw.shape, f"land mask {path}")
    return raw


def save_land_mask(mask: np.ndarray, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``land_mask.npy`` and ``land_mask.pt`` (bool tensor ``[H, W]``) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mask = np.ascontiguousarray(mask, dtype=bool)
    npy, pt = out_dir / "land_mask.npy", out_dir / "land_mask.pt"
    with atomic_file(npy) as fh:
        np.save(fh, mask)
    with atomic_file(pt) as fh:
        torch.save(torch.from_numpy(mask.copy()), fh)
    return npy, pt


def check_threshold(land_threshold: float) -> float:
    if not (isinstance(land_threshold, int | float) and 0.0 <= land_threshold <= 1.0):
        raise ValueError(f"land_threshold must lie in [0, 1], got {land_threshold!r}")
    return float(land_threshold)


@dataclass(frozen=True)
class PatchTable:
    """Per-patch land counts of a mask on a grid, and the patches valid at a threshold."""

    grid: PatchGrid
    land_threshold: float
    land_pixels: np.ndarray  # [N_patches] int, land cells per patch

    @classmethod
    def from_mask(cls, mask: np.ndarray, grid: PatchGrid, land_threshold: float = 0.5):
        grid.check_shape(mask.shape, "land mask")
        counts = patchify(np.asarray(mask, dtype=bool), grid).sum(axis=(-2, -1))
        return cls(grid, check_threshold(land_threshold), counts.astype(np.int64))

    @property
    def land_fraction(self) -> np.ndarray:
        """``[N_patches]`` float64, the land share of each patch."""
        return self.land_pixels / self.grid.patch_pixels

    @property
    def valid(self) -> np.ndarray:
        """``[N_patches]`` bool: some land and fraction >= threshold (counted exactly)."""
        needed = math.ceil(self.land_threshold * self.grid.patch_pixels - 1e-9)
        return (self.land_pixels > 0) & (self.land_pixels >= needed)

    @property
    def valid_patch_indices(self) -> np.ndarray:
        """Ascending patch numbers of the valid patches, ``[N_valid]`` int64."""
        return np.flatnonzero(self.valid).astype(np.int64)

    @property
    def land_patch_indices(self) -> np.ndarray:
        """Ascending patch numbers of every patch with any land."""
        return np.flatnonzero(self.land_pixels > 0).astype(np.int64)

    def summary(self) -> dict[str, int | float]:
        full = self.grid.patch_pixels
        return {
            "land_cells": int(self.land_pixels.sum()),
            "patches": self.grid.num_patches,
            "fully_ocean": int((self.land_pixels == 0).sum()),
            "partially_land": int(((self.land_pixels > 0) & (self.land_pixels < full)).sum()),
            "fully_land": int((self.land_pixels == full).sum()),
            "valid": int(self.valid.sum()),
            "land_threshold": self.land_threshold,
        }

    def format(self) -> str:
        """The patch table as printed by ``hydromae landmask``."""
        s = self.summary()
        g = self.grid
        n = s["patches"]

        def row(label: str, count: int) -> str:
            return f"  {label:<28}{count:>6}  {100.0 * count / n:5.1f}%"

        return "\n".join(
            [
                f"grid {g.height} x {g.width}, {g.patch_size} x {g.patch_size} patches: "
                f"{g.rows} x {g.cols} = {n} patches, {s['land_cells']} land cells",
                row("fully ocean", s["fully_ocean"]),
                row("partially land", s["partially_land"]),
                row("fully land", s["fully_land"]),
                row(f"valid (land >= {self.land_threshold:g})", s["valid"]),
            ]
        )
