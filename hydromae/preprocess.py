"""Raw daily NetCDF grids and catchment series to the dataset directory (hydromae preprocess).

The job is ``preprocessing.job.run_job``: resumable, out of core, on local dask threads or
a dask.distributed cluster (``--scheduler``).
"""

from __future__ import annotations

import argparse

from pipeline import config
from preprocessing.job import run_job
from preprocessing.plan import PreprocessConfig


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, PreprocessConfig)


def run(args: argparse.Namespace) -> int:
    run_job(config.from_args(PreprocessConfig, args))
    return 0
