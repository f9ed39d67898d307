"""Evaluate a run against honest baselines (hydromae evaluate --run RUN --data DATA).

The scoring is ``training.evaluate.evaluate``.
"""

from __future__ import annotations

import argparse

from pipeline import config
from training.evaluate import EvaluateConfig, evaluate


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, EvaluateConfig)


def run(args: argparse.Namespace) -> int:
    evaluate(config.from_args(EvaluateConfig, args))
    return 0
