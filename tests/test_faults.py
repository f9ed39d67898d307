"""Bad input and faults met with one clear message, and nothing already there lost.

Every command here runs as a user runs it (``hydromae.cli.main`` in this process, or a
real ``python -m hydromae`` process where the fault is a process's own: a file-size limit,
a server that is not there). Each test checks the exit code, that stderr is one line
naming the file, key or flag and the problem with no traceback, and that every file that
existed before is byte-identical after.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hydromae.cli import main
from pipeline import config
from pipeline.schema import MANIFEST, SHARDS, STORE
from preprocessing.job import run_job
from preprocessing.plan import PreprocessConfig
from preprocessing.synth import generate

SPLITS = dict(
    train="2000-01-01:2000-03-20", val="2000-03-21:2000-04-09", test="2000-04-10:2000-04-29"
)


def preprocess_args(raw: Path, out: Path) -> list[str]:
    return ["preprocess", "--config", str(raw / "preprocess.toml"), "--out", str(out),
            "--window", "20", "--stride", "20", "--train", SPLITS["train"],
            "--val", SPLITS["val"], "--test", SPLITS["test"], "--samples-per-shard", "2",
            "--workers", "1", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    generate(raw, start="2000-01-01", days=120, catchments=2, seed=4, progress=False)
    return raw


@pytest.fixture(scope="module")
def data(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "dataset"
    cfg = config.load(
        PreprocessConfig,
        raw / "preprocess.toml",
        dict(out=out, window=20, stride=20, samples_per_shard=2, progress=False, **SPLITS),
    )
    run_job(cfg)
    return out


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(train_args(data, out)) == 0
    return out


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--steps", "2", "--batch-size", "2",
            "--workers", "0", "--warmup", "1", "--no-progress", "--no-tensorboard",
            *extra]  # fmt: skip


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots``: what must be byte-identical after a refusal."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line_error(capsys, *needles: str) -> str:
    """stderr is one ``error:`` line holding every needle, and no traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "error:" in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# ----------------------------------------------------------------- settings
