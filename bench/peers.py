"""hydromae against the rainfall-runoff model hydrologists use: neuralhydrology's CudaLSTM.

Trains CudaLSTM on the same synthetic CAMELS-GB files and the same periods as a hydromae
dataset, with the gauged catchments only, and scores it on the test period, next to
hydromae's ``simulate`` and ``holdout`` results and the regression baselines from a
``hydromae evaluate`` JSON of the same dataset (``--metrics``)::

    python bench/peers.py --raw RAW --data DATASET --metrics EVAL/metrics.json --out WORK

neuralhydrology is never a dependency of hydromae: it runs in its own interpreter
(``--python``, default ``.peers/neuralhydrology/bin/python``; make it with
``python3 -m venv .peers/neuralhydrology && .peers/neuralhydrology/bin/pip install
torch==2.13.0 neuralhydrology``), through ``bench/nh_driver.py``. It reads ``RAW/data``
as ``hydromae synth`` writes it (the CAMELS-GB release's layout), after the one move its
loader asks of the release: the attribute tables into ``attributes/`` (done on a copy).

Scores: neuralhydrology's own NSE over every test day, and NSE and KGE recomputed by
``training.metrics`` on exactly the days hydromae scores (its test windows). CudaLSTM sees
365 days of history before each day, hydromae one 90-day window: said in the printout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.manifest import Manifest  # noqa: E402
from training.metrics import kge, nse  # noqa: E402
from training.regression import LAGS, LagRegression  # noqa: E402

INPUTS = ["precipitation", "pet", "temperature"]


def nh_data(raw: Path, work: Path) -> Path:
    """``work/nh_data``: the release's time series as they lie, and the attribute tables
    moved into ``attributes/`` (the one move neuralhydrology's loader asks for)."""
    data = work / "nh_data"
    if data.exists():
        shutil.rmtree(data)
    (data / "attributes").mkdir(parents=True)
    (data / "timeseries").symlink_to((raw / "data" / "timeseries").resolve())
    for table in sorted((raw / "data").glob("CAMELS_GB_*_attributes.csv")):
        shutil.copy(table, data / "attributes" / table.name)
    return data


def day(date) -> str:
    return date.strftime("%d/%m/%Y")


def write_config(args, manifest: Manifest, data: Path, work: Path) -> Path:
    """neuralhydrology's YAML: CudaLSTM, the dataset's periods, the gauged basins to train."""
    ids = list(manifest.catchments.ids)
    gauged = [g for g in ids if g not in manifest.catchments.holdout]
    (work / "train_basins.txt").write_text("\n".join(gauged) + "\n")
    (work / "test_basins.txt").write_text("\n".join(ids) + "\n")
    train, val, test = (manifest.split(s) for s in ("train", "val", "test"))
    statics = [s for s in manifest.catchments.static_attributes]
    lines = {
        "experiment_name": "hydromae_peer",
        "run_dir": str(work / "runs"),
        "train_basin_file": str(work / "train_basins.txt"),
        "validation_basin_file": str(work / "train_basins.txt"),
        "test_basin_file": str(work / "test_basins.txt"),
        "train_start_date": day(train.start),
        "train_end_date": day(train.end),
        "validation_start_date": day(val.start),
        "validation_end_date": day(val.end),
        "test_start_date": day(test.start),
        "test_end_date": day(test.end),
        "device": "cpu",
        "validate_every": args.epochs + 1,
        "metrics": ["NSE", "KGE"],
        "model": "cudalstm",
        "head": "regression",
        "output_activation": "linear",
        "hidden_size": args.hidden,
        "initial_forget_bias": 3,
        "output_dropout": 0.4,
        "optimizer": "Adam",
        "loss": "NSE",
        "learning_rate": args.lr,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "clip_gradient_norm": 1.0,
        "predict_last_n": 1,
        "seq_length": args.seq_length,
        "num_workers": 0,
        "log_interval": 50,
        "log_tensorboard": False,
        "save_weights_every": args.epochs,
        "dataset": "camels_gb",
        "data_dir": str(data),
        "dynamic_inputs": INPUTS,
        "target_variables": ["discharge_spec"],
        "clip_targets_to_zero": ["discharge_spec"],
        "static_attributes": statics,
        "seed": args.seed,
    }
    path = work / "cudalstm.yml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in lines.items()))
    return path


def window_days(manifest: Manifest) -> set[str]:
    """The test days hydromae scores: those of the test split's windows."""
    out = set()
    for start in manifest.split("test").window_starts:
        out |= {str(np.datetime64(start) + i) for i in range(manifest.window)}
    return out


def history_regressions(raw: Path, manifest: Manifest) -> dict[str, dict]:
    """The lag regressions of ``training.regression`` fitted and run on each catchment's
    whole record rather than one window: rain (``precipitation``) and ``pet`` from the
    release's CSVs, the training period's days to fit, the test period's to predict with
    the ``LAGS`` days before it (the CSVs carry no soil moisture: the rain and evaporation
    regressions only). ``{gauge: {"dates", "sim", "obs"}}``: per catchment for the gauged
    ones, pooled (with the static attributes) for the held-out ones."""
    folder = raw / "data" / "timeseries"
    ids = list(manifest.catchments.ids)
    frames = [
        pd.read_csv(next(folder.glob(f"CAMELS_GB_hydromet_timeseries_{g}_*.csv")),
                    index_col="date", parse_dates=["date"])
        for g in ids
    ]  # fmt: skip
    flow_column = manifest.variables["riverflow"].source

    def period(first, last) -> list[np.ndarray]:  # rain, pet, flow [1, T, C]
        cols = ("precipitation", "pet", flow_column)
        return [np.stack([f.loc[first:last, c].to_numpy(float) for f in frames], -1)[None]
                for c in cols]  # fmt: skip

    train, test = manifest.split("train"), manifest.split("test")
    static = manifest.catchment_table().static
    held = [i for i, g in enumerate(ids) if g in manifest.catchments.holdout]
    gauged = np.setdiff1d(np.arange(len(ids)), held)
    fit = period(pd.Timestamp(train.start), pd.Timestamp(train.end))
    first = pd.Timestamp(test.start) - pd.Timedelta(days=LAGS)
    rain, pet, flow = period(first, pd.Timestamp(test.end))
    dates = frames[0].loc[first : pd.Timestamp(test.end)].index.strftime("%Y-%m-%d")[LAGS:]
    out = {}
    for pooled in (False, True):
        model = LagRegression(pooled=pooled).fit(fit[:2], fit[2], static, gauged)  # rain, pet
        sim = model.predict(
            (torch.from_numpy(rain[0].T), torch.from_numpy(pet[0].T)),
            torch.arange(len(ids)),
            torch.from_numpy(static),
        ).numpy()  # [C, T]
        for c in held if pooled else gauged:
            out[ids[c]] = {"dates": list(dates), "sim": sim[c, LAGS:], "obs": flow[0, LAGS:, c]}
    return out


def summary(values: list[float]) -> str:
    v = np.asarray([x for x in values if np.isfinite(x)])
    if not v.size:
        return "-"
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return f"{med:.3f} ({q1:.3f}..{q3:.3f}), {v.size} catchments"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="hydromae synth's RAW_DIR")
    parser.add_argument("--data", type=Path, required=True, help="the dataset made from it")
    parser.add_argument("--metrics", type=Path, help="hydromae evaluate --split test JSON")
    parser.add_argument("--out", type=Path, required=True, help="a working directory")
    parser.add_argument("--python", type=Path, default=ROOT / ".peers/neuralhydrology/bin/python")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seq-length", type=int, default=365)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reuse", action="store_true",
        help="score OUT/cudalstm.json again if it was trained with the same settings",
    )  # fmt: skip
    args = parser.parse_args()
    if not args.python.exists():
        raise SystemExit(
            f"no neuralhydrology interpreter at {args.python}: see this script's --help"
        )
    manifest = Manifest.read(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    result = args.out / "cudalstm.json"
    trained_with = args.out / "cudalstm_trained.yml"  # the settings cudalstm.json came from
    config = write_config(args, manifest, nh_data(args.raw, args.out), args.out)
    if not (
        args.reuse and result.exists() and trained_with.exists()
        and trained_with.read_text() == config.read_text()
    ):  # fmt: skip
        subprocess.run(
            [str(args.python), str(ROOT / "bench" / "nh_driver.py"), str(config), str(result)],
            check=True,
        )
        shutil.copy(config, trained_with)
    runs = json.loads(result.read_text())
    days = window_days(manifest)
    held = set(manifest.catchments.holdout)
    history = history_regressions(args.raw, manifest)
    for label, basins in (
        (f"CudaLSTM ({args.epochs} epochs, {args.seq_length}-day sequences, "
         f"{runs['train_seconds']:.0f} s of training on the CPU)", runs["basins"]),
        (f"lag regression on the whole record (lags 0..{LAGS}; pooled for held-out "
         "catchments)", history),
    ):  # fmt: skip
        print(label + ":")
        rows: dict[str, dict[str, list[float]]] = {"gauged": {}, "held out": {}}
        for basin, entry in basins.items():
            group = "held out" if basin in held else "gauged"
            keep = [i for i, d in enumerate(entry["dates"]) if d in days]
            sim, obs = np.asarray(entry["sim"], float), np.asarray(entry["obs"], float)
            full = np.isfinite(sim) & np.isfinite(obs)
            # every test day: neuralhydrology's own NSE for CudaLSTM, training.metrics' here
            every = entry["nse"] if "nse" in entry else nse(sim[full], obs[full])
            sim, obs = sim[keep], obs[keep]
            ok = np.isfinite(sim) & np.isfinite(obs)
            for name, value in (
                ("NSE, every test day", every),
                ("NSE, hydromae's test days", nse(sim[ok], obs[ok])),
                ("KGE, hydromae's test days", kge(sim[ok], obs[ok])),
            ):
                rows[group].setdefault(name, []).append(value)
        for group, scores in rows.items():
            for name, values in scores.items():
                print(f"  {group:<9} {name:<27} {summary(values)}")
    if args.metrics:
        result = json.loads(args.metrics.read_text())["strategies"]
        print(
            "hydromae evaluate, riverflow never seen (median NSE, IQR; forcing: soil "
            "moisture withheld too, what CudaLSTM reads):"
        )
        for strategy, label in (
            ("forcing", "gauged, forcing"), ("simulate", "gauged"),
            ("holdout_forcing", "held out, forcing"), ("holdout", "held out"),
        ):  # fmt: skip
            flows = result.get(strategy, {}).get("riverflow_catchments", {})
            for method, s in flows.items():
                if "nse_median" in s:
                    print(f"  {label:<18} {method:<15} {s['nse_median']:.3f} "
                          f"({s['nse_q25']:.3f}..{s['nse_q75']:.3f}), "
                          f"{s['nse_catchments']} catchments")  # fmt: skip
    print(
        "CudaLSTM reads 365 days before each day and the whole-record regression 30 (the "
        "period before the test split included); hydromae and its baselines see one 90-day "
        "window at a time."
    )


if __name__ == "__main__":
    main()
