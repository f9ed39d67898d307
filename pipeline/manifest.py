"""The dataset's manifest, typed: one frozen :class:`Manifest`, read, validated and built here.

``manifest.json`` (``docs/dataset.md``) says what a dataset directory holds: geometry,
splits, statistics, catchments, every shard with its checksum. It is written last by
``hydromae preprocess`` and read by everything else, always through this module: the JSON
is parsed into typed, frozen dataclasses (every key checked, errors naming the file and the
key), and the objects other modules need are built here once (``patch_grid``,
``window_shape``, ``catchment_table``, ``normalizer``). ``to_json`` gives the canonical
bytes, so a rerun writes a byte-identical manifest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.catchment import CatchmentTable
from pipeline.files import atomic_write, encode_json
from pipeline.grid import PatchGrid
from pipeline.location import Retry, is_url, join, read_location
from pipeline.normalize import Normalizer, VariableStats
from pipeline.schema import FORMAT_VERSION, MANIFEST, SPLITS
from pipeline.shard import WindowShape
from pipeline.window import window_starts


class ManifestError(ValueError):
    """A manifest that cannot be read or does not hold what this hydromae needs."""


@dataclass(frozen=True)
class GridInfo:
    height: int  # H cells
    width: int  # W cells
    patch_size: int  # p
    patch_rows: int  # H / p
    patch_cols: int  # W / p
    crs: str
    y: tuple[float, float]  # first cell centre and step, metres (y ascending)
    x: tuple[float, float]

    def patch_grid(self) -> PatchGrid:
        return PatchGrid(self.height, self.width, self.patch_size)


@dataclass(frozen=True)
class LandMaskInfo:
    file: str
    land_cells: int
    patches: int
    fully_ocean: int
    partially_land: int
    fully_land: int
    valid: int
    land_threshold: float


@dataclass(frozen=True)
class VariableInfo:
    units: str
    kind: str  # "image" or "vector"
    source: str | list[str]  # file variable(s) or column
    dtype: str  # as stored


@dataclass(frozen=True)
class Period:
    start: dt.date
    end: dt.date
    days: int


@dataclass(frozen=True)
class SplitInfo:
    start: dt.date
    end: dt.date  # inclusive
    windows: int
    samples: int  # windows x catchments
    window_starts: tuple[dt.date, ...]


@dataclass(frozen=True)
class CatchmentInfo:
    ids: tuple[str, ...]  # [C] gauge ids, in the store's order
    static_attributes: tuple[str, ...]  # [A]
    static: tuple[tuple[float | None, ...], ...]  # [C][A], physical units, None = missing
    catchment_patch_weight: tuple[dict[int, float], ...]  # [C] {patch: area share}
    # [C] {patch: {pixel: area share}}: the shares per grid cell, pixel = row * p + col in
    # the patch; a patch's pixels sum to its catchment_patch_weight
    catchment_pixel_weight: tuple[dict[int, dict[int, float]], ...]
    boundaries: str  # "polygons" or "discs"
    holdout: tuple[str, ...]  # ids held out of training (never in a training batch)


@dataclass(frozen=True)
class ShardEntry:
    name: str
    split: str
    samples: int  # windows
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Everything ``manifest.json`` holds, typed (field names are the JSON keys)."""

    format_version: int
    software: dict[str, str]
    settings: dict[str, Any]  # the preprocessing settings that made the dataset
    inputs: dict[str, tuple[tuple[str, int], ...]]  # input files per group: (name, bytes)
    sources: dict[str, Any]  # provenance of the inputs
    grid: GridInfo
    land_mask: LandMaskInfo
    land_threshold: float
    valid_patch_indices: tuple[int, ...]  # [N_valid] ascending: the shards' patches
    store_patch_indices: tuple[int, ...]  # [N_store] ascending: every patch with land
    variables: dict[str, VariableInfo]
    normalization: dict[str, VariableStats]
    period: Period
    splits: dict[str, SplitInfo]
    window: int  # days
    stride: int  # days
    catchments: CatchmentInfo
    shards: tuple[ShardEntry, ...]

    # ------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        """Check a parsed manifest key by key; a :class:`ManifestError` names the key."""
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{where}: format_version {version!r}, this hydromae reads {FORMAT_VERSION}: "
                "run hydromae preprocess again to write the dataset in this format"
            )
        manifest = _build(cls, data, where, "")
        unknown = set(manifest.splits) - set(SPLITS)
        if unknown:
            raise ManifestError(f"{where}: key 'splits': unknown split(s) {sorted(unknown)}")
        return manifest

    @classmethod
    def parse(cls, data: str | bytes, where: str) -> Manifest:
        try:
            parsed = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ManifestError(f"{where}: not valid JSON: {err}") from None
        return cls.from_dict(parsed, where)

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """The manifest of a finished dataset directory; a clear error for anything else."""
        path = Path(directory) / MANIFEST
        if not path.exists():
            raise FileNotFoundError(
                f"{directory}: no {MANIFEST}: not a hydromae dataset, or its preprocessing has "
                "not finished (run hydromae preprocess again to complete it)"
            )
        return cls.parse(path.read_bytes(), str(path))

    @classmethod
    def load(cls, source: str | Path, retry: Retry | None = None) -> Manifest:
        """The manifest of a dataset directory or of a dataset served at a URL."""
        if not is_url(str(source)):
            return cls.read(source)
        location = join(str(source), MANIFEST)
        return cls.parse(read_location(location, retry), location)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form, exactly as ``manifest.json`` holds it."""
        return _plain(self)

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys): the same manifest always writes the same bytes."""
        return encode_json(self.to_dict())

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST
        atomic_write(path, self.to_json())
        return path

    # ------------------------------------------------------------ what others build from it
    def patch_grid(self) -> PatchGrid:
        return self.grid.patch_grid()

    def window_shape(self) -> WindowShape:
        """What a well-formed window of this dataset holds (shard reader's check)."""
        return WindowShape(
            self.window,
            len(self.valid_patch_indices),
            self.grid.patch_size,
            len(self.catchments.ids),
        )

    def catchment_table(self) -> CatchmentTable:
        """Ids, static attributes ``[C, A]``, patch weights ``[C, N_valid]`` and pixel
        weights ``[C, N_valid, P]`` as arrays."""
        c = self.catchments
        valid = {p: i for i, p in enumerate(self.valid_patch_indices)}
        weight = np.zeros((len(c.ids), len(valid)), dtype=np.float32)
        for row, shares in enumerate(c.catchment_patch_weight):
            for patch, share in shares.items():
                if patch in valid:
                    weight[row, valid[patch]] = share
        pixels = np.zeros((*weight.shape, self.grid.patch_size**2), dtype=np.float32)
        for row, patches in enumerate(c.catchment_pixel_weight):
            for patch, cells in patches.items():
                if patch in valid:
                    pixels[row, valid[patch], list(cells)] = list(cells.values())
        static = np.array(
            [[np.nan if v is None else v for v in row] for row in c.static], dtype=np.float32
        ).reshape(len(c.ids), len(c.static_attributes))
        return CatchmentTable(list(c.ids), static, weight, pixels)

    def normalizer(self) -> Normalizer:
        return Normalizer(self.normalization)

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise ValueError(f"the dataset has no {name!r} split; it has {sorted(self.splits)}")
        return self.splits[name]

    def window_starts(self, split: str, stride: int = 0) -> list[dt.date]:
        """The split's windows: the manifest's, or (``stride`` > 0) one every ``stride`` days."""
        info = self.split(split)
        if stride <= 0:
            return list(info.window_starts)
        return window_starts(info.start, info.end, self.window, stride)

    def split_shards(self, split: str) -> list[ShardEntry]:
        return [s for s in self.shards if s.split == split]

    def store_positions(self) -> np.ndarray:
        """``[N_valid]`` positions of the valid patches among the store's patches."""
        return np.searchsorted(self.store_patch_indices, self.valid_patch_indices)


