"""ESRI shapefiles of polygons, read and written with the standard library and numpy.

Enough of the format for catchment boundaries such as CAMELS-GB's
``CAMELS_GB_catchment_boundaries.shp`` (ESRI Shapefile Technical Description, 1998):

- ``.shp``: a 100-byte header (file code 9994 and the length in 16-bit words, big-endian;
  version 1000, shape type and bounding box, little-endian), then one record per feature: a
  big-endian header (record number from 1, content length in words) and the content,
  little-endian: shape type, bounding box, the number of parts and points, each part's first
  point and the points as (x, y) doubles. Type 5 (Polygon) is read and written; 15
  (PolygonZ) and 25 (PolygonM) are read for their x and y; type 0 is a null shape (no
  geometry).
- ``.shx``: the same header, then each record's offset and content length (big-endian words).
- ``.dbf``: dBASE III: a 32-byte header (record count, header and record lengths), 32-byte
  field descriptors ended by 0x0D, then fixed-width records each led by a deletion flag,
  and 0x1A. Character (C) fields are text; numeric (N, F) fields are numbers written as text.
- ``.prj``: the coordinate reference system as WKT.

Polygon rings are closed ``[K, 2]`` arrays of (x, y). In the file, outer rings run
clockwise and holes counter-clockwise (the reverse of GeoJSON): :func:`write_polygons`
orients them so, and :func:`read_polygons` groups each hole with the outer ring that holds
it. A ``.zip`` holding one ``.shp`` with its ``.dbf`` (as CAMELS-GB ships its boundaries)
is read without unpacking it.
"""

from __future__ import annotations

import itertools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.path import Path as MplPath

FILE_CODE = 9994
VERSION = 1000
NULL_SHAPE = 0
POLYGON = 5
POLYGON_TYPES = (5, 15, 25)  # Polygon, PolygonZ, PolygonM: x and y come first in all three

# OSGB 1936 / British National Grid (EPSG:27700) as ESRI software writes it in a .prj
BRITISH_NATIONAL_GRID_WKT = (
    'PROJCS["British_National_Grid",GEOGCS["GCS_OSGB_1936",DATUM["D_OSGB_1936",'
    'SPHEROID["Airy_1830",6377563.396,299.3249646]],PRIMEM["Greenwich",0.0],'
    'UNIT["Degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
    'PARAMETER["False_Easting",400000.0],PARAMETER["False_Northing",-100000.0],'
    'PARAMETER["Central_Meridian",-2.0],PARAMETER["Scale_Factor",0.9996012717],'
    'PARAMETER["Latitude_Of_Origin",49.0],UNIT["Meter",1.0]]'
)

Ring = np.ndarray  # [K, 2] x, y; closed (first point repeated at the end)
Polygon = list[Ring]  # outer ring first, then its holes
Value = str | int | float | None


class ShapefileError(ValueError):
    """A shapefile that cannot be read: the message names the file and the problem."""


@dataclass(frozen=True)
class Field:
    """A dBASE field: ``kind`` ``"C"`` (text) or ``"N"`` (number, ``decimals`` after the point)."""

    name: str
    kind: str
    length: int
    decimals: int = 0


@dataclass(frozen=True)
class Feature:
    """One record: its attributes and its polygons (an empty list for a null shape)."""

    attributes: dict[str, Value]
    polygons: list[Polygon]


@dataclass(frozen=True)
class Shapefile:
    """What :func:`read_polygons` read: the features in file order and the ``.prj`` WKT."""

    path: Path
    features: list[Feature]
    wkt: str | None


# --------------------------------------------------------------------------- writing


def signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed ring ``[K, 2]``: positive when counter-clockwise."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def _oriented(polygon: Polygon) -> list[np.ndarray]:
    """The rings of one polygon in file orientation: outer clockwise, holes counter-clockwise."""
    out = []
    for i, ring in enumerate(polygon):
        ring = np.asarray(ring, dtype=np.float64)
        clockwise = signed_area(ring) < 0
        out.append(ring if clockwise == (i == 0) else ring[::-1])
    return out


def _shape_record(polygons: list[Polygon]) -> tuple[bytes, tuple[float, float, float, float]]:
    """The content of one Polygon record and its bounding box."""
    rings = [ring for polygon in polygons for ring in _oriented(polygon)]
    points = np.concatenate(rings)
    box = (*points.min(axis=0), *points.max(axis=0))
    starts = np.cumsum([0] + [len(r) for r in rings[:-1]])
    content = struct.pack("<i4d2i", POLYGON, *box, len(rings), len(points))
    content += struct.pack(f"<{len(rings)}i", *starts.tolist())
    content += points.astype("<f8").tobytes()
    return content, box


def _main_header(words: int, box: tuple[float, float, float, float]) -> bytes:
    return struct.pack(">7i", FILE_CODE, 0, 0, 0, 0, 0, words) + struct.pack(
        "<2i8d", VERSION, POLYGON, *box, 0.0, 0.0, 0.0, 0.0
    )


