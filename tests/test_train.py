"""hydromae train: exact resume after a real kill, two-process DDP, dataset binding."""

from __future__ import annotations

import functools
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synth_dataset

from hydromae.cli import main
from pipeline.history import CatchmentHistory
from pipeline.manifest import Manifest
from pipeline.runoff import RunoffSequences
from pipeline.schema import IMAGE_MODALITIES, MODALITIES, STORE
from pipeline.store import open_store
from training.fit_baselines import training_flow_std, training_flow_stds
from training.memory_pretrain import memory_parameters, pretrain_memory
from training.optim import adamw
from training.train_config import TrainConfig, build_model, loss_config

STEPS = 6


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synth_dataset(tmp_path_factory)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--steps", str(STEPS),
            "--batch-size", "3", "--workers", "0", "--log-every", "1",
            "--checkpoint-every", "1", "--warmup", "2", "--no-progress", *extra]  # fmt: skip


def losses(run: Path) -> dict[int, float]:
    """The logged loss of every step; each step is logged once, even after a kill and resume."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert len(steps) == len(set(steps)), f"a step logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_a_killed_run_resumes_to_the_same_losses(data, tmp_path):
    # every run in a fresh process of its own, as a user runs them: the libraries a long
    # pytest process has loaded can change which OpenMP runtime does the sums
    straight = tmp_path / "straight"
    cli = [sys.executable, "-m", "hydromae"]
    assert subprocess.run([*cli, *train_args(data, straight)], capture_output=True).returncode == 0
    expected = losses(straight)
    assert sorted(expected) == list(range(1, STEPS + 1))

    run = tmp_path / "killed"
    command = [*cli, *train_args(data, run)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= STEPS // 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert len(losses(run)) < STEPS
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert losses(run) == expected  # to the last bit


def test_two_process_ddp_trains_and_ranks_agree(data, tmp_path):
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "hydromae",
         *train_args(data, run)[:-1], "--steps", "3"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "step" in x] == [1, 2, 3]
    assert lines[-1] == {"ranks_agree": True, "world_size": 2}


def test_training_streams_its_shards_over_http(data, tmp_path):
    """Only the manifest and the land mask are local; the training shards come from a server
    on 127.0.0.1."""
    local = tmp_path / "local"
    local.mkdir()
    for name in ("manifest.json", "land_mask.pt"):
        (local / name).write_bytes((data / name).read_bytes())
    handler = functools.partial(_QuietHandler, directory=str(data))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    names = sorted(p.name for p in (data / "shards").glob("train-*.tar"))
    url = f"http://127.0.0.1:{server.server_address[1]}/shards"
    try:
        run = tmp_path / "run"
        args = train_args(local, run, "--steps", "2", "--shards", *(f"{url}/{n}" for n in names))
        assert main(args) == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert sorted(losses(run)) == [1, 2]
    assert all(math.isfinite(v) for v in losses(run).values())


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_a_checkpoint_refuses_another_dataset(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*train_args(data, run), "--steps", "1"]) == 0
    other = tmp_path / "other"
    other.mkdir()
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["window"] = 21
    for name in ("land_mask.npy", "land_mask.pt", "store.zarr", "shards"):
        (other / name).symlink_to(data / name)
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main([*train_args(other, run), "--resume"]) == 2
    assert "another dataset" in capsys.readouterr().err


def test_evaluate_scores_model_and_baselines_on_the_same_masks(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*train_args(data, run), "--steps", "2"]) == 0
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--run", str(run), "--data", str(data), "--split", "val", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "masked RMSE in physical units" in printed and "masks: riverflow" in printed
    result = json.loads(out.read_text())
    assert set(result["strategies"]) == {"seed", "block", "riverflow", "simulate", "forcing"}
    for strategy, entry in result["strategies"].items():
        scored = ("riverflow",) if strategy in ("simulate", "forcing") else MODALITIES
        for name in MODALITIES:
            methods = {"model", "mix", "climatology", "interpolation"}
            methods |= {"neighbours"} if name in IMAGE_MODALITIES else set()
            if name == "riverflow":  # no soil moisture seen under forcing: nor regressed on
                methods |= {"regression", "pooled"}
                methods |= {"regression_soil", "pooled_soil"} if strategy != "forcing" else set()
            assert set(entry[name]) - {"units"} == (methods if name in scored else set())
            if name not in scored:
                continue
            counts = {entry[name][m]["physical"]["count"] for m in methods}
            assert len(counts) == 1 and counts.pop() > 0  # the same positions for all
            for m in methods:
                assert all(v == v for v in entry[name][m]["physical"].values())  # no NaN
        assert entry["riverflow_catchments"]["model"]["nse_catchments"] >= 1
    # simulate scores riverflow on every valid day of every window
    simulated = result["strategies"]["simulate"]["riverflow"]["model"]["physical"]["count"]
    assert simulated > result["strategies"]["seed"]["riverflow"]["model"]["physical"]["count"]
    seed, block = result["strategies"]["seed"], result["strategies"]["block"]
    for method in ("climatology", "interpolation", "neighbours"):  # images keep their masks
        assert seed["temp"][method] == block["temp"][method]
    assert seed["evap"]["model"] != block["evap"]["model"]
    flow = result["strategies"]["riverflow"]["riverflow"]
    # with riverflow withheld, interpolation has nothing to interpolate: the training mean
    assert flow["interpolation"] != seed["riverflow"]["interpolation"]
    again = tmp_path / "again.json"
    assert main([*args[:-1], str(again), "--no-plots"]) == 0
    repeated = json.loads(again.read_text())
    assert repeated.pop("timing")["samples"] == result.pop("timing")["samples"]
    assert repeated == result  # eval masks: the same every time
    pictures = ("masked_day_maps.png", "hydrograph.png", "hydrograph_forcing.png")
    for picture in pictures:  # beside --out
        assert (tmp_path / picture).stat().st_size > 10_000
    alone = tmp_path / "forcing" / "metrics.json"  # one strategy: only what it can show
    assert main([*args[:-1], str(alone), "--strategies", "forcing"]) == 0
    assert set(json.loads(alone.read_text())["strategies"]) == {"forcing"}
    assert sorted(p.name for p in alone.parent.glob("*.png")) == ["hydrograph_forcing.png"]


def test_evaluate_scores_the_held_out_catchments_alone_with_and_without_soil_moisture(
    held_out_dataset, tmp_path
):
    """``holdout`` and ``holdout_forcing`` score the catchments training never saw, and only
    them: ``simulate``'s and ``forcing``'s questions there, with the pooled regressions
    alone (no flow record to fit a catchment's own), and none that reads soil moisture
    under ``holdout_forcing``; the other strategies score the gauged catchments."""
    data = held_out_dataset
    held = json.loads((data / "manifest.json").read_text())["catchments"]["holdout"]
    assert len(held) == 1
    run = tmp_path / "run"
    assert main([*train_args(data, run), "--steps", "2"]) == 0
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--run", str(run), "--data", str(data), "--split", "val",
                 "--out", str(out), "--no-plots"]) == 0  # fmt: skip
    result = json.loads(out.read_text())["strategies"]
    assert {"holdout", "holdout_forcing", "simulate", "forcing"} <= set(result)
    base = {"model", "mix", "climatology", "interpolation"}
    pooled = {"holdout": {"pooled", "pooled_soil"}, "holdout_forcing": {"pooled"}}
    for strategy, regressions in pooled.items():
        assert set(result[strategy]["riverflow"]) - {"units"} == base | regressions, strategy
        assert result[strategy]["riverflow_catchments"]["model"]["nse_catchments"] == 1
    for strategy in ("simulate", "forcing"):
        assert result[strategy]["riverflow_catchments"]["model"]["nse_catchments"] == 2
    a, b = result["holdout"]["riverflow"], result["holdout_forcing"]["riverflow"]
    assert a["model"]["physical"]["count"] == b["model"]["physical"]["count"] > 0
    assert a["pooled"] == b["pooled"]  # rain and evaporation: the same inputs
    assert a["model"] != b["model"]  # the model's soil moisture is withheld


def test_embed_writes_features_per_window_and_catchment(data, tmp_path):
    import xarray as xr

    import training

    run = tmp_path / "run"
    assert main([*train_args(data, run), "--steps", "1"]) == 0
    out = tmp_path / "features.nc"
    assert main(["embed", "--run", str(run), "--data", str(data), "--out", str(out),
                 "--split", "train"]) == 0  # fmt: skip
    ds = xr.open_dataset(out)
    manifest = json.loads((data / "manifest.json").read_text())
    assert ds["features"].dims == ("window", "catchment", "feature")
    assert ds.sizes["window"] == manifest["splits"]["train"]["windows"]
    assert list(ds["catchment"].values) == manifest["catchments"]["ids"]
    assert bool(ds["features"].notnull().all())
    encoder = training.load_encoder(run / "checkpoint.pt", data)
    assert isinstance(encoder, torch.nn.Module) and not encoder.training


def test_validation_under_eval_masks_is_logged(data, tmp_path):
    run = tmp_path / "run"
    assert main([*train_args(data, run), "--steps", "2", "--val-every", "1"]) == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val] == [1, 2]
    assert all(r["val_loss"] > 0 and r["val_loss_riverflow"] >= 0 for r in val)
    # the same scalars in TensorBoard, and the curves drawn
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in board.Scalars("loss/val_loss")] == [1, 2]
    assert [e.value for e in board.Scalars("loss/loss_riverflow")] == pytest.approx(
        [r["loss_riverflow"] for r in records if "loss" in r]
    )
    assert (run / "training_curves.png").stat().st_size > 10_000


def test_norm_pix_loss_trains_without_hints_and_is_refused_with_them(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*train_args(data, run), "--steps", "1", "--norm-pix-loss"]) == 2
    assert "--no-hints" in capsys.readouterr().err
    assert main([*train_args(data, run), "--steps", "1", "--gated-mix", "--no-hints"]) == 2
    assert "--gated-mix gates the hints' mix" in capsys.readouterr().err
    assert main([*train_args(data, run), "--steps", "1", "--nearness", "--no-hints"]) == 2
    assert "--nearness is a feature of the hints' queries" in capsys.readouterr().err
    assert main([*train_args(data, run), "--steps", "1", "--history-flow", "1"]) == 2
    assert "--history-flow trains the catchment memory" in capsys.readouterr().err
    for flag in (["--runoff-sequences", "4"], ["--flow-fill"], ["--memory-detach"]):
        assert main([*train_args(data, run), "--steps", "1", *flag]) == 2
        assert f"{flag[0]} uses the memory's flow head" in capsys.readouterr().err
    assert main([*train_args(data, run), "--steps", "1", "--memory-flow-loss", "catchment"]) == 2
    assert "--memory-flow-loss sets the units" in capsys.readouterr().err
    memory = ["--memory", "--history-days", "20", "--history-flow", "1"]
    assert main([*train_args(data, run), "--runoff-forcing", "0.5", *memory]) == 2
    assert "--runoff-forcing is a share of the rainfall-runoff" in capsys.readouterr().err
    assert main([*train_args(data, run), "--memory-pretrain-steps", "2", *memory]) == 2
    assert "--memory-pretrain-steps trains the memory on rainfall-runoff" in capsys.readouterr().err
    assert not (run / "checkpoint.pt").exists()
    assert main([*train_args(data, run), "--steps", "2", "--norm-pix-loss", "--no-hints"]) == 0
    assert set(losses(run)) == {1, 2} and all(math.isfinite(v) for v in losses(run).values())


def test_half_precision_grids_train_to_nearly_the_same_losses(data, tmp_path, capsys):
    """--image-dtype float16: the grids travel rounded to float16 and the model trains on
    them as float32; the losses follow the float32 run's closely, not exactly. Refused with
    the per-sample layout, by name."""
    full, half = tmp_path / "full", tmp_path / "half"
    assert main([*train_args(data, full), "--steps", "3"]) == 0
    assert main([*train_args(data, half), "--steps", "3", "--image-dtype", "float16"]) == 0
    a, b = losses(full), losses(half)
    assert set(a) == set(b) == {1, 2, 3}
    assert all(b[s] == pytest.approx(a[s], rel=1e-2) for s in a)
    assert any(b[s] != a[s] for s in a)  # the rounding reached the loss
    bad = tmp_path / "bad"
    args = [*train_args(data, bad), "--image-dtype", "float16", "--layout", "samples"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "image_dtype 'float16' needs layout 'windows'" in err and "Traceback" not in err


def test_a_model_with_history_memory_gated_mix_and_catchment_flow_loss_trains_resumes_evaluates(
    data, tmp_path
):
    """With the history's flow, rainfall-runoff sequences (half of them without soil
    moisture), a training mix holding ``forcing`` and the memory's riverflow as a hint (read
    through a stop-gradient): a resumed run logs the same losses as one never
    stopped (the sequences are drawn by step), and the evaluation scores the memory's own
    riverflow beside the model."""
    run, once = tmp_path / "run", tmp_path / "once"
    history = ["--history-days", "20", "--memory", "--decoder", "cross", "--flow-loss", "physical",
               "--memory-flow-loss", "catchment", "--gated-mix", "--strategies", "seed=0.4",
               "withhold=0.3", "forcing=0.3", "--history-flow", "0.5", "--runoff-forcing", "0.5",
               "--runoff-sequences", "6", "--flow-fill", "--nearness", "--memory-detach",
               "--log-every", "1"]  # fmt: skip
    assert main([*train_args(data, run), "--steps", "2", *history]) == 0
    assert main([*train_args(data, run), "--steps", "3", "--resume", *history]) == 0
    assert main([*train_args(data, once), "--steps", "3", *history]) == 0
    assert losses(run) == losses(once)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["model_config"]["history_days"] == 20 and state["step"] == 3
    assert state["model_config"]["memory"] and state["model_config"]["gated_mix"]
    assert state["model_config"]["history_flow"] and state["model_config"]["flow_fill"]
    assert state["model_config"]["nearness"] and state["model_config"]["memory_detach"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["loss_history_flow"] for r in records if "loss" in r]
    # the first window has no day before it; the later ones' history lies in the record
    assert len(logged) == 3 and all(math.isfinite(v) and v >= 0 for v in logged)
    assert any(v > 0 for v in logged)
    runoff = [r["loss_runoff"] for r in records if "loss" in r]
    assert len(runoff) == 3 and all(math.isfinite(v) and v > 0 for v in runoff)
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--run", str(run), "--data", str(data), "--split", "val", "--out", str(out),
            "--no-plots", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["history_days"] == 20
    flow = result["strategies"]["simulate"]["riverflow"]
    scored = ("model", "mix", "memory", "regression")
    assert all(math.isfinite(flow[m]["physical"]["rmse"]) for m in scored)


def test_the_catchment_flow_spreads_are_each_catchments_training_standard_deviation(data):
    manifest = Manifest.read(data)
    store = open_store(data)
    flow = store["riverflow"].sel(time=slice("2000-01-01", "2000-03-20")).values  # [days, C]
    stds = training_flow_stds(data, manifest)
    assert stds.shape == (flow.shape[1],)
    np.testing.assert_allclose(stds, np.nanstd(flow, axis=0), rtol=1e-5)
    assert training_flow_std(data, manifest) == pytest.approx(float(np.nanstd(flow)), rel=1e-6)


PRETRAIN = ["--history-days", "20", "--memory", "--history-flow", "1", "--runoff-sequences",
            "6", "--memory-flow-loss", "catchment", "--memory-pretrain-steps", "6",
            "--steps", "2"]  # fmt: skip


def memory_losses(run: Path) -> dict[int, float]:
    """The logged loss of every step of the memory's pretraining, each logged once."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["memory_step"] for r in records if "memory_step" in r]
    assert len(steps) == len(set(steps)), f"a memory step logged twice: {steps}"
    return {r["memory_step"]: r["loss_runoff"] for r in records if "memory_step" in r}


