"""Catchment to grid: ``catchment_patch_weight[c, patch]``, catchment c's area share per patch.

From boundary polygons where the user has them (GeoJSON natively; shapefiles and other
formats through the optional ``geo`` extra), or else from a disc of the catchment's area
around its gauge. Areas are counted on a sub-grid of ``subdivisions x subdivisions`` points
per grid cell (1 km points on the 5 km grid), so a row sums to the share of the catchment
that lies on the grid (1 for a catchment inside it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.path import Path as MplPath

from pipeline.grid import PatchGrid

Ring = np.ndarray  # [K, 2] easting, northing in metres
Polygon = list[Ring]  # outer ring first, then holes


class BoundaryError(ValueError):
    """Bad boundary input: names the file, the gauge and the problem."""


def read_boundaries(path: Path) -> dict[str, list[Polygon]]:
    """Polygons per ``gauge_id`` in British National Grid metres."""
    if path.suffix.lower() in (".geojson", ".json"):
        return _read_geojson(path)
    try:
        import geopandas
    except ImportError:
        raise BoundaryError(
            f"{path}: reading this format needs the optional extra: pip install 'hydromae[geo]' "
            "(or convert it to GeoJSON)"
        ) from None
    frame = geopandas.read_file(path)
    if "gauge_id" not in frame.columns:
        raise BoundaryError(f"{path}: no 'gauge_id' attribute")
    if frame.crs is not None:
        frame = frame.to_crs("EPSG:27700")
    return {
        str(gid): _polygons(geom.__geo_interface__, path, str(gid))
        for gid, geom in zip(frame["gauge_id"], frame.geometry, strict=True)
    }


def _read_geojson(path: Path) -> dict[str, list[Polygon]]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BoundaryError(f"{path}: cannot read it as GeoJSON: {err}") from None
    crs = str(doc.get("crs", {}).get("properties", {}).get("name", ""))
    out: dict[str, list[Polygon]] = {}
    for feature in doc.get("features", []):
        gid = feature.get("properties", {}).get("gauge_id")
        if gid is None:
            raise BoundaryError(f"{path}: a feature has no 'gauge_id' property")
        out[str(gid)] = _polygons(feature["geometry"], path, str(gid))
    if not crs.endswith("27700"):  # RFC 7946 GeoJSON is longitude/latitude
        out = {gid: [_to_bng(poly) for poly in polys] for gid, polys in out.items()}
    return out


def _to_bng(poly: Polygon) -> Polygon:
    from pyproj import Transformer

    to_bng = Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)
    return [np.column_stack(to_bng.transform(r[:, 0], r[:, 1])) for r in poly]


def _polygons(geometry: dict, path: Path, gid: str) -> list[Polygon]:
    kind = geometry.get("type")
    if kind == "Polygon":
        parts = [geometry["coordinates"]]
    elif kind == "MultiPolygon":
        parts = geometry["coordinates"]
    else:
        raise BoundaryError(f"{path}: gauge {gid}: geometry {kind!r} is not a (Multi)Polygon")
    return [[np.asarray(ring, dtype=np.float64)[:, :2] for ring in part] for part in parts]


def _inside(points: np.ndarray, polygons: list[Polygon]) -> np.ndarray:
    inside = np.zeros(len(points), dtype=bool)
    for outer, *holes in polygons:
        here = MplPath(outer).contains_points(points)
        for hole in holes:
            here &= ~MplPath(hole).contains_points(points)
        inside |= here
    return inside


def patch_weights(
    grid: PatchGrid,
    y: np.ndarray,
    x: np.ndarray,
    gauge_ids: list[str],
    polygons: dict[str, list[Polygon]] | None,
    gauges: dict[str, tuple[float, float, float]] | None,
    subdivisions: int = 5,
) -> np.ndarray:
    """``[C, N_patches]`` float64: the share of each catchment's area in each patch.

    ``y``, ``x``: ascending cell-centre coordinates (m). ``polygons``: boundaries per gauge;
    gauges without one fall back to ``gauges[gid] = (easting, northing, area_km2)``, a disc
    of that area around the gauge.
    """
    dy, dx = float(y[1] - y[0]), float(x[1] - x[0])
    y_edge, x_edge = float(y[0]) - dy / 2, float(x[0]) - dx / 2
    weights = np.zeros((len(gauge_ids), grid.num_patches), dtype=np.float64)
    for c, gid in enumerate(gauge_ids):
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
        patch = (row[on_grid] // grid.patch_size) * grid.cols + col[on_grid] // grid.patch_size
        weights[c] = np.bincount(patch, minlength=grid.num_patches) / len(points)
    return weights
