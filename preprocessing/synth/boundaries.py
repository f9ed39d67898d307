"""Catchment boundary polygons: dissolve grid cells into rings, write them (EPSG:27700).

As CAMELS-GB ships them, a polygon shapefile with the fields ``ID_STRING`` (text) and ``ID``
(number) (``preprocessing.shapefile``), and also as GeoJSON with ``gauge_id`` and ``area``.
Rings here follow RFC 7946: exterior counter-clockwise, holes clockwise, first point
repeated at the end (the shapefile writer turns them the shapefile's way). Coordinates are
British National Grid metres.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from preprocessing.shapefile import Field, write_polygons
from preprocessing.synth.geography import CELL_M, X0, Y0, Catchment

SHAPE_FIELDS = [Field("ID_STRING", "C", 16), Field("ID", "N", 10)]

Point = tuple[float, float]
Ring = list[Point]

# unit steps by direction: east, north, west, south (counter-clockwise order)
_STEPS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def signed_area(ring: Ring) -> float:
    """Shoelace area of a closed ring (positive when counter-clockwise), in squared units."""
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def _drop_collinear(ring: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Keep only the corners of a closed lattice ring (input without the repeated end point)."""
    n = len(ring)
    keep = []
    for i in range(n):
        a, b, c = ring[i - 1], ring[i], ring[(i + 1) % n]
        if (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) != 0:
            keep.append(b)
    return keep


def cell_rings(cells: np.ndarray, width: int) -> list[list[tuple[int, int]]]:
    """Outline of a set of cells (flat ``row * width + col``) as closed lattice rings.

    Each cell contributes its four edges counter-clockwise in lattice units (corner
    ``(col, row)``); edges shared by two cells cancel; the rest are chained. Where two ways
    are open (cells touching only at a corner) the chain turns right, following the cells
    outside: for a 4-connected set the two outside cells there belong to different
    components (the exterior and a hole), so every ring is simple.
    Returns the rings' corner points, the first repeated at the end.
    """
    rows, cols = np.divmod(np.asarray(cells, dtype=np.int64), width)
    edges: set[tuple[tuple[int, int], tuple[int, int]]] = set()
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        corners = [(c, r), (c + 1, r), (c + 1, r + 1), (c, r + 1)]
        for i in range(4):
            a, b = corners[i], corners[(i + 1) % 4]
            if (b, a) in edges:
                edges.remove((b, a))
            else:
                edges.add((a, b))
    outgoing: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for a, b in sorted(edges):
        outgoing[a].append(b)
    rings = []
    while outgoing:
        start = min(outgoing)
        ring = [start]
        prev_dir = None
        point = start
        while True:
            options = outgoing[point]
            if len(options) == 1 or prev_dir is None:
                nxt = options[0]
            else:  # a pinch: turn right, keeping to the outside cells
                rank = {d: i for i, d in enumerate(_STEPS)}
                right = _STEPS[(rank[prev_dir] - 1) % 4]
                want = (point[0] + right[0], point[1] + right[1])
                nxt = want if want in options else options[0]
            options.remove(nxt)
            if not options:
                del outgoing[point]
            prev_dir = (nxt[0] - point[0], nxt[1] - point[1])
            point = nxt
            if point == start:
                break
            ring.append(point)
        corners = _drop_collinear(ring)
        rings.append([*corners, corners[0]])
    return rings


def cells_polygon(cells: np.ndarray, width: int) -> list[Ring]:
    """GeoJSON Polygon coordinates (BNG m) of a 4-connected set of cells: exterior, then holes."""
    rings = [
        [(X0 - CELL_M / 2 + CELL_M * c, Y0 - CELL_M / 2 + CELL_M * r) for c, r in ring]
        for ring in cell_rings(cells, width)
    ]
    rings.sort(key=lambda ring: -signed_area(ring))  # the one exterior (largest CCW) first
    return rings


def disc_polygon(easting: float, northing: float, area_km2: float, n: int = 64) -> list[Ring]:
    """A counter-clockwise ``n``-gon with the area ``area_km2`` around a point (BNG m)."""
    # a regular n-gon of circumradius R has area n/2 R^2 sin(2 pi / n)
    radius = np.sqrt(area_km2 * 1e6 / (0.5 * n * np.sin(2 * np.pi / n)))
    theta = 2 * np.pi * np.arange(n) / n
    pts = [
        (round(easting + radius * np.cos(t), 1), round(northing + radius * np.sin(t), 1))
        for t in theta
    ]
    return [[*pts, pts[0]]]


def catchment_polygon(catchment: Catchment, width: int) -> list[Ring]:
    """The dissolved outline of the catchment's cells, or a disc when it is under one cell."""
    if catchment.area_km2 < 25.0 and catchment.n_cells == 1:
        return disc_polygon(catchment.easting, catchment.northing, catchment.area_km2)
    return cells_polygon(catchment.cells, width)


def write_geojson(path: Path, catchments: list[Catchment], width: int) -> None:
    """Write a FeatureCollection of Polygons with ``gauge_id`` and ``area`` (km2) properties.

    Carries the legacy GeoJSON 2008 ``crs`` member naming EPSG:27700, which GDAL/pyogrio
    honour, since RFC 7946 itself assumes WGS84.
    """
    features = [
        {
            "type": "Feature",
            "properties": {"gauge_id": c.gauge_id, "area": round(c.area_km2, 2)},
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[float(x), float(y)] for x, y in ring] for ring in catchment_polygon(c, width)
                ],
            },
        }
        for c in catchments
    ]
    collection = {
        "type": "FeatureCollection",
        "name": "CAMELS_GB_catchment_boundaries",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::27700"}},
        "features": features,
    }
    path.write_text(json.dumps(collection, separators=(",", ":")) + "\n", encoding="utf-8")


def write_shapefile(path: Path, catchments: list[Catchment], width: int) -> list[Path]:
    """Write ``path`` (``.shp``) with its ``.shx``, ``.dbf`` and ``.prj`` (British National
    Grid): one Polygon record per catchment, fields ``ID_STRING`` and ``ID`` (the gauge id,
    as text and as a number), as in ``CAMELS_GB_catchment_boundaries.shp``."""
    polygons = [[[np.asarray(r) for r in catchment_polygon(c, width)]] for c in catchments]
    rows = [(str(c.gauge_id), c.gauge_id) for c in catchments]
    return write_polygons(path, polygons, SHAPE_FIELDS, rows)
