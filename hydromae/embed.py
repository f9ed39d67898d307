"""Encoder features for downstream use (hydromae embed --run RUN --data DATA --out FILE).

The work is ``training.embed.embed``; ``training.load_encoder`` gives the encoder as a module.
"""

from __future__ import annotations

import argparse

from pipeline import config
from training.embed import EmbedConfig, embed


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, EmbedConfig)


def run(args: argparse.Namespace) -> int:
    embed(config.from_args(EmbedConfig, args))
    return 0
