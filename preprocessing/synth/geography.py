"""Synthetic geography on the HadUK-Grid 5 km grid: coordinates, land, elevation, catchments.

Grid convention (as HadUK-Grid stores it): arrays are ``[y, x]`` = ``[290, 180]``, row 0
the southernmost (cell centre y = -197500 m), column 0 the westernmost (x = -197500 m),
5000 m cells in British National Grid metres (EPSG:27700).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from pyproj import Transformer
from scipy import ndimage

from pipeline.landmask import load_land_mask, reference_mask_path

CELL_M = 5000.0
CELL_KM2 = 25.0
X0 = -197500.0  # centre of column 0, m
Y0 = -197500.0  # centre of row 0, m
HEIGHT, WIDTH = 290, 180

# Upland massifs as gaussian bumps: (easting m, northing m, sigma_x km, sigma_y km, height m)
MASSIFS: tuple[tuple[float, float, float, float, float], ...] = (
    (255_000, 770_000, 50, 35, 480),  # Grampians / Lochaber (Ben Nevis)
    (300_000, 800_000, 28, 22, 380),  # Cairngorms
    (215_000, 880_000, 40, 65, 420),  # North-west Highlands
    (265_000, 840_000, 30, 25, 200),  # Monadhliath
    (290_000, 610_000, 55, 25, 380),  # Southern Uplands
    (330_000, 510_000, 18, 18, 600),  # Lake District
    (385_000, 470_000, 22, 90, 450),  # Pennines
    (410_000, 375_000, 18, 20, 300),  # Peak District
    (465_000, 495_000, 22, 14, 280),  # North York Moors
    (265_000, 350_000, 18, 20, 650),  # Snowdonia
    (280_000, 270_000, 35, 40, 420),  # Cambrian Mountains
    (300_000, 220_000, 30, 14, 450),  # Brecon Beacons
    (260_000, 78_000, 14, 12, 380),  # Dartmoor
    (280_000, 138_000, 15, 10, 300),  # Exmoor
)


@dataclass(frozen=True)
class Geography:
    """Static fields of the synthetic Great Britain, all ``[y, x]`` = ``[H, W]``.

    ``x``, ``y``: cell-centre eastings ``[W]`` and northings ``[H]`` (m); ``lat``, ``lon``:
    cell-centre WGS84 degrees ``[H, W]``; ``land``: bool, True = land (the packaged mask);
    ``elevation``: metres above sea level (0 over sea); ``elevation_smooth``: the same
    smoothed (sigma 10 km), the field that steers rain.
    """

    x: np.ndarray
    y: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    land: np.ndarray
    elevation: np.ndarray
    elevation_smooth: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.land.shape

    @property
    def easting(self) -> np.ndarray:
        """``[H, W]`` cell-centre eastings, m."""
        return np.broadcast_to(self.x[None, :], self.shape)

    @property
    def northing(self) -> np.ndarray:
        """``[H, W]`` cell-centre northings, m."""
        return np.broadcast_to(self.y[:, None], self.shape)


def bng_to_wgs84() -> Transformer:
    return Transformer.from_crs("EPSG:27700", "EPSG:4326", always_xy=True)


def wgs84_to_bng() -> Transformer:
    return Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)


def grid_axes(height: int = HEIGHT, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre northings ``[H]`` and eastings ``[W]`` in metres (float64)."""
    y = Y0 + CELL_M * np.arange(height, dtype=np.float64)
    x = X0 + CELL_M * np.arange(width, dtype=np.float64)
    return y, x


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma_cells: float
) -> np.ndarray:
    """Gaussian noise smoothed with a gaussian kernel, rescaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_cells, mode="wrap")
    return field / field.std()


def make_elevation(
    land: np.ndarray, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Synthetic elevation ``[H, W]`` in m: massifs on rolling lowlands, 0 at the coast.

    ``E = taper(d) * (B (1 + 0.3 n1)_+ + 70 exp(0.6 n2 - 0.18))`` with ``B`` the sum of the
    gaussian massifs ``h_k exp(-dx^2 / 2 sx^2 - dy^2 / 2 sy^2)``, ``n1``, ``n2`` unit
    gaussian noise smoothed over 15 and 25 km, and ``taper(d) = 1 - exp(-(d - 1) / 3)``
    for the distance ``d`` in cells to the nearest sea cell (0 on coastal cells).
    """
    ex, ny = np.meshgrid(x, y)
    bumps = np.zeros(land.shape)
    for cx, cy, sx, sy, h in MASSIFS:
        bumps += h * np.exp(
            -0.5 * (((ex - cx) / (sx * 1000.0)) ** 2 + ((ny - cy) / (sy * 1000.0)) ** 2)
        )
    rugged = np.maximum(1.0 + 0.3 * smooth_noise(rng, land.shape, 3.0), 0.0)
    rolling = 70.0 * np.exp(0.6 * smooth_noise(rng, land.shape, 5.0) - 0.18)
    raw = bumps * rugged + rolling
    dist = ndimage.distance_transform_edt(land)  # cells to nearest sea cell; 1 on the coast
    taper = 1.0 - np.exp(-np.maximum(dist - 1.0, 0.0) / 3.0)
    return np.where(land, raw * taper, 0.0)


