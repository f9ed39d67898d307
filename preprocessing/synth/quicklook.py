"""A quick-look figure of a synthetic RAW_DIR: rain and temperature maps, one hydrograph.

``quicklook(raw_dir, png)`` reads the files back through the same readers the preprocessing
uses (``preprocessing.gridfile.open_grid``, pandas, json) and draws four panels: annual
rainfall (mm/yr) and mean temperature (degC) maps with the catchment outlines, the first
day's rainfall (mm), and one catchment's daily rain (bars), specific discharge and PET
(mm/day): the catchment given, else the one with the median mean flow (outlined in red).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from preprocessing.gridfile import open_grid
from preprocessing.synth import layout
from preprocessing.synth.netcdf import RAINFALL, TAS


def _mean_grid(raw_dir: Path, stem: str, var: str, how: str) -> tuple[np.ndarray, int]:
    """Sum or mean over all files of a variable: ``[y, x]`` and the number of days."""
    total, days = None, 0
    for path in sorted(raw_dir.glob(layout.grid_glob(stem))):
        da = open_grid(path, var)
        try:
            values = da.values  # [time, y, x]
        finally:
            da.close()
        part = values.sum(axis=0)
        total = part if total is None else total + part
        days += values.shape[0]
    if total is None:
        raise FileNotFoundError(f"no {stem} files in {raw_dir}")
    return (total if how == "sum" else total / days), days


def quicklook(raw_dir: str | Path, png: str | Path, gauge_id: int | None = None) -> Path:
    """Draw the figure into ``png``; the hydrograph shows ``gauge_id`` or the highest-flow one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw_dir, png = Path(raw_dir), Path(png)
    rain_sum, days = _mean_grid(raw_dir, RAINFALL.stem, "rainfall", "sum")
    annual = rain_sum * 365.25 / days
    tmean, _ = _mean_grid(raw_dir, TAS.stem, "tas", "mean")
    shapes = json.loads((raw_dir / layout.BOUNDARIES_GEOJSON).read_text())["features"]
    series = {int(p.name.split("_")[4]): p for p in sorted(raw_dir.glob(layout.SERIES_GLOB))}
    hydro = pd.read_csv(raw_dir / layout.attribute_path("hydrologic"))
    if gauge_id is None:
        gauge_id = int(hydro.sort_values("q_mean").iloc[len(hydro) // 2]["gauge_id"])
    ts = pd.read_csv(series[gauge_id], parse_dates=["date"])

    one_day = open_grid(sorted(raw_dir.glob(layout.grid_glob(RAINFALL.stem)))[0], "rainfall")
    try:
        first_day = one_day.isel(time=0).values  # [y, x] mm
    finally:
        one_day.close()

    fig = plt.figure(figsize=(16, 9))
    grid = fig.add_gridspec(2, 3, height_ratios=[3, 1.3])
    extent = (-200_000, 700_000, -200_000, 1_250_000)
    for col, (field, title, cmap) in enumerate(
        (
            (annual, f"annual rainfall (mm/yr), {days} days", "Blues"),
            (tmean, "mean temperature (degC)", "RdYlBu_r"),
            (first_day, "rainfall on the first day (mm)", "Blues"),
        )
    ):
        ax = fig.add_subplot(grid[0, col])
        img = ax.imshow(field, origin="lower", extent=extent, cmap=cmap)
        fig.colorbar(img, ax=ax, shrink=0.8)
        for feat in shapes:
            ring = np.asarray(feat["geometry"]["coordinates"][0])
            ax.plot(ring[:, 0], ring[:, 1], color="k", lw=0.7)
            if feat["properties"]["gauge_id"] == gauge_id:
                ax.plot(ring[:, 0], ring[:, 1], color="red", lw=1.5)
        ax.set_title(title)
        ax.set_xlim(-100_000, 700_000)
        ax.set_ylim(0, 1_000_000)
    ax = fig.add_subplot(grid[1, :])
    ax.bar(ts["date"], ts["precipitation"], color="tab:blue", width=1.0, label="rain (mm/day)")
    ax.invert_yaxis()
    ax.set_ylabel("rain (mm/day)")
    ax2 = ax.twinx()
    ax2.plot(ts["date"], ts["discharge_spec"], color="k", lw=1.0, label="flow (mm/day)")
    ax2.plot(ts["date"], ts["pet"], color="tab:orange", lw=0.8, label="pet (mm/day)")
    ax2.set_ylabel("flow, pet (mm/day)")
    ax2.legend(loc="center right")
    ax.set_title(f"catchment {gauge_id}: rain (bars, top) and specific discharge")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png
