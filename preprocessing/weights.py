"""Catchment to grid: catchment c's area share per patch (``catchment_patch_weight[c, patch]``)
and per grid cell (``catchment_pixel_weight[c][patch][pixel]``).

From boundary polygons where the user has them, or else from a disc of the catchment's area
around its gauge. Areas are counted on a sub-grid of ``subdivisions x subdivisions`` points
per grid cell (1 km points on the 5 km grid), so a row sums to the share of the catchment
that lies on the grid (1 for a catchment inside it).

Boundary files are read natively when they are GeoJSON, or a polygon shapefile (``.shp``
with its ``.dbf``, or the ``.zip`` that holds them, as CAMELS-GB ships
``CAMELS_GB_catchment_boundaries``; ``preprocessing.shapefile``); other formats go through
the optional ``geo`` extra (geopandas). In every format a feature's gauge is its
``gauge_id`` attribute, else ``ID_STRING``, else ``ID`` (CAMELS-GB's fields).

**Features without geometry.** RFC 7946 allows a feature whose ``geometry`` is ``null`` (and
a shapefile may hold a null shape). Such a feature naming a gauge is refused with a
:class:`BoundaryError` ("no geometry") rather than skipped: a boundary file is given to
place the catchments exactly, and a feature that names a gauge but has no polygon is almost
always a broken export, so falling back to a disc without a word would change that gauge's
weights behind the user's back. A gauge that should use the disc is simply left out of the
file (gauges without a feature fall back to a disc, as documented).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.path import Path as MplPath

from pipeline.grid import PatchGrid
from preprocessing.shapefile import read_polygons

Ring = np.ndarray  # [K, 2] easting, northing in metres
Polygon = list[Ring]  # outer ring first, then holes
BNG = "EPSG:27700"
GAUGE_KEYS = ("gauge_id", "ID_STRING", "ID")  # in order of preference


class BoundaryError(ValueError):
    """Bad boundary input: names the file, the gauge and the problem."""


def read_boundaries(path: Path) -> dict[str, list[Polygon]]:
    """Polygons per gauge id in British National Grid metres.

    Raises :class:`BoundaryError` (or ``preprocessing.shapefile.ShapefileError`` for a
    damaged shapefile) naming the file, and the gauge where there is one.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return _read_geojson(path)
    if suffix in (".shp", ".zip"):
        return _read_shapefile(path)
    return _read_with_geopandas(path)


def gauge_id(attributes: Mapping[str, Any] | None, where: str) -> str:
    """The gauge id of a feature: ``gauge_id``, else ``ID_STRING``, else ``ID``.

    A whole number stored as a float (``1001.0`` from a numeric field) gives ``"1001"``.
    """
    if not isinstance(attributes, Mapping):
        raise BoundaryError(
            f"{where} has no attributes ({attributes!r}); it needs one of {list(GAUGE_KEYS)}"
        )
    for key in GAUGE_KEYS:
        value = attributes.get(key)
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        if text:
            return text
    raise BoundaryError(f"{where} has none of the attributes {list(GAUGE_KEYS)}")


def _collect(
    path: Path, features: list[tuple[str, list[Polygon] | None]]
) -> dict[str, list[Polygon]]:
    """``{gauge: polygons}`` from ``(gauge, polygons or None)`` pairs, refusing a gauge
    without geometry or one named twice."""
    out: dict[str, list[Polygon]] = {}
    for gid, polygons in features:
        if not polygons:
            raise BoundaryError(
                f"{path}: gauge {gid}: the feature has no geometry (null); give it its polygon, "
                "or remove the feature to fall back to a disc of the catchment's area"
            )
        if gid in out:
            raise BoundaryError(f"{path}: gauge {gid} has more than one feature")
        out[gid] = polygons
    return out


