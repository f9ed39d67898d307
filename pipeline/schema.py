"""The names every part of hydromae shares: modalities, splits, modes, files and keys.

One definition of each name, so that the writer (``preprocessing``), the reader
(``pipeline``) and the model (``training``) cannot drift apart. The contracts behind the
names are in ``docs/dataset.md`` (what is on disk) and ``docs/masking.md`` (the masks).
"""

from __future__ import annotations

import datetime as dt

# ------------------------------------------------------------------ modalities
IMAGE_MODALITIES = ("precip", "soil", "temp")  # [T, N_valid, p, p] per sample, physical units
VECTOR_MODALITIES = ("evap", "riverflow")  # [T] per sample (a catchment's series)
MODALITIES = IMAGE_MODALITIES + VECTOR_MODALITIES

# ------------------------------------------------------------------ splits and modes
SPLITS = ("train", "val", "test")  # chronological; windows never straddle two
MASK_MODES = ("unified", "independent")  # one draw shared per kind, or one per modality
IMAGE_DTYPES = ("float32", "float16")  # what grids may travel in (windows layout)
COLLATE_MODES = ("train", "val", "eval")  # masks keyed by epoch, nothing masked, fixed masks
READERS = ("shards", "zarr")  # the loader's two sources

# ------------------------------------------------------------------ the dataset directory
FORMAT_VERSION = 3  # 2: input fingerprints, per-window checksums, chunk checksums; 3: pixel weights
MANIFEST = "manifest.json"
STORE = "store.zarr"
SHARDS = "shards"
LAND_MASK_NPY = "land_mask.npy"
LAND_MASK_PT = "land_mask.pt"
CRS = "EPSG:27700"  # British National Grid

# the members of one shard sample, in the order they are written
SHARD_MEMBERS = (*(f"{m}.npy" for m in MODALITIES), "meta.json")


def shard_name(split: str, index: int) -> str:
    """``{split}-{index:06d}.tar``: a shard's file name."""
    return f"{split}-{index:06d}.tar"


def window_key(start: dt.date) -> str:
    """The WebDataset ``__key__`` of the window starting on ``start``: ``YYYYMMDD``."""
    return start.strftime("%Y%m%d")


def sample_key(start: dt.date, gauge_id: str) -> str:
    """The unique key of one (window, catchment) sample: ``YYYYMMDD-{gauge_id}``."""
    return f"{window_key(start)}-{gauge_id}"