def test_a_bad_value_names_its_flag_or_its_toml_key(data, tmp_path, capsys):
    assert main(train_args(data, tmp_path / "a", "--steps", "-1")) == 2
    one_line_error(capsys, "--steps", "at least 1", "-1")
    toml = tmp_path / "train.toml"
    toml.write_text('steps = 0\nbatch_size = 2\ndecoder = "transformer"\n')
    assert main(["train", "--config", str(toml), "--data", str(data), "--out", str(tmp_path)]) == 2
    one_line_error(capsys, str(toml), "key 'steps'", "at least 1")
    toml.write_text('decoder = "transformer"\n')
    assert main(["train", "--config", str(toml), "--data", str(data), "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "key 'decoder'", "mae, cross", "transformer")
    assert not (tmp_path / "a").exists()


def test_a_damaged_manifest_is_named(data, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    text = (copy / MANIFEST).read_text()
    (copy / MANIFEST).write_text(text[: len(text) // 2])
    assert main(["inspect", str(copy)]) == 2
    one_line_error(capsys, str(copy / MANIFEST), "not valid JSON")
    manifest = json.loads(text)
    del manifest["grid"]["patch_size"]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert main(train_args(copy, tmp_path / "run")) == 2
    one_line_error(capsys, str(copy / MANIFEST), "'grid.patch_size' is missing")


# ----------------------------------------------------------------- runs and checkpoints
def test_a_finished_run_is_not_replaced_without_resume(data, run, capsys):
    before = snapshot(run)
    assert main(train_args(data, run)) == 2
    one_line_error(capsys, str(run), "--resume")
    assert snapshot(run) == before


def test_an_out_that_is_a_file_or_holds_other_files_is_refused(data, raw, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    for args in (train_args(data, afile), preprocess_args(raw, afile)):
        assert main(args) == 2
        one_line_error(capsys, str(afile), "not a directory")
    assert afile.read_text() == "mine"
    theirs = tmp_path / "theirs"
    (theirs / STORE).mkdir(parents=True)  # a store.zarr hydromae did not make
    (theirs / STORE / "zarr.json").write_text("{}")
    (theirs / "thesis.tex").write_text("chapter 1")
    before = snapshot(theirs)
    for args in (train_args(data, theirs), preprocess_args(raw, theirs)):
        assert main(args) == 2
        one_line_error(capsys, str(theirs), "thesis.tex")
    assert snapshot(theirs) == before


def test_a_truncated_checkpoint_is_named_on_resume_and_evaluate(data, run, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    ckpt = damaged / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    before = snapshot(damaged)
    assert main(train_args(data, damaged, "--resume")) == 2
    one_line_error(capsys, str(ckpt), "damaged or truncated")
    out = tmp_path / "eval" / "metrics.json"
    assert main(["evaluate", "--run", str(damaged), "--data", str(data), "--out", str(out),
                 "--no-progress", "--no-plots"]) == 2  # fmt: skip
    one_line_error(capsys, str(ckpt), "damaged or truncated")
    assert snapshot(damaged) == before and not out.exists()


def test_training_with_every_shard_unreachable_fails_and_saves_nothing(data, tmp_path, capsys):
    with socket.socket() as s:  # a port with nothing listening: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{port}/train-{{000000..000001}}.tar"
    assert main(train_args(data, out, "--shards", url)) == 2
    one_line_error(capsys, "no training sample", "unreachable", "train-000000.tar")
    assert not (out / "checkpoint.pt").exists()


# ----------------------------------------------------------------- preprocessing
def test_a_full_disk_stops_preprocessing_with_one_line_and_a_rerun_finishes(raw, data, tmp_path):
    """A real process whose writes fail (file-size limit: EFBIG, like ENOSPC) ends with one
    line naming the file; the rerun without the limit finishes with the same output."""
    out = tmp_path / "dataset"

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    command = [sys.executable, "-m", "hydromae", *preprocess_args(raw, out)]
    failed = subprocess.run(command, capture_output=True, text=True, preexec_fn=limited)
    assert failed.returncode == 2, failed.stderr[-2000:]
    err = failed.stderr.strip().splitlines()
    assert "Traceback" not in failed.stderr and "File too large" in err[-1], failed.stderr[-2000:]
    assert str(out) in err[-1]
    assert not (out / MANIFEST).exists()
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert snapshot(out / SHARDS) == {
        k.replace(str(data), str(out)): v for k, v in snapshot(data / SHARDS).items()
    }


def test_a_failed_run_does_not_block_the_corrected_rerun(raw, tmp_path, capsys):
    """Inputs are checked before anything is stamped; a run whose inputs change is started
    over; a finished dataset whose inputs changed is refused, never kept as complete."""
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    series = sorted(copy.rglob("CAMELS_GB_hydromet_timeseries_*.csv"))[0]
    good = series.read_text()
    series.write_text(good.replace("date,", "dates,", 1))  # no 'date' column
    out = tmp_path / "dataset"
    assert main(preprocess_args(copy, out)) == 2
    one_line_error(capsys, str(series), "'date'")
    series.write_text(good)
    assert main(preprocess_args(copy, out)) == 0
    capsys.readouterr()
    assert (out / MANIFEST).exists()

    before = snapshot(out)
    series.write_text(good.replace("\n", "\n", 1) + "\n")  # one more byte: changed since
    assert main(preprocess_args(copy, out)) == 2
    one_line_error(capsys, str(out), "changed since", series.name)
    assert snapshot(out) == before


def test_inspect_finds_a_flipped_bit_in_a_store_chunk(data, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    assert main(["inspect", str(copy)]) == 0
    chunk = next(p for p in sorted((copy / STORE / "precip" / "c").rglob("*")) if p.is_file())
    blob = bytearray(chunk.read_bytes())
    blob[len(blob) // 2] ^= 0x10
    chunk.write_bytes(bytes(blob))
    capsys.readouterr()
    assert main(["inspect", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "precip: chunk" in out and "damaged" in out, out[-2000:]


def test_a_run_in_another_process_prints_one_line_for_a_missing_dataset(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hydromae", "inspect", str(tmp_path / "nothing")],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no manifest.json" in done.stderr
