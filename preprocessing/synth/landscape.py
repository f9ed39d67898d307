"""Synthetic landscape per grid cell: land cover, soils and hydrogeology, ``[y, x]`` fields.

Each field is a deterministic function of the elevation ``E`` (m), the position and smooth
gaussian noise ``n_k`` (unit variance, 20 km scale) drawn from the landscape stream
(``numpy.random.SeedSequence(seed, spawn_key=(6, 0))``, apart from the streams of the
weather and the series, so that adding the landscape changed none of their values). With
``u = clip(E / 600 m, 0, 1)`` (upland), ``l = 1 - u`` (lowland), ``east = clip((x - 150 km)
/ 400 km, 0, 1)`` and ``se`` (the chalk country: east of 350 km and south of 500 km):

- land cover: weights per class (below), normalised per cell to shares summing to 1;
- soil texture: sand, silt and clay shares of the mineral soil (summing to 100%) from a
  softmax of noisy scores (more sand uphill, more clay in the eastern lowlands); organic
  matter rising to peat on high ground; hydraulic properties from them by the Cosby et al.
  (1984) pedotransfer functions and simple stand-ins for the HYPRES ones;
- hydrogeology: weights per productivity class, normalised like the land cover.

Catchment attributes are means (and 5/50/95th percentiles) of these over the catchment's
cells (``preprocessing.synth.attributes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocessing.synth.geography import Geography, smooth_noise

NOISE_CELLS = 4.0  # 20 km

LAND_COVER = ("dwood", "ewood", "grass", "shrub", "crop", "urban", "inwater", "bares")
LAND_COVER_NAMES = {
    "dwood": "Deciduous Woodland",
    "ewood": "Evergreen Woodland",
    "grass": "Grass and Pasture",
    "shrub": "Shrubs",
    "crop": "Crops",
    "urban": "Urban",
    "inwater": "Inland Water",
    "bares": "Bare Soil and Rocks",
}
HYDROGEOLOGY = (
    "inter_high", "inter_mod", "inter_low", "frac_high", "frac_mod", "frac_low", "no_gw",
    "low_nsig", "nsig_low",
)  # fmt: skip
SOIL_PROPERTIES = (
    "bulkdens", "tawc", "porosity_cosby", "porosity_hypres", "conductivity_cosby",
    "conductivity_hypres", "root_depth", "soil_depth_pelletier",
)  # fmt: skip


@dataclass(frozen=True)
class Landscape:
    """Per-cell fields, each ``[H, W]`` float64.

    ``cover[k]``: share of land cover class k (classes in :data:`LAND_COVER`, summing to 1);
    ``geology[k]``: share of hydrogeological class k (:data:`HYDROGEOLOGY`, summing to 1);
    ``texture``: ``sand``, ``silt``, ``clay`` (% of mineral soil, summing to 100) and
    ``organic`` (%); ``soil``: :data:`SOIL_PROPERTIES` in g/cm3, mm, -, -, cm/h, cm/h, m, m.
    """

    cover: dict[str, np.ndarray]
    geology: dict[str, np.ndarray]
    texture: dict[str, np.ndarray]
    soil: dict[str, np.ndarray]


def _shares(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def make_landscape(geo: Geography, rng: np.random.Generator) -> Landscape:
    """The fields over the whole grid (sea cells too; only land cells are ever used)."""
    shape = geo.shape
    n = [smooth_noise(rng, shape, NOISE_CELLS) for _ in range(22)]
    u = np.clip(geo.elevation / 600.0, 0.0, 1.0)
    low = 1.0 - u
    east = np.clip((geo.easting - 150_000.0) / 400_000.0, 0.0, 1.0)
    chalk = np.clip((geo.easting - 350_000.0) / 200_000.0, 0.0, 1.0) * np.clip(
        (500_000.0 - geo.northing) / 300_000.0, 0.0, 1.0
    )
    cover = _shares(
        {
            "dwood": 0.10 * np.exp(0.5 * n[0]),
            "ewood": 0.03 + 0.25 * u * np.exp(0.6 * n[1]),
            "grass": 0.1 + 0.55 * (1.0 - 0.5 * u) * (1.0 - 0.6 * east) * np.exp(0.3 * n[2]),
            "shrub": 0.6 * u**1.5 * np.exp(0.3 * n[3]),
            "crop": 0.7 * low**2 * east * np.exp(0.4 * n[4]),
            "urban": 0.06 * low * np.exp(1.0 * n[5] - 0.5),
            "inwater": 0.005 + 0.015 * u,
            "bares": 0.03 * u**3,
        }
    )
    geology = _shares(
        {
            "inter_high": 0.25 * low * np.exp(0.6 * n[6]),
            "inter_mod": 0.2 * low * np.exp(0.5 * n[7]),
            "inter_low": 0.1 * np.exp(0.5 * n[8]),
            "frac_high": 1.2 * low**2 * chalk * np.exp(0.6 * n[9]),
            "frac_mod": 0.2 * np.exp(0.5 * n[10]),
            "frac_low": 0.2 * (0.5 + u) * np.exp(0.5 * n[11]),
            "no_gw": 0.3 * u**2 * np.exp(0.5 * n[12]),
            "low_nsig": 0.15 * (0.3 + u) * np.exp(0.5 * n[13]),
            "nsig_low": 0.05 * np.exp(0.5 * n[14]),
        }
    )
    scores = np.stack(
        [0.3 + 0.5 * n[15] + 0.5 * u, 0.1 + 0.4 * n[16], 0.5 * n[17] + 0.5 * east * low - 0.4]
    )
    mineral = 100.0 * np.exp(scores) / np.exp(scores).sum(axis=0)  # [3, H, W]
    sand, silt, clay = mineral
    organic = np.clip(2.0 + 45.0 * u**2 * np.exp(0.4 * n[18]), 1.0, 60.0)
    bulkdens = np.clip(1.6 - 0.012 * organic - 0.002 * clay + 0.05 * n[19], 0.2, 1.8)
    root_depth = np.clip(1.1 - 0.5 * u + 0.1 * n[20], 0.3, 1.5)
    soil = {
        "bulkdens": bulkdens,
        "tawc": root_depth
        * 1000.0
        * np.clip(0.08 + 0.0015 * silt + 0.0008 * clay + 0.002 * organic, 0.05, 0.3),
        "porosity_cosby": (50.5 - 0.142 * sand - 0.037 * clay) / 100.0,
        "porosity_hypres": np.clip(1.0 - bulkdens / 2.65, 0.3, 0.9),
        "conductivity_cosby": 2.54 * 10.0 ** (-0.6 + 0.0126 * sand - 0.0064 * clay),
        "conductivity_hypres": 10.0 ** (0.1 + 0.012 * sand - 0.01 * clay - 0.6 * (bulkdens - 1.3)),
        "root_depth": root_depth,
        "soil_depth_pelletier": np.clip(2.0 + 30.0 * low**3 * np.exp(0.5 * n[21]), 0.5, 50.0),
    }
    texture = {"sand": sand, "silt": silt, "clay": clay, "organic": organic}
    return Landscape(cover=cover, geology=geology, texture=texture, soil=soil)
