"""Draw the seed's mask visualization: red masked, green visible, ocean never touched.

``hydromae viz-mask --mask FILE --out mask_visualization_with_legend.png`` draws, for
one sample of one masking collate: the image mask over days x valid patches, its
spatial pattern on the patch grid for a few days (with the coastline), and the day mask
of the two vector modalities, with a legend.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import config
from pipeline.collate import MultiScaleMaskedCollate
from pipeline.landmask import load_land_mask, reference_mask_path
from pipeline.pictures import draw_masks
from pipeline.schema import MASK_MODES
from pipeline.strategies import EVALUATION, TRAINING

STRATEGIES = tuple(dict.fromkeys(EVALUATION + TRAINING))


@dataclass
class VizMaskConfig:
    mask: Path | None = field(
        default=None,
        metadata={"metavar": "FILE", "help": "land mask .npy/.pt (default: packaged GB mask)"},
    )
    out: Path = field(
        default=Path("mask_visualization_with_legend.png"), metadata={"metavar": "PNG"}
    )
    seq_len: int = field(default=90, metadata={"min": 1})
    mask_ratio: float = field(default=0.75, metadata={"min": 0.0, "max": 0.999})
    patch_size: int = field(default=10, metadata={"min": 1})
    land_threshold: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    mask_mode: str = field(default="unified", metadata={"choices": MASK_MODES})
    strategy: str = field(
        default="seed",
        metadata={"choices": STRATEGIES, "help": "masking strategy (pipeline.strategies)"},
    )
    seed: int = 0
    days: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4], metadata={"help": "days (1-based) to map"}
    )


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, VizMaskConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(VizMaskConfig, args)
    mask_path = cfg.mask or reference_mask_path()
    height, width = load_land_mask(mask_path).shape
    collate = MultiScaleMaskedCollate(
        seq_len=cfg.seq_len,
        mask_ratio=cfg.mask_ratio,
        patch_size=cfg.patch_size,
        image_height=height,
        image_width=width,
        land_mask_path=mask_path,
        land_threshold=cfg.land_threshold,
        mask_mode=cfg.mask_mode,
        seed=cfg.seed,
    )
    print(f"wrote {draw_masks(collate, cfg.out, cfg.days, cfg.strategy)}")
    return 0
