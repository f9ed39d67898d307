"""What ``hydromae preprocess`` is asked to do, checked before anything is written.

:class:`PreprocessConfig` holds the settings (flags and TOML keys); :func:`make_plan`
indexes the inputs (metadata only) and checks them: the splits, the grids (one grid,
known units, every requested day present), the catchment files. The :class:`Plan` is what
every later step reads.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import config
from pipeline.grid import PatchGrid
from pipeline.landmask import check_threshold
from pipeline.schema import IMAGE_MODALITIES
from pipeline.window import date_range, window_starts
from preprocessing.catchments import GaugeRecords
from preprocessing.grids import ImageSource, index_source

IMAGE_DTYPES = ("float32", "float16")


@dataclass
class PreprocessConfig:
    precip: str = field(metadata={"path": True, "metavar": "GLOB", "help": "precipitation NetCDF"})
    temp: str = field(metadata={"path": True, "metavar": "GLOB", "help": "temperature NetCDF"})
    soil: str = field(metadata={"path": True, "metavar": "GLOB", "help": "soil moisture NetCDF"})
    catchments: str = field(
        metadata={"path": True, "metavar": "GLOB_OR_FILE", "help": "CAMELS-GB CSVs or a long table"}
    )
    train: str = field(metadata={"metavar": "START:END", "help": "training days, inclusive"})
    out: Path = field(metadata={"path": True, "metavar": "DIR"})
    precip_var: str = "rainfall"
    temp_var: list[str] = field(
        default_factory=lambda: ["tas"], metadata={"help": "tas, or tasmax tasmin (their mean)"}
    )
    soil_var: str = "sm"
    soil_units: str | None = field(default=None, metadata={"help": "expected soil units"})
    attributes: list[str] = field(
        default_factory=list, metadata={"path": True, "metavar": "GLOB", "help": "attribute CSVs"}
    )
    static_attributes: list[str] = field(
        default_factory=lambda: ["area", "elev_mean", "dpsbar"],
        metadata={"help": "attribute columns given to the model"},
    )
    evap_column: str = "pet"
    riverflow_column: str = field(
        default="discharge_spec", metadata={"help": "discharge_spec (mm/day) or discharge_vol"}
    )
    boundaries: str | None = field(
        default=None, metadata={"path": True, "metavar": "FILE", "help": "catchment polygons"}
    )
    val: str | None = field(default=None, metadata={"metavar": "START:END"})
    test: str | None = field(default=None, metadata={"metavar": "START:END"})
    window: int = field(default=90, metadata={"help": "days per window"})
    stride: int = field(default=90, metadata={"help": "days between window starts"})
    patch_size: int = 10
    land_threshold: float = 0.5
    image_dtype: str = field(default="float32", metadata={"choices": IMAGE_DTYPES})
    samples_per_shard: int = field(default=16, metadata={"help": "windows per shard, at most"})
    scheduler: str | None = field(
        default=None, metadata={"metavar": "ADDRESS", "help": "dask.distributed scheduler"}
    )
    workers: int = field(default=2, metadata={"help": "local dask threads"})
    progress: bool = True


# ------------------------------------------------------------------ planning
def parse_period(text: str, name: str) -> tuple[dt.date, dt.date]:
    try:
        a, b = (dt.date.fromisoformat(part.strip()) for part in text.split(":"))
    except ValueError:
        raise ValueError(
            f"--{name} {text!r}: expected START:END as YYYY-MM-DD:YYYY-MM-DD"
        ) from None
    if b < a:
        raise ValueError(f"--{name} {text!r}: the end is before the start")
    return a, b


@dataclass
class Plan:
    cfg: PreprocessConfig
    sources: dict[str, ImageSource]
    catchment_files: list[Path]
    attribute_files: list[Path]
    splits: dict[str, tuple[dt.date, dt.date]]
    dates: list[dt.date]  # every stored day
    grid: PatchGrid

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """(first index, days) of each block of ``window`` days of the store."""
        w = self.cfg.window
        return [(i, min(w, len(self.dates) - i)) for i in range(0, len(self.dates), w)]

    def windows(self, split: str) -> list[dt.date]:
        return window_starts(*self.splits[split], self.cfg.window, self.cfg.stride)

    def units(self, series: GaugeRecords) -> dict[str, str]:
        """Every modality's units in the dataset (images: the project's; series: the columns')."""
        return {n: self.sources[n].units for n in IMAGE_MODALITIES} | series.units

    def fingerprint(self) -> dict[str, Any]:
        settings = {
            k: v
            for k, v in asdict(self.cfg).items()
            if k not in ("scheduler", "workers", "progress", "out")
        }
        files = {
            name: [(f.path.name, f.path.stat().st_size) for f in src.files]
            for name, src in self.sources.items()
        }
        files["catchments"] = [(p.name, p.stat().st_size) for p in self.catchment_files]
        return json.loads(json.dumps({"settings": settings, "files": files}, default=str))


def make_plan(cfg: PreprocessConfig) -> Plan:
    check_threshold(cfg.land_threshold)
    for name in ("window", "stride", "samples_per_shard", "patch_size", "workers"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    splits = {"train": parse_period(cfg.train, "train")}
    for name in ("val", "test"):
        text = getattr(cfg, name)
        if text:
            splits[name] = parse_period(text, name)
    ordered = sorted(splits.items(), key=lambda kv: kv[1][0])
    for (n1, (_, e1)), (n2, (s2, _)) in itertools.pairwise(ordered):
        if s2 <= e1:
            raise ValueError(f"--{n1} and --{n2} overlap: windows must never straddle a split")
    dates = date_range(ordered[0][1][0], max(e for _, (_, e) in ordered))
    sources = {
        "precip": index_source(
            "precip", config.expand_globs(cfg.precip, "--precip"), [cfg.precip_var]
        ),
        "temp": index_source("temp", config.expand_globs(cfg.temp, "--temp"), list(cfg.temp_var)),
        "soil": index_source(
            "soil", config.expand_globs(cfg.soil, "--soil"), [cfg.soil_var], cfg.soil_units
        ),
    }
    ref = sources["temp"]
    for name, src in sources.items():
        if (
            src.y.shape != ref.y.shape
            or src.x.shape != ref.x.shape
            or not (np.allclose(src.y, ref.y) and np.allclose(src.x, ref.x))
        ):
            raise ValueError(
                f"{src.files[0].path}: the {name} grid ({src.y.size} x {src.x.size}) differs from "
                f"the temperature grid in {ref.files[0].path} ({ref.y.size} x {ref.x.size})"
            )
        src.check_covers(dates)
    grid = PatchGrid(int(ref.y.size), int(ref.x.size), cfg.patch_size)
    attribute_files = config.expand_globs(cfg.attributes, "--attributes") if cfg.attributes else []
    if cfg.static_attributes and not attribute_files:
        raise ValueError(
            f"static attributes {cfg.static_attributes} need --attributes files "
            "(or set static_attributes = [] in the config)"
        )
    return Plan(
        cfg,
        sources,
        config.expand_globs(cfg.catchments, "--catchments"),
        attribute_files,
        splits,
        dates,
        grid,
    )