def test_the_memory_pretrains_first_and_a_run_killed_meanwhile_resumes_to_the_same_losses(
    data, tmp_path
):
    """--memory-pretrain-steps: the memory's steps are logged, then the MAE's; a run killed
    during the memory's steps resumes to the same losses, to the last bit."""
    cli = [sys.executable, "-m", "hydromae"]
    straight = tmp_path / "straight"
    done = subprocess.run([*cli, *train_args(data, straight), *PRETRAIN], capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    expected, expected_mae = memory_losses(straight), losses(straight)
    assert sorted(expected) == list(range(1, 7)) and sorted(expected_mae) == [1, 2]
    assert expected[6] < expected[1]  # the memory learns from its sequences alone
    run = tmp_path / "killed"
    command = [*cli, *train_args(data, run), *PRETRAIN]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 3 <= len(memory_losses(run)) < 6 and not losses(run)
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert memory_losses(run) == expected and losses(run) == expected_mae
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["memory_step"] == 6 and state["step"] == 2


def test_the_memory_pretraining_moves_only_the_memory_lstm_and_flow_head(data):
    """A pretraining step changes the LSTM and flow head and not one other weight (the
    encoder, the decoder, the memory's query embedding)."""
    cfg = TrainConfig(data=str(data), out="unused", preset="tiny", memory=True, history_days=20,
                      history_flow=1.0, runoff_sequences=4, memory_pretrain_steps=2)  # fmt: skip
    manifest = Manifest.read(data)
    model = build_model(cfg, manifest)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = CatchmentHistory.read(str(data / STORE), manifest, 20)
    runoff = RunoffSequences(history, manifest, 20 + manifest.window, manifest.window)
    optimizer = adamw(torch.nn.ParameterList(memory_parameters(model)), 1e-2)
    logged = []
    pretrain_memory(
        model, optimizer, runoff, count=4, first=0, total=2, seed=0, rank=0,
        loss_cfg=loss_config(cfg), lr=1e-2, grad_clip=1.0, world=1, device=torch.device("cpu"),
        after_step=lambda *a: logged.append(a),
    )  # fmt: skip
    assert [a[0] for a in logged] == [1, 2] and all(math.isfinite(a[1]) for a in logged)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("memory.lstm.", "memory.flow.")) for k in changed)
    assert any(k.startswith("memory.flow.") for k in changed)