# ------------------------------------------------------------------ typed <-> JSON
def _build(tp: Any, value: Any, where: str, key: str) -> Any:
    """``value`` (parsed JSON) as type ``tp``; a ManifestError names ``where`` and ``key``."""

    def fail(expected: str) -> ManifestError:
        shown = json.dumps(value)[:60] if _jsonable(value) else repr(value)[:60]
        return ManifestError(f"{where}: key {key or '(top)'!r}: expected {expected}, got {shown}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail("an object")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        missing = [n for n in names if n not in value]
        if missing:
            raise ManifestError(f"{where}: key {_join(key, missing[0])!r} is missing")
        extra = sorted(set(value) - set(names))
        if extra:
            raise ManifestError(f"{where}: key {_join(key, extra[0])!r} is not a manifest key")
        built = {n: _build(hints[n], value[n], where, _join(key, n)) for n in names}
        try:
            return tp(**built)
        except (TypeError, ValueError) as err:
            raise ManifestError(f"{where}: key {key or '(top)'!r}: {err}") from None
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _build(option, value, where, key)
            except ManifestError:
                continue
        raise fail(" or ".join(_name(a) for a in typing.get_args(tp)))
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f"a list of {len(args)}")
        return tuple(
            _build(a, v, where, f"{key}[{i}]")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise fail("a list")
        return [_build(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, inner = typing.get_args(tp)
        if not isinstance(value, dict):
            raise fail("an object")
        out = {}
        for k, v in value.items():
            if key_type is int:
                try:
                    typed_key: Any = int(k)
                except ValueError:
                    raise ManifestError(f"{where}: key {_join(key, k)!r}: not an integer") from None
            else:
                typed_key = k
            out[typed_key] = _build(inner, v, where, _join(key, k))
        return out
    if tp is type(None):
        if value is not None:
            raise fail("null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if tp is dt.date:
        try:
            return dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            raise fail("a date YYYY-MM-DD") from None
    raise TypeError(f"manifest type {tp!r} has no reader")  # a programming error


def _plain(value: Any) -> Any:
    """The JSON-ready form of a typed value (the inverse of :func:`_build`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _join(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


def _name(tp: Any) -> str:
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
