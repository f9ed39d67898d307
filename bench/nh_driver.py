"""Train and score neuralhydrology's CudaLSTM, in the peer's own interpreter (not .venv).

Run by ``bench/peers.py`` as ``PEER_PYTHON bench/nh_driver.py CONFIG.yml OUT.json``: trains
with ``neuralhydrology.nh_run.start_run``, evaluates the test period with ``eval_run``, and
writes each basin's NSE and KGE (neuralhydrology's own metrics) and its simulated and
observed series to OUT.json. Imports nothing of hydromae's.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path


def main(config: Path, out: Path) -> None:
    from neuralhydrology.nh_run import eval_run, start_run
    from ruamel.yaml import YAML

    cfg = YAML(typ="safe").load(config.read_text())
    started = time.perf_counter()
    start_run(config_file=config, gpu=-1)
    trained = time.perf_counter() - started
    runs = sorted(Path(cfg["run_dir"]).glob(f"{cfg['experiment_name']}_*"))
    run = runs[-1]
    eval_run(run_dir=run, period="test", gpu=-1)
    results_file = sorted((run / "test").glob("model_epoch*/test_results.p"))[-1]
    with open(results_file, "rb") as fh:
        results = pickle.load(fh)
    basins = {}
    for basin, entry in results.items():
        daily = entry["1D"]
        xr = daily["xr"]
        basins[basin] = {
            "nse": float(daily.get("NSE", float("nan"))),
            "kge": float(daily.get("KGE", float("nan"))),
            "dates": [str(d)[:10] for d in xr["date"].values],
            "sim": [float(v) for v in xr["discharge_spec_sim"].values[:, -1]],
            "obs": [float(v) for v in xr["discharge_spec_obs"].values[:, -1]],
        }
    out.write_text(json.dumps({"train_seconds": trained, "run": str(run), "basins": basins}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