def _read_geojson(path: Path) -> dict[str, list[Polygon]]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BoundaryError(f"{path}: cannot read it as GeoJSON: {err}") from None
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list):
        raise BoundaryError(f"{path}: not a GeoJSON FeatureCollection (no 'features' list)")
    crs = doc.get("crs") or {}
    name = str((crs.get("properties") or {}).get("name", "")) if isinstance(crs, dict) else ""
    pairs = []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise BoundaryError(f"{path}: feature {i} is not a GeoJSON object")
        gid = gauge_id(feature.get("properties"), f"{path}: feature {i}")
        geometry = feature.get("geometry")
        pairs.append((gid, None if geometry is None else _polygons(geometry, path, gid)))
    out = _collect(path, pairs)
    if not name.endswith("27700"):  # RFC 7946 GeoJSON is longitude/latitude
        out = _to_bng(out, "EPSG:4326")
    return out


def _read_shapefile(path: Path) -> dict[str, list[Polygon]]:
    """A polygon shapefile; coordinates in its ``.prj``'s CRS (British National Grid when
    it has none, as CAMELS-GB's), transformed to British National Grid."""
    shapes = read_polygons(path)
    pairs = [
        (gauge_id(f.attributes, f"{path}: record {i + 1}"), f.polygons)
        for i, f in enumerate(shapes.features)
    ]
    out = _collect(path, pairs)
    if shapes.wkt is None:
        return out
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_wkt(shapes.wkt)
    except CRSError as err:
        raise BoundaryError(f"{path}: its .prj is not a coordinate system: {err}") from None
    return out if crs.to_epsg(min_confidence=70) == 27700 else _to_bng(out, crs)


def _read_with_geopandas(path: Path) -> dict[str, list[Polygon]]:
    try:
        import geopandas
    except ImportError:
        raise BoundaryError(
            f"{path}: reading this format needs the optional extra: pip install 'hydromae[geo]' "
            "(or convert it to GeoJSON)"
        ) from None
    frame = geopandas.read_file(path)
    if frame.crs is not None:
        frame = frame.to_crs(BNG)
    columns = [c for c in frame.columns if c != frame.geometry.name]
    pairs = []
    for i, (row, geom) in enumerate(
        zip(frame[columns].to_dict("records"), frame.geometry, strict=True)
    ):
        gid = gauge_id(row, f"{path}: feature {i}")
        empty = geom is None or geom.is_empty
        pairs.append((gid, None if empty else _polygons(geom.__geo_interface__, path, gid)))
    return _collect(path, pairs)


def _to_bng(polygons: dict[str, list[Polygon]], source: Any) -> dict[str, list[Polygon]]:
    from pyproj import Transformer

    to_bng = Transformer.from_crs(source, BNG, always_xy=True)
    return {
        gid: [[np.column_stack(to_bng.transform(r[:, 0], r[:, 1])) for r in poly] for poly in polys]
        for gid, polys in polygons.items()
    }


def _polygons(geometry: Any, path: Path, gid: str) -> list[Polygon]:
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if kind == "Polygon":
        parts = [geometry.get("coordinates")]
    elif kind == "MultiPolygon":
        parts = geometry.get("coordinates")
    else:
        raise BoundaryError(f"{path}: gauge {gid}: geometry {kind!r} is not a (Multi)Polygon")
    try:
        polygons = [[np.asarray(ring, dtype=np.float64)[:, :2] for ring in part] for part in parts]
    except (TypeError, ValueError, IndexError):
        polygons = []
    if not polygons or any(not p or any(r.ndim != 2 or len(r) < 3 for r in p) for p in polygons):
        raise BoundaryError(
            f"{path}: gauge {gid}: its {kind} coordinates are not rings of [x, y] points"
        )
    return polygons


def _inside(points: np.ndarray, polygons: list[Polygon]) -> np.ndarray:
    inside = np.zeros(len(points), dtype=bool)
    for outer, *holes in polygons:
        here = MplPath(outer).contains_points(points)
        for hole in holes:
            here &= ~MplPath(hole).contains_points(points)
        inside |= here
    return inside


PixelShares = dict[int, dict[int, float]]  # {patch: {pixel in the patch: area share}}


