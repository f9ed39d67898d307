"""The tables of ``docs/learning.md`` from ``hydromae evaluate`` JSON files (not a test).

    python bench/learning_tables.py "hydromae=eval_mix/metrics.json" \\
        "plain MAE (no hints)=eval_plain/metrics.json" "seed masks only=eval_seed/metrics.json"

The first file gives the model's row, its mix-only row (the network's correction
silenced), its memory's own riverflow (the LSTM alone, where the run has one) and every
baseline's; each further file adds its model's row. One Markdown table
per strategy: masked RMSE in physical units per modality, and riverflow's per-catchment
NSE and KGE (median and IQR). The best value of each column is in bold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.schema import MODALITIES  # noqa: E402
from training.evaluate import METHODS  # noqa: E402

# every method hydromae evaluate scores that is not the run's own
BASELINES = tuple(m for m in METHODS if m not in ("model", "mix", "memory"))
NAMES = {
    "climatology": "climatology",
    "interpolation": "interpolation in time",
    "neighbours": "neighbouring patches",
    "regression": "lag regression, per catchment",
    "pooled": "lag regression, pooled",
    "regression_soil": "lag regression with soil moisture, per catchment",
    "pooled_soil": "lag regression with soil moisture, pooled",
}


def rows_of(runs: list[tuple[str, dict]], strategy: str) -> list[tuple[str, dict, dict]]:
    """(label, per-modality entries, riverflow catchment scores) for each row."""
    first = runs[0][1]["strategies"][strategy]
    out = []
    for label, result in runs:
        entry = result["strategies"].get(strategy)
        if entry:
            out.append((label, {m: entry[m].get("model") for m in MODALITIES},
                        entry["riverflow_catchments"].get("model", {})))  # fmt: skip
            for method, name in (("mix", "mix only"), ("memory", "its memory alone")):
                if label == runs[0][0] and method in entry["riverflow_catchments"]:
                    out.append((f"{label}: {name}",
                                {m: entry[m].get(method) for m in MODALITIES},
                                entry["riverflow_catchments"][method]))  # fmt: skip
    for method in BASELINES:
        if any(method in first[m] for m in MODALITIES):
            out.append((NAMES[method], {m: first[m].get(method) for m in MODALITIES},
                        first["riverflow_catchments"].get(method, {})))  # fmt: skip
    return out


def cell(value: float | None, best: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}g}"
    return f"**{text}**" if best is not None and value == best else text


def spread(flow: dict, key: str) -> tuple[float | None, str]:
    if f"{key}_median" not in flow:
        return None, "-"
    return flow[f"{key}_median"], f"({flow[f'{key}_q25']:.2f}..{flow[f'{key}_q75']:.2f})"


def table(runs: list[tuple[str, dict]], strategy: str) -> str:
    rows = rows_of(runs, strategy)
    first = runs[0][1]["strategies"][strategy]
    units = {m: first[m].get("units", "") for m in MODALITIES}
    rmse = [
        {m: (e[m] or {}).get("physical", {}).get("rmse") if e.get(m) else None for m in MODALITIES}
        for _, e, _ in rows
    ]
    best = {m: min((r[m] for r in rmse if r[m] is not None), default=None) for m in MODALITIES}
    nse = [spread(flow, "nse") for _, _, flow in rows]
    kge = [spread(flow, "kge") for _, _, flow in rows]
    best_nse = max((v for v, _ in nse if v is not None), default=None)
    best_kge = max((v for v, _ in kge if v is not None), default=None)
    head = ["method", *(f"{m} RMSE {units[m]}" for m in MODALITIES), "riverflow NSE",
            "riverflow KGE"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (label, _, _), r, (n, nq), (k, kq) in zip(rows, rmse, nse, kge, strict=True):
        cells = [cell(r[m], best[m]) for m in MODALITIES]
        cells += [f"{cell(n, best_nse, 3)} {nq}" if n is not None else "-",
                  f"{cell(k, best_kge, 3)} {kq}" if k is not None else "-"]  # fmt: skip
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def main() -> None:
    runs = []
    for arg in sys.argv[1:]:
        label, _, path = arg.rpartition("=")
        runs.append((label or Path(path).parent.name, json.loads(Path(path).read_text())))
    if not runs:
        raise SystemExit(__doc__)
    for strategy in runs[0][1]["strategies"]:
        print(f"**{strategy}**\n\n{table(runs, strategy)}\n")


if __name__ == "__main__":
    main()
