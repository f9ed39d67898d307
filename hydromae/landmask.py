"""Derive the land mask from gridded NetCDF (cells valid every day), or print a patch table.

``hydromae landmask --from FILE [FILE ...] --var tas --out DIR`` writes ``DIR/land_mask.npy``
and ``DIR/land_mask.pt`` (bool ``[H, W]``, True = land: the seed's ``gb_temp_valid_mask``)
and prints the patch table. ``hydromae landmask --mask FILE`` prints the table of an
existing ``.npy`` or ``.pt`` mask.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import config
from pipeline.grid import PatchGrid
from pipeline.landmask import PatchTable, check_threshold, load_land_mask, save_land_mask
from preprocessing.gridfile import valid_everywhere


@dataclass
class LandmaskConfig:
    from_files: list[str] = field(
        default_factory=list,
        metadata={
            "flag": "--from",
            "metavar": "FILE",
            "help": "NetCDF files or globs to derive from",
        },
    )
    var: str = field(default="tas", metadata={"help": "variable whose valid cells are land"})
    out: Path | None = field(
        default=None, metadata={"metavar": "DIR", "help": "where land_mask.npy/.pt go"}
    )
    mask: Path | None = field(
        default=None, metadata={"metavar": "FILE", "help": "an existing .npy/.pt mask to summarise"}
    )
    threshold: float = field(
        default=0.5, metadata={"min": 0.0, "max": 1.0, "help": "land fraction for a valid patch"}
    )
    patch_size: int = field(default=10, metadata={"min": 1, "help": "patch edge in cells"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, LandmaskConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(LandmaskConfig, args)
    check_threshold(cfg.threshold)
    if bool(cfg.from_files) == (cfg.mask is not None):
        raise ValueError("give either --from FILE... (with --out DIR) or --mask FILE")
    if cfg.mask is not None:
        mask = load_land_mask(cfg.mask)
        source = str(cfg.mask)
    else:
        if cfg.out is None:
            raise ValueError("--from needs --out DIR for land_mask.npy and land_mask.pt")
        files = config.expand_globs(cfg.from_files, "--from")
        mask = valid_everywhere(files, cfg.var, progress=cfg.progress)
        source = f"{len(files)} file(s), cells where {cfg.var!r} is valid on every day"
    grid = PatchGrid(mask.shape[0], mask.shape[1], cfg.patch_size)
    table = PatchTable.from_mask(mask, grid, cfg.threshold)
    if cfg.out is not None and cfg.from_files:
        npy, pt = save_land_mask(mask, cfg.out)
        print(f"wrote {npy} and {pt}")
    print(f"land mask: {source}")
    print(table.format())
    return 0