def patch_totals(cells: list[PixelShares], num_patches: int) -> np.ndarray:
    """``[C, num_patches]`` float64: each catchment's area share per patch, the sum of its
    :func:`pixel_weights` over the patch's pixels."""
    weights = np.zeros((len(cells), num_patches), dtype=np.float64)
    for c, shares in enumerate(cells):
        for patch, pixels in shares.items():
            weights[c, patch] = sum(pixels.values())
    return weights


def pixel_weights(
    grid: PatchGrid,
    y: np.ndarray,
    x: np.ndarray,
    gauge_ids: list[str],
    polygons: dict[str, list[Polygon]] | None,
    gauges: dict[str, tuple[float, float, float]] | None,
    subdivisions: int = 5,
) -> list[PixelShares]:
    """Per catchment, the share of its area in each grid cell, as ``{patch: {pixel: share}}``
    (``pixel = row_in_patch * p + col_in_patch``, the order of ``pipeline.grid.patchify``;
    only cells it covers): what a catchment average at the grid's resolution weighs, as
    CAMELS-GB's catchment rainfall is the mean over the catchment's own cells.

    ``y``, ``x``: ascending cell-centre coordinates (m). ``polygons``: boundaries per gauge;
    gauges without one fall back to ``gauges[gid] = (easting, northing, area_km2)``, a disc
    of that area around the gauge.
    """
    dy, dx = float(y[1] - y[0]), float(x[1] - x[0])
    y_edge, x_edge = float(y[0]) - dy / 2, float(x[0]) - dx / 2
    p = grid.patch_size
    out: list[PixelShares] = []
    for gid in gauge_ids:
        polys = (polygons or {}).get(gid)
        if polys is not None:
            outline = np.concatenate([p[0] for p in polys])
            lo, hi = outline.min(axis=0), outline.max(axis=0)
            centre = outline.mean(axis=0)
        elif gauges is not None and gid in gauges:
            e, n, area = gauges[gid]
            if not (np.isfinite(e) and np.isfinite(n) and np.isfinite(area) and area > 0):
                raise BoundaryError(
                    f"gauge {gid}: needs a finite gauge_easting, gauge_northing and a positive "
                    f"area for its disc, got {e}, {n}, {area}"
                )
            radius = float(np.sqrt(area * 1e6 / np.pi))
            centre = np.array([e, n])
            lo, hi = centre - radius, centre + radius
        else:
            raise BoundaryError(
                f"gauge {gid}: no boundary polygon and no gauge_easting/gauge_northing/area "
                "attributes to draw a disc"
            )
        step_x, step_y = dx / subdivisions, dy / subdivisions
        px = np.arange(np.floor((lo[0] - x_edge) / step_x), np.ceil((hi[0] - x_edge) / step_x))
        py = np.arange(np.floor((lo[1] - y_edge) / step_y), np.ceil((hi[1] - y_edge) / step_y))
        gx, gy = np.meshgrid(x_edge + (px + 0.5) * step_x, y_edge + (py + 0.5) * step_y)
        points = np.column_stack([gx.ravel(), gy.ravel()])
        if polys is not None:
            inside = _inside(points, polys)
        else:
            inside = np.hypot(points[:, 0] - centre[0], points[:, 1] - centre[1]) <= radius
        points = points[inside]
        if len(points) == 0:  # smaller than one sub-cell: all of it where its centre is
            points = centre[None, :]
        col = np.floor((points[:, 0] - x_edge) / dx).astype(np.int64)
        row = np.floor((points[:, 1] - y_edge) / dy).astype(np.int64)
        on_grid = (row >= 0) & (row < grid.height) & (col >= 0) & (col < grid.width)
        row, col = row[on_grid], col[on_grid]
        cell = ((row // p) * grid.cols + col // p) * p * p + (row % p) * p + col % p
        cells, counts = np.unique(cell, return_counts=True)
        shares: PixelShares = {}
        for at, n in zip(cells.tolist(), counts.tolist(), strict=True):
            shares.setdefault(at // (p * p), {})[at % (p * p)] = n / len(points)
        out.append(shares)
    return out