def _dbf(fields: list[Field], rows: list[tuple[Value, ...]]) -> bytes:
    """A dBASE III table (last-update date fixed at 2000-01-01: equal inputs, equal bytes)."""
    record_length = 1 + sum(f.length for f in fields)
    header_length = 32 + 32 * len(fields) + 1
    out = bytearray(struct.pack("<4BIHH20x", 3, 100, 1, 1, len(rows), header_length, record_length))
    for f in fields:
        out += struct.pack(
            "<11sc4xBB14x", f.name.encode("ascii"), f.kind.encode(), f.length, f.decimals
        )
    out += b"\r"
    for row in rows:
        out += b" "
        for f, value in zip(fields, row, strict=True):
            if value is None:
                text = " " * f.length
            elif f.kind == "C":
                text = str(value).ljust(f.length)
            else:
                text = f"{float(value):{f.length}.{f.decimals}f}"
            if len(text) != f.length:
                raise ValueError(f"field {f.name}: {value!r} does not fit in {f.length} characters")
            out += text.encode("ascii")
    out += b"\x1a"
    return bytes(out)


def write_polygons(
    shp: Path,
    polygons: list[list[Polygon]],
    fields: list[Field],
    rows: list[tuple[Value, ...]],
    wkt: str = BRITISH_NATIONAL_GRID_WKT,
) -> list[Path]:
    """Write ``shp`` and its ``.shx``, ``.dbf`` and ``.prj``; return the four paths.

    ``polygons[i]`` is feature i's polygons (each outer ring first, then its holes, closed,
    in any orientation); ``rows[i]`` its attribute values in ``fields`` order. Each file
    appears under its final name only once complete.
    """
    if len(polygons) != len(rows) or not polygons:
        raise ValueError(f"{shp}: need one attribute row per feature and at least one feature")
    records = [_shape_record(p) for p in polygons]
    boxes = np.array([box for _, box in records])
    box = (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))
    body, index, offset = bytearray(), bytearray(), 50  # offsets in 16-bit words
    for number, (content, _) in enumerate(records, start=1):
        words = len(content) // 2
        body += struct.pack(">2i", number, words) + content
        index += struct.pack(">2i", offset, words)
        offset += 4 + words
    files = {
        shp: _main_header(50 + len(body) // 2, box) + bytes(body),
        shp.with_suffix(".shx"): _main_header(50 + len(index) // 2, box) + bytes(index),
        shp.with_suffix(".dbf"): _dbf(fields, rows),
        shp.with_suffix(".prj"): wkt.encode("ascii"),
    }
    for path, data in files.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return list(files)


# --------------------------------------------------------------------------- reading


def _group_rings(rings: list[np.ndarray]) -> list[Polygon]:
    """Polygons from a record's rings: each clockwise ring starts one, holes join the
    outer ring that holds their first point (a hole held by none counts as an outer ring)."""
    outers = [r for r in rings if signed_area(r) <= 0]
    holes = [r for r in rings if signed_area(r) > 0]
    polygons: list[Polygon] = [[r] for r in outers]
    for hole in holes:
        home = next((p for p in polygons if MplPath(p[0]).contains_point(hole[0])), None)
        if home is None:
            polygons.append([hole[::-1]])
        else:
            home.append(hole)
    return polygons


def _read_shp(data: bytes, where: str) -> list[list[Polygon]]:
    if len(data) < 100:
        raise ShapefileError(f"{where}: {len(data)} bytes: too short for a shapefile header")
    code, words = struct.unpack(">i20xi", data[:28])
    version, kind = struct.unpack("<2i", data[28:36])
    if code != FILE_CODE or version != VERSION:
        raise ShapefileError(f"{where}: not a shapefile (file code {code}, version {version})")
    if words * 2 != len(data):
        raise ShapefileError(
            f"{where}: the header says {words * 2} bytes but the file has {len(data)}: "
            "truncated or damaged"
        )
    if kind not in (*POLYGON_TYPES, NULL_SHAPE):
        raise ShapefileError(f"{where}: shape type {kind}; only polygons (type 5) are read")
    shapes, offset = [], 100
    while offset < len(data):
        if offset + 12 > len(data):
            raise ShapefileError(f"{where}: record {len(shapes) + 1} is truncated")
        number, words = struct.unpack(">2i", data[offset : offset + 8])
        content = data[offset + 8 : offset + 8 + 2 * words]
        if len(content) != 2 * words or number != len(shapes) + 1:
            raise ShapefileError(
                f"{where}: record {len(shapes) + 1} is damaged (number {number}, {words} words)"
            )
        (shape,) = struct.unpack("<i", content[:4])
        if shape == NULL_SHAPE:
            shapes.append([])
        elif shape in POLYGON_TYPES and len(content) >= 44:
            n_parts, n_points = struct.unpack("<2i", content[36:44])
            need = 44 + 4 * n_parts + 16 * n_points
            if n_parts < 1 or n_points < 1 or need > len(content):
                raise ShapefileError(
                    f"{where}: record {number}: {n_parts} part(s) and {n_points} point(s) do "
                    f"not fit in its {len(content)} bytes"
                )
            starts = [*np.frombuffer(content, "<i4", n_parts, 44).tolist(), n_points]
            points = np.frombuffer(content, "<f8", 2 * n_points, 44 + 4 * n_parts)
            points = points.reshape(n_points, 2).astype(np.float64)
            if any(b <= a for a, b in itertools.pairwise(starts)) or starts[0] != 0:
                raise ShapefileError(f"{where}: record {number}: its part offsets are damaged")
            rings = [points[a:b] for a, b in itertools.pairwise(starts)]
            shapes.append(_group_rings(rings))
        else:
            raise ShapefileError(
                f"{where}: record {number} has shape type {shape}; only polygons are read"
            )
        offset += 8 + 2 * words
    return shapes


def _read_dbf(data: bytes, where: str) -> list[dict[str, Value]]:
    if len(data) < 33:
        raise ShapefileError(f"{where}: {len(data)} bytes: too short for a dBASE table")
    count, header_length, record_length = struct.unpack("<IHH", data[4:12])
    fields, pos = [], 32
    while pos < header_length - 1 and data[pos] != 0x0D:
        name, kind, length, decimals = struct.unpack("<11sc4xBB14x", data[pos : pos + 32])
        fields.append(
            Field(name.split(b"\0")[0].decode("latin-1"), kind.decode(), length, decimals)
        )
        pos += 32
    if header_length + count * record_length > len(data) or not fields:
        raise ShapefileError(
            f"{where}: the header promises {count} records of {record_length} bytes, but the "
            f"file has {len(data)} bytes: truncated or damaged"
        )
    rows = []
    for i in range(count):
        record = data[header_length + i * record_length : header_length + (i + 1) * record_length]
        pos, row = 1, {}
        for f in fields:
            raw = record[pos : pos + f.length]
            pos += f.length
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                text = raw.decode("latin-1").strip()
            row[f.name] = _value(text, f, where, i)
        rows.append(row)
    return rows


def _value(text: str, field: Field, where: str, row: int) -> Value:
    if field.kind not in ("N", "F"):
        return text
    if not text or set(text) == {"*"}:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ShapefileError(
            f"{where}: field {field.name!r}, record {row + 1}: {text!r} is not a number"
        ) from None
    return int(number) if field.decimals == 0 and number.is_integer() else number


def _members(path: Path) -> tuple[bytes, bytes, str | None, str]:
    """The ``.shp`` and ``.dbf`` bytes, the ``.prj`` text and a name for messages."""
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                shps = [n for n in names if n.lower().endswith(".shp")]
                if len(shps) != 1:
                    raise ShapefileError(f"{path}: holds {len(shps)} .shp files; expected one")
                stem = shps[0][:-4]
                by_suffix = {n[len(stem) :].lower(): n for n in names if n.startswith(stem)}
                if ".dbf" not in by_suffix:
                    raise ShapefileError(f"{path}: {shps[0]} has no .dbf beside it")
                prj = by_suffix.get(".prj")
                return (
                    archive.read(shps[0]),
                    archive.read(by_suffix[".dbf"]),
                    archive.read(prj).decode("latin-1") if prj else None,
                    f"{path}:{shps[0]}",
                )
        except (OSError, zipfile.BadZipFile) as err:
            raise ShapefileError(f"{path}: cannot read it as a zip archive: {err}") from None
    dbf, prj = path.with_suffix(".dbf"), path.with_suffix(".prj")
    if not dbf.exists():
        raise ShapefileError(f"{path}: its attribute table {dbf.name} is missing")
    try:
        return (
            path.read_bytes(),
            dbf.read_bytes(),
            prj.read_text(encoding="latin-1") if prj.exists() else None,
            str(path),
        )
    except OSError as err:
        raise ShapefileError(f"{path}: cannot read it: {err}") from None


def read_polygons(path: str | Path) -> Shapefile:
    """Read a polygon shapefile (``.shp`` with its ``.dbf``, or a ``.zip`` holding them).

    Raises :class:`ShapefileError` naming the file for anything that is not a polygon
    shapefile, is truncated, or whose ``.shp`` and ``.dbf`` disagree on the record count.
    """
    path = Path(path)
    shp, dbf, wkt, where = _members(path)
    shapes = _read_shp(shp, where)
    rows = _read_dbf(dbf, f"{where[:-4]}.dbf")
    if len(rows) != len(shapes):
        raise ShapefileError(
            f"{where}: {len(shapes)} shapes but {len(rows)} rows in its .dbf: the two files "
            "do not belong together"
        )
    features = [Feature(row, shape) for row, shape in zip(rows, shapes, strict=True)]
    return Shapefile(path, features, wkt)
