"""A run's files, and self-contained checkpoints: written atomically, refused against
another dataset, and turned back into the model they hold.

A checkpoint holds everything a run needs to continue exactly: model, optimizer,
scheduler, loader state, every random state, the configuration, the geometry and valid
patch indices, the normaliser, and the sha256 of the dataset's manifest. It is written to
a temporary file, fsynced and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.files import atomic_file, file_sha256
from pipeline.normalize import Normalizer
from pipeline.schema import MANIFEST
from training.model import Geometry, HydroMAE
from training.model_config import ModelConfig

# the files of a run directory (``hydromae train --out RUN_DIR``)
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RUN_CONFIG = "config.json"
# what every checkpoint holds (training.train writes them)
CHECKPOINT_KEYS = ("step", "model", "config", "model_config", "geometry", "normalizer")


def manifest_hash(data_dir: str | Path) -> str:
    return file_sha256(Path(data_dir) / MANIFEST)


def random_states() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (user code may use the global state)
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_file(path) as fh:
        torch.save(state, fh)


def load(path: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Read a checkpoint; with ``data_dir``, refuse it unless it was made on that dataset.

    A file that is not a whole checkpoint (truncated by a full disk or a copy cut short,
    overwritten, another kind of file) is refused with one message naming it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        if isinstance(err, OSError) and not isinstance(err, EOFError) and err.errno is not None:
            raise  # the file cannot be read at all: the system says why, with its name
        raise ValueError(
            f"checkpoint {path} is damaged or truncated and cannot be read ({err}); "
            "restore it from a copy, or start a new run"
        ) from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"checkpoint {path} is not a hydromae checkpoint: it lacks {missing}")
    if data_dir is not None and state.get("manifest_sha256") != manifest_hash(data_dir):
        raise ValueError(
            f"checkpoint {path} was made on another dataset than {data_dir} (its manifest "
            "differs): evaluate or resume it on the dataset it was trained on"
        )
    return state


def load_model(
    run: Path, data: Path | None, name: str = CHECKPOINT
) -> tuple[HydroMAE, dict[str, Any]]:
    """The model of a run's checkpoint, in eval mode (refused against another dataset)."""
    state = load(run / name, data)
    model = HydroMAE(
        ModelConfig(**state["model_config"]),
        Geometry(
            **{
                **state["geometry"],
                "valid_patch_indices": tuple(state["geometry"]["valid_patch_indices"]),
            }
        ),
        Normalizer.from_state_dict(state["normalizer"]),
    )
    model.load_state_dict(state["model"])
    return model.eval(), state