def make_geography(rng: np.random.Generator) -> Geography:
    """The packaged GB land mask with coordinates and a synthetic elevation drawn from ``rng``."""
    land = load_land_mask(reference_mask_path())
    y, x = grid_axes(*land.shape)
    ex, ny = np.meshgrid(x, y)
    lon, lat = bng_to_wgs84().transform(ex, ny)
    elevation = make_elevation(land, x, y, rng)
    smooth = ndimage.gaussian_filter(elevation, 2.0)
    return Geography(
        x=x,
        y=y,
        lat=np.asarray(lat),
        lon=np.asarray(lon),
        land=land,
        elevation=elevation,
        elevation_smooth=smooth,
    )


# --------------------------------------------------------------------------- gauges


def load_gauges() -> pd.DataFrame:
    """The 671 real CAMELS-GB gauges (gauge_id, gauge_lat, gauge_lon, area_km2, in_604_subset)."""
    with resources.files("preprocessing").joinpath("data/camels_gb_gauges.csv").open("r") as fh:
        table = pd.read_csv(fh)
    return table.sort_values("gauge_id", kind="stable").reset_index(drop=True)


def _stratified(order_xy: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``n`` of the points ``[P, 2]`` (easting, northing), one per spatial stratum.

    Points are ordered in west-east serpentine rows of equal count from south to north, the
    ordered list is cut into ``n`` contiguous groups, and one point is drawn from each.
    """
    p = len(order_xy)
    if n >= p:
        return np.arange(p)
    bands = max(1, round(np.sqrt(n)))
    by_north = np.argsort(order_xy[:, 1], kind="stable")
    ordered: list[np.ndarray] = []
    for b, band in enumerate(np.array_split(by_north, bands)):
        east = band[np.argsort(order_xy[band, 0], kind="stable")]
        ordered.append(east if b % 2 == 0 else east[::-1])
    flat = np.concatenate(ordered)
    picks = [group[rng.integers(len(group))] for group in np.array_split(flat, n)]
    return np.sort(np.asarray(picks))


def select_gauges(gauges: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` gauges spread over GB, drawn from the 604-subset first, in gauge_id order."""
    if not 1 <= n <= len(gauges):
        raise ValueError(f"catchments must be between 1 and {len(gauges)}, got {n}")
    east, north = wgs84_to_bng().transform(gauges["gauge_lon"].values, gauges["gauge_lat"].values)
    xy = np.column_stack([east, north])
    preferred = np.flatnonzero(gauges["in_604_subset"].values == 1)
    others = np.flatnonzero(gauges["in_604_subset"].values != 1)
    if n <= len(preferred):
        chosen = preferred[_stratified(xy[preferred], n, rng)]
    else:
        extra = others[_stratified(xy[others], n - len(preferred), rng)]
        chosen = np.concatenate([preferred, extra])
    return gauges.iloc[np.sort(chosen)].reset_index(drop=True)


@dataclass(frozen=True)
class Catchment:
    """One synthetic catchment at a real gauge.

    ``easting``/``northing`` (m) and ``lat``/``lon`` (degrees) place the gauge (moved to the
    nearest land cell centre when the published position falls in a sea cell);
    ``area_km2`` is the real area; ``cells`` the flat ``y * W + x`` indices of its grid cells
    (upstream region grown from the gauge cell, sorted); ``gauge_cell`` the flat index of the
    gauge's cell.
    """

    gauge_id: int
    easting: float
    northing: float
    lat: float
    lon: float
    area_km2: float
    gauge_cell: int
    cells: np.ndarray

    @property
    def n_cells(self) -> int:
        return int(self.cells.size)


def cell_of(geo: Geography, easting: float, northing: float) -> tuple[int, int]:
    """Row and column of the cell containing a point (clipped to the grid)."""
    h, w = geo.shape
    row = int(np.clip(np.floor((northing - (Y0 - CELL_M / 2)) / CELL_M), 0, h - 1))
    col = int(np.clip(np.floor((easting - (X0 - CELL_M / 2)) / CELL_M), 0, w - 1))
    return row, col


def grow_region(geo: Geography, start: int, n_cells: int, reach_km: float) -> np.ndarray:
    """Grow ``n_cells`` 4-connected land cells from flat index ``start``, preferring uplands.

    Best-first growth: the frontier cell with the highest score
    ``0.3 * reach_km * clip((E_s - E_s,gauge) / 100 m, -1, 1) - distance_km`` joins next
    (ties by flat index), so a catchment leans towards the higher ground above its gauge
    (upstream) by up to 30% of ``reach_km`` (the square root of its area) but stays
    compact. Stops early if the connected land runs out. Returns sorted flat indices.
    """
    h, w = geo.shape
    land = geo.land.ravel()
    elev = geo.elevation_smooth.ravel()
    r0, c0 = divmod(start, w)
    bonus = 0.3 * reach_km

    def score(idx: int) -> float:
        r, c = divmod(idx, w)
        dist_km = 5.0 * np.hypot(r - r0, c - c0)
        return float(bonus * np.clip((elev[idx] - elev[start]) / 100.0, -1.0, 1.0) - dist_km)

    taken = np.zeros(h * w, dtype=bool)
    taken[start] = True
    region = [start]
    heap: list[tuple[float, int]] = []
    while len(region) < n_cells:
        r, c = divmod(region[-1], w)
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= rr < h and 0 <= cc < w:
                idx = rr * w + cc
                if land[idx] and not taken[idx]:
                    taken[idx] = True
                    heapq.heappush(heap, (-score(idx), idx))
        if not heap:
            break
        region.append(heapq.heappop(heap)[1])
    return np.sort(np.asarray(region, dtype=np.int64))


def place_catchments(geo: Geography, chosen: pd.DataFrame) -> list[Catchment]:
    """Snap each chosen gauge to land and grow its catchment of ``round(area / 25 km2)`` cells."""
    to_bng, to_ll = wgs84_to_bng(), bng_to_wgs84()
    w = geo.shape[1]
    _, (near_r, near_c) = ndimage.distance_transform_edt(~geo.land, return_indices=True)
    out: list[Catchment] = []
    for row in chosen.itertuples(index=False):
        east, north = to_bng.transform(float(row.gauge_lon), float(row.gauge_lat))
        lat, lon = float(row.gauge_lat), float(row.gauge_lon)
        r, c = cell_of(geo, east, north)
        if not geo.land[r, c]:  # published position in a sea cell: move to nearest land centre
            r, c = int(near_r[r, c]), int(near_c[r, c])
            east, north = float(geo.x[c]), float(geo.y[r])
            lon, lat = (float(v) for v in to_ll.transform(east, north))
        area = float(row.area_km2)
        n_cells = max(1, round(area / CELL_KM2))
        reach_km = np.sqrt(area)
        cells = grow_region(geo, r * w + c, n_cells, reach_km)
        out.append(
            Catchment(
                gauge_id=int(row.gauge_id),
                easting=round(float(east), 1),
                northing=round(float(north), 1),
                lat=lat,
                lon=lon,
                area_km2=area,
                gauge_cell=r * w + c,
                cells=cells,
            )
        )
    return out
