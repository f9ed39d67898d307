"""The loader's settings: one typed dataclass, loadable from TOML (``pipeline.config``).

``pipeline.config.load(LoaderConfig, "loader.toml")`` reads the settings; keyword options
to ``pipeline.loader.build_loader`` override them. ``docs/loader.md`` explains each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.location import Retry
from pipeline.schema import COLLATE_MODES, IMAGE_DTYPES, MASK_MODES, READERS
from pipeline.strategies import TRAINING

CONTEXTS = ("forkserver", "spawn", "fork")
LAYOUTS = ("samples", "windows")
SPARE_BUFFERS = 4  # recycled batch buffers per worker beyond prefetch_factor


@dataclass
class LoaderConfig:
    """The loader's settings (``pipeline.config.load(LoaderConfig, "file.toml")`` reads TOML)."""

    source: str = field(
        metadata={"metavar": "DIR_OR_URL", "help": "dataset directory or URL (its manifest)"}
    )
    split: str = field(default="train", metadata={"help": "train, val or test"})
    mode: str = field(
        default="train",
        metadata={
            "choices": COLLATE_MODES,
            "help": "train: shuffled, equal batches per rank, masks by (seed, epoch, key); "
            "eval: every sample once, padded, masks by (seed, key); val: eval without masks",
        },
    )
    reader: str = field(
        default="shards", metadata={"choices": READERS, "help": "stream shards or cut Zarr windows"}
    )
    shards: list[str] = field(
        default_factory=list,
        metadata={"help": "shard locations (paths, URLs, pipe:CMD; {a..b} expands) "
                  "instead of the source's shards of the split"},
    )  # fmt: skip
    batch_size: int = 32
    num_workers: int = 2
    seed: int = 0
    catchments_per_window: int = field(
        default=0, metadata={"help": "K random catchments per window in training (0: all)"}
    )
    shuffle_windows: int = field(
        default=16,
        metadata={"help": "training: windows open at once, their units drawn at random"},
    )
    window_samples: int = field(
        default=1,
        metadata={
            "min": 1,
            "help": "training: samples of one window that travel together in a batch "
            "(batch_size / window_samples windows a batch; must divide batch_size)",
        },
    )
    layout: str = field(
        default="samples",
        metadata={
            "choices": LAYOUTS,
            "help": "samples: every sample's images; windows: each window's images once a "
            "batch, with window_index (pipeline.collate.expand_windows)",
        },
    )
    image_dtype: str = field(
        default="float32",
        metadata={
            "choices": IMAGE_DTYPES,
            "help": "windows layout: the dtype the grids travel in; float16 halves their bytes "
            "(values rounded to 11 significant bits; float32 again on the model's device)",
        },
    )
    stride: int = field(
        default=0, metadata={"help": "zarr reader: days between window starts (0: manifest's)"}
    )
    history_days: int = field(
        default=0,
        metadata={
            "help": "days of each catchment's weather before its window that every sample "
            "carries (pipeline.history; read once from the store; 0: none)",
        },
    )
    mask_ratio: float = 0.75
    mask_mode: str = field(default="unified", metadata={"choices": MASK_MODES})
    strategies: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "min": 0.0,
            "keys": TRAINING,
            "help": "training mix of masking strategies (pipeline.strategies), e.g. "
            "seed=0.5 block=0.2 withhold=0.3 (none: the specification's masks alone)",
        },
    )
    prefetch_factor: int = 2
    persistent_workers: bool = True
    pin_memory: bool = False
    multiprocessing_context: str = field(default="forkserver", metadata={"choices": CONTEXTS})
    retries: int = field(default=3, metadata={"help": "retries of a shard that cannot be read"})
    retry_backoff: float = field(
        default=0.5, metadata={"help": "seconds before the first retry, doubled each time"}
    )
    timeout: float = field(default=60.0, metadata={"help": "network timeout, seconds"})

    def check(self) -> None:
        if self.mode not in COLLATE_MODES:
            raise ValueError(f"mode must be one of {COLLATE_MODES}, got {self.mode!r}")
        if self.reader not in READERS:
            raise ValueError(f"reader must be one of {READERS}, got {self.reader!r}")
        if self.multiprocessing_context not in CONTEXTS:
            raise ValueError(
                f"multiprocessing_context must be one of {CONTEXTS}, got "
                f"{self.multiprocessing_context!r}"
            )
        for name in ("batch_size", "prefetch_factor", "shuffle_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("num_workers", "catchments_per_window", "stride", "retries", "history_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.image_dtype != "float32" and self.layout != "windows":
            raise ValueError(
                f"image_dtype {self.image_dtype!r} needs layout 'windows' (the model restores "
                f"float32 where it expands the windows), got layout {self.layout!r}"
            )
        if self.shards and self.reader != "shards":
            raise ValueError("shards are given, but reader is not 'shards'")

    def retry(self) -> Retry:
        """How a shard (or the manifest, at a URL) that cannot be read is tried again."""
        return Retry(self.retries, self.retry_backoff)

    def pool_buffers(self) -> int:
        """Recycled batch buffers per worker (at most). With ``pin_memory`` (and a GPU) the
        main process page-locks each buffer where it lies once (``pipeline.buffers.
        PinnedBuffers``), so pinned batches are recycled too."""
        return self.prefetch_factor + SPARE_BUFFERS
