"""Write synthetic Great Britain hydrology in the real raw-input formats (HadUK-Grid, CAMELS-GB).

``hydromae synth --out RAW_DIR [--start 2000-01-01] [--days 730] [--catchments 50]
[--seed 0]``: the generator is ``preprocessing.synth`` (model in docs/synthetic.md).
"""

from __future__ import annotations

import argparse

from pipeline import config
from preprocessing.synth import SynthConfig, generate
from preprocessing.synth.layout import TOML


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, SynthConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(SynthConfig, args)
    summary = generate(
        cfg.out,
        start=cfg.start,
        days=cfg.days,
        catchments=cfg.catchments,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    print(
        f"wrote {summary.files} files ({summary.bytes / 1e6:.1f} MB) to {summary.out}: "
        f"{summary.first} to {summary.last}, {len(summary.gauge_ids)} catchments; "
        f"next: hydromae preprocess --config {summary.out / TOML}"
    )
    for note in summary.notes:
        print(f"note: {note}")
    return 0
