"""Train the multi-modal MAE (hydromae train --data DATA --out RUN_DIR), alone or under torchrun.

The loop is ``training.train.train``; ``torchrun --nproc-per-node K -m hydromae train ...``
runs it on K processes.
"""

from __future__ import annotations

import argparse

from pipeline import config
from training.train import train
from training.train_config import TrainConfig


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    train(config.from_args(TrainConfig, args))
    return 0
