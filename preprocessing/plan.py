"""What ``hydromae preprocess`` is asked to do, checked before anything is written.

:class:`PreprocessConfig` holds the settings (flags and TOML keys); :func:`make_plan`
indexes the inputs (metadata only) and checks them: the splits (each at least one window
long), the grids (one grid, known units, every requested day present), the catchment files.
``camels_gb = "DIR"`` points at a CAMELS-GB release folder (``preprocessing.camels_gb``)
and fills ``catchments``, ``attributes`` and ``boundaries`` where they are not given. The
:class:`Plan` is what every later step reads, with every input path resolved.
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
from preprocessing import camels_gb
from preprocessing.catchments import GaugeRecords
from preprocessing.gridfile import GridFileError
from preprocessing.grids import ImageSource, index_source

IMAGE_DTYPES = ("float32", "float16")


@dataclass
class PreprocessConfig:
    precip: str = field(metadata={"path": True, "metavar": "GLOB", "help": "precipitation NetCDF"})
    temp: str = field(metadata={"path": True, "metavar": "GLOB", "help": "temperature NetCDF"})
    soil: str = field(metadata={"path": True, "metavar": "GLOB", "help": "soil moisture NetCDF"})
    train: str = field(metadata={"metavar": "START:END", "help": "training days, inclusive"})
    out: Path = field(metadata={"path": True, "metavar": "DIR"})
    catchments: str | None = field(
        default=None,
        metadata={
            "path": True,
            "metavar": "GLOB_OR_FILE",
            "help": "CAMELS-GB CSVs or a long table",
        },
    )
    camels_gb: str | None = field(
        default=None,
        metadata={
            "path": True,
            "metavar": "DIR",
            "help": "a CAMELS-GB release (its top folder or data/): fills catchments, "
            "attributes and boundaries where they are not given",
        },
    )
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
    holdout_catchments: list[str] = field(
        default_factory=list,
        metadata={
            "metavar": "ID_OR_N",
            "help": "gauge ids held out of training (never in a training batch; scored by "
            "hydromae evaluate as ungauged), or one number N: N catchments chosen at random",
        },
    )
    window: int = field(default=90, metadata={"min": 1, "help": "days per window"})
    stride: int = field(default=90, metadata={"min": 1, "help": "days between window starts"})
    patch_size: int = field(default=10, metadata={"min": 1})
    land_threshold: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    image_dtype: str = field(default="float32", metadata={"choices": IMAGE_DTYPES})
    samples_per_shard: int = field(
        default=16, metadata={"min": 1, "help": "windows per shard, at most"}
    )
    scheduler: str | None = field(
        default=None, metadata={"metavar": "ADDRESS", "help": "dask.distributed scheduler"}
    )
    workers: int = field(default=2, metadata={"min": 1, "help": "local dask threads"})
    progress: bool = True


# ------------------------------------------------------------------ planning
class PlanError(ValueError):
    """Settings that cannot be planned: the message names the setting and what to change."""


def parse_period(text: str, name: str) -> tuple[dt.date, dt.date]:
    try:
        a, b = (dt.date.fromisoformat(part.strip()) for part in text.split(":"))
    except ValueError:
        raise PlanError(f"--{name} {text!r}: expected START:END as YYYY-MM-DD:YYYY-MM-DD") from None
    if b < a:
        raise PlanError(f"--{name} {text!r}: the end is before the start")
    return a, b


def check_windows(splits: dict[str, tuple[dt.date, dt.date]], window: int, stride: int) -> None:
    """Refuse splits too short for one window of ``window`` days: they would give no samples.

    The message names every such split with its dates and length, and says what to change.
    """
    short = {
        name: (a, b, (b - a).days + 1)
        for name, (a, b) in splits.items()
        if not window_starts(a, b, window, stride)
    }
    if short:
        listed = "; ".join(f"--{n} {a}:{b} is {days} days" for n, (a, b, days) in short.items())
        shortest = min(days for _, _, days in short.values())
        raise PlanError(
            f"{listed}: shorter than one window of {window} days, so no {'/'.join(short)} "
            f"windows; lengthen {'it' if len(short) == 1 else 'them'} to at least {window} days "
            f"(more input days), or set --window {shortest} or less"
        )


def resolve_inputs(cfg: PreprocessConfig) -> tuple[str, list[str], Path | None]:
    """The catchment series, attribute and boundary inputs: as given, else from ``camels_gb``.

    Returns ``(catchments, attributes, boundaries)``; explicit settings win over the release.
    """
    release = camels_gb.locate(cfg.camels_gb) if cfg.camels_gb else None
    if cfg.catchments:
        catchments = cfg.catchments
    elif release is not None:
        catchments = release.series_glob
    else:
        raise PlanError("no catchment series: set --catchments, or --camels-gb DIR")
    attributes = list(cfg.attributes)
    if not attributes and release is not None:
        attributes = [release.attributes_glob]
    boundaries = Path(cfg.boundaries) if cfg.boundaries else None
    if boundaries is None and release is not None:
        boundaries = release.boundaries
    return catchments, attributes, boundaries


@dataclass
class Plan:
    cfg: PreprocessConfig
    sources: dict[str, ImageSource]
    catchment_files: list[Path]
    attribute_files: list[Path]
    splits: dict[str, tuple[dt.date, dt.date]]
    dates: list[dt.date]  # every stored day
    grid: PatchGrid
    boundaries: Path | None = None  # the boundary file, given or from --camels-gb

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

    def settings(self) -> dict[str, Any]:
        """The settings that decide the dataset's content (as JSON values): a rerun with the
        same ones resumes or keeps a dataset, other ones are refused."""
        settings = {
            k: v
            for k, v in asdict(self.cfg).items()
            if k not in ("scheduler", "workers", "progress", "out")
        }
        return json.loads(json.dumps(settings, default=str))


def make_plan(cfg: PreprocessConfig) -> Plan:
    check_threshold(cfg.land_threshold)
    for name in ("window", "stride", "samples_per_shard", "patch_size", "workers"):
        if getattr(cfg, name) < 1:
            raise PlanError(f"--{name.replace('_', '-')} must be at least 1")
    splits = {"train": parse_period(cfg.train, "train")}
    for name in ("val", "test"):
        text = getattr(cfg, name)
        if text:
            splits[name] = parse_period(text, name)
    ordered = sorted(splits.items(), key=lambda kv: kv[1][0])
    for (n1, (_, e1)), (n2, (s2, _)) in itertools.pairwise(ordered):
        if s2 <= e1:
            raise PlanError(f"--{n1} and --{n2} overlap: windows must never straddle a split")
    check_windows(splits, cfg.window, cfg.stride)
    catchments, attributes, boundaries = resolve_inputs(cfg)
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
            raise GridFileError(
                f"{src.files[0].path}: the {name} grid ({src.y.size} x {src.x.size}) differs from "
                f"the temperature grid in {ref.files[0].path} ({ref.y.size} x {ref.x.size})"
            )
        src.check_covers(dates)
    grid = PatchGrid(int(ref.y.size), int(ref.x.size), cfg.patch_size)
    attribute_files = config.expand_globs(attributes, "--attributes") if attributes else []
    if cfg.static_attributes and not attribute_files:
        raise PlanError(
            f"static attributes {cfg.static_attributes} need --attributes files or "
            "--camels-gb (or set static_attributes = [] in the config)"
        )
    if boundaries is not None and not boundaries.exists():
        raise FileNotFoundError(f"--boundaries: no file {boundaries}")
    return Plan(
        cfg,
        sources,
        config.expand_globs(catchments, "--catchments"),
        attribute_files,
        splits,
        dates,
        grid,
        boundaries,
    )
