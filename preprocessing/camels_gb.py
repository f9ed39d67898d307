"""The CAMELS-GB release as the EIDC publishes it (Coxon et al. 2020, v1): names and layout.

The release (doi 10.5285/8344e4f3-d2ea-44f5-8afa-86d2987543a9) unpacks to::

    8344e4f3-d2ea-44f5-8afa-86d2987543a9/
      data/
        CAMELS_GB_{group}_attributes.csv            eight tables, keyed by gauge_id
        CAMELS_GB_catchment_boundaries.zip          the shapefile, zipped
        CAMELS_GB_catchment_boundaries/             ... or unzipped:
          CAMELS_GB_catchment_boundaries.{shp,shx,dbf,prj}   EPSG:27700, fields ID_STRING, ID
        timeseries/
          CAMELS_GB_hydromet_timeseries_{gauge_id}_{YYYYMMDD}-{YYYYMMDD}.csv
      supporting-documents/

:func:`locate` finds the files in that tree given the top folder or its ``data/`` folder
(``hydromae preprocess --camels-gb DIR``); ``hydromae synth`` writes the same layout from
these names. :data:`ATTRIBUTE_COLUMNS` lists every attribute table's columns in the
release's order (145 in all, ``gauge_id`` first in every file, not counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA = "data"
TIMESERIES = "timeseries"
SERIES_GLOB = "CAMELS_GB_hydromet_timeseries_*.csv"
ATTRIBUTES_GLOB = "CAMELS_GB_*_attributes.csv"
BOUNDARIES = "CAMELS_GB_catchment_boundaries"
BOUNDARIES_SHP = f"{BOUNDARIES}/{BOUNDARIES}.shp"
BOUNDARIES_ZIP = f"{BOUNDARIES}.zip"

_HYDRAULIC = (
    "bulkdens", "tawc", "porosity_cosby", "porosity_hypres", "conductivity_cosby",
    "conductivity_hypres", "root_depth", "soil_depth_pelletier",
)  # fmt: skip
ATTRIBUTE_COLUMNS: dict[str, tuple[str, ...]] = {
    "topographic": (
        "gauge_name", "gauge_lat", "gauge_lon", "gauge_easting", "gauge_northing", "gauge_elev",
        "area", "dpsbar", "elev_mean", "elev_min", "elev_10", "elev_50", "elev_90", "elev_max",
    ),
    "climatic": (
        "p_mean", "pet_mean", "aridity", "p_seasonality", "frac_snow", "high_prec_freq",
        "high_prec_dur", "high_prec_timing", "low_prec_freq", "low_prec_dur", "low_prec_timing",
    ),
    "hydrologic": (
        "q_mean", "runoff_ratio", "stream_elas", "slope_fdc", "baseflow_index",
        "baseflow_index_ceh", "hfd_mean", "Q5", "Q95", "high_q_freq", "high_q_dur",
        "low_q_freq", "low_q_dur", "zero_q_freq",
    ),
    "hydrometry": (
        "station_type", "flow_period_start", "flow_period_end", "flow_perc_complete",
        "bankfull_flow", "structurefull_flow",
        *(f"q{q}_uncert_{side}" for q in (5, 25, 50, 75, 95, 99) for side in ("upper", "lower")),
        "quncert_meta",
    ),
    "landcover": (
        "dwood_perc", "ewood_perc", "grass_perc", "shrub_perc", "crop_perc", "urban_perc",
        "inwater_perc", "bares_perc", "dom_land_cover",
    ),
    "soil": (
        *(f"{x}_perc{s}" for x in ("sand", "silt", "clay", "organic") for s in ("", "_missing")),
        *(f"{x}{s}" for x in _HYDRAULIC for s in ("", "_missing", "_5", "_50", "_95")),
    ),
    "hydrogeology": (
        "inter_high_perc", "inter_mod_perc", "inter_low_perc", "frac_high_perc",
        "frac_mod_perc", "frac_low_perc", "no_gw_perc", "low_nsig_perc", "nsig_low_perc",
    ),
    "humaninfluence": (
        "benchmark_catch", "surfacewater_abs", "groundwater_abs", "discharges",
        "abs_agriculture_perc", "abs_amenities_perc", "abs_energy_perc",
        "abs_environmental_perc", "abs_industry_perc", "abs_watersupply_perc", "num_reservoir",
        "reservoir_cap", "reservoir_he", "reservoir_nav", "reservoir_drain", "reservoir_wr",
        "reservoir_fs", "reservoir_env", "reservoir_nousedata", "reservoir_year_first",
        "reservoir_year_last",
    ),
}  # fmt: skip


def attribute_file(group: str) -> str:
    """``CAMELS_GB_{group}_attributes.csv``."""
    return f"CAMELS_GB_{group}_attributes.csv"


class CamelsReleaseError(ValueError):
    """A folder that is not a CAMELS-GB release: names the folder and what is missing."""


@dataclass(frozen=True)
class Release:
    """The files of a CAMELS-GB release, found from its ``data/`` folder."""

    data: Path

    @property
    def series_glob(self) -> str:
        return str(self.data / TIMESERIES / SERIES_GLOB)

    @property
    def attributes_glob(self) -> str:
        return str(self.data / ATTRIBUTES_GLOB)

    @property
    def boundaries(self) -> Path | None:
        """The boundary shapefile, unzipped or else still in its zip; None if neither."""
        for candidate in (self.data / BOUNDARIES_SHP, self.data / BOUNDARIES_ZIP):
            if candidate.is_file():
                return candidate
        return None


def locate(folder: str | Path) -> Release:
    """The release whose top folder or ``data/`` folder is ``folder``.

    Raises :class:`CamelsReleaseError` when neither ``folder/timeseries`` nor
    ``folder/data/timeseries`` is a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CamelsReleaseError(f"--camels-gb {folder}: not a folder")
    for data in (folder, folder / DATA):
        if (data / TIMESERIES).is_dir():
            return Release(data)
    raise CamelsReleaseError(
        f"--camels-gb {folder}: neither {folder / TIMESERIES} nor {folder / DATA / TIMESERIES} "
        "is a folder; give the CAMELS-GB release's top folder or its data/ folder (the one "
        f"holding timeseries/{SERIES_GLOB})"
    )
