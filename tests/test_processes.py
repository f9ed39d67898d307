"""Nothing a loader starts outlives the process that started it.

Each test runs a real Python process that builds a loader with two workers (the default
``forkserver`` context) on a small dataset and iterates it slowly. That process and every
process it starts (its two DataLoader workers, the fork server, the resource tracker)
carry a unique environment variable, so a scan of ``/proc/*/environ`` finds them all,
whoever their parent is. The process then ends in one of three ways (SIGKILL, a normal
return, an exception), and within a bounded time none of them may be left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipeline import config
from pipeline.lifetime import process_alive, wait_for_exit
from preprocessing.job import run_job
from preprocessing.plan import PreprocessConfig
from preprocessing.synth import generate

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="finds processes through /proc/*/environ"
)

TAG = "HYDROMAE_TEST_PROCESS_TAG"
GONE_WITHIN = 15.0  # seconds after the process ends, for everything it started to end
START_WITHIN = 180.0  # seconds for the process to have its workers up

# iterates until the stop file appears, then returns ("exit") or raises ("raise"); "kill"
# never sees a stop file and is killed
CHILD = """
import itertools, os, sys, time
from pipeline.loader import build_loader
source, mode, stop = sys.argv[1:4]
loader = build_loader(source=source, num_workers=2, batch_size=1, rank=0, world_size=1)
for epoch in itertools.count():
    loader.set_epoch(epoch)
    for batch in loader:
        print("batch", epoch, list(batch["sample_key"]), flush=True)
        if os.path.exists(stop):
            if mode == "raise":
                raise RuntimeError("the trainer failed")
            sys.exit(0)
        time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """60 synthetic days, 2 catchments, 4 training windows of 10 days in 2 shards."""
    raw = tmp_path_factory.mktemp("raw")
    generate(raw, start="2000-01-01", days=60, catchments=2, seed=3, progress=False)
    out = tmp_path_factory.mktemp("data") / "dataset"
    settings = dict(
        window=10, stride=10, samples_per_shard=2, progress=False, out=out,
        train="2000-01-01:2000-02-09", val="2000-02-10:2000-02-19", test="2000-02-20:2000-02-29",
    )  # fmt: skip
    run_job(config.load(PreprocessConfig, raw / "preprocess.toml", settings))
    return out


def tagged(tag: str) -> dict[int, tuple[int, str]]:
    """``{pid: (parent pid, command line)}`` of the live processes whose environment has
    ``TAG=tag`` (zombies hold no memory and are not counted: they have ended)."""
    found = {}
    needle = f"{TAG}={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if fields[0] not in (b"Z", b"X"):
            found[pid] = (int(fields[1]), cmdline)
    return found


def roles(processes: dict[int, tuple[int, str]], main: int) -> dict[str, list[int]]:
    """The processes by role: the fork server and the resource tracker (children of
    ``main``) and the workers (children of the fork server)."""
    server = [p for p, (ppid, cmd) in processes.items() if ppid == main and "forkserver" in cmd]
    return {
        "fork server": server,
        "resource tracker": [
            p for p, (ppid, cmd) in processes.items() if ppid == main and "resource_tracker" in cmd
        ],
        "workers": [p for p, (ppid, _) in processes.items() if server and ppid == server[0]],
    }


def wait_until(condition, seconds: float, step: float = 0.1) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


def end_leftovers(tag: str) -> None:
    """Kill what a failed test left: the workers (children of the fork server) first, so
    that the fork server and the resource tracker can end by themselves (the tracker then
    removes the semaphores the run made), then whatever is still there after 10 s."""
    left = tagged(tag)
    servers = {p for p, (_, cmd) in left.items() if "forkserver" in cmd}
    for pid, (ppid, _) in left.items():
        if ppid in servers:
            os.kill(pid, signal.SIGKILL)
    if not wait_until(lambda: not tagged(tag), 10.0):
        for pid in tagged(tag):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("ending", ["kill", "exit", "raise"])
def test_nothing_the_loader_starts_outlives_its_process(dataset, tmp_path, ending):
    tag = uuid.uuid4().hex
    stop = tmp_path / "stop"
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(dataset), ending, str(stop)],
            env={**os.environ, TAG: tag},
            stdout=stdout,
            stderr=stderr,
        )
    try:
        # wait until its workers exist, with the fork server and the resource tracker
        def started() -> bool:
            assert proc.poll() is None, err.read_text()
            found = roles(tagged(tag), proc.pid)
            return all(found.values()) and len(found["workers"]) == 2

        assert wait_until(started, START_WITHIN), (tagged(tag), err.read_text())
        assert wait_until(lambda: "batch" in out.read_text(), START_WITHIN)
        before = roles(tagged(tag), proc.pid)
        assert [len(before[r]) for r in ("fork server", "resource tracker")] == [1, 1]

        if ending == "kill":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            stop.touch()
        code = proc.wait(timeout=60)
        assert code == {"kill": -signal.SIGKILL, "exit": 0, "raise": 1}[ending], err.read_text()
        if ending == "raise":
            assert "RuntimeError: the trainer failed" in err.read_text()

        # everything it started ends: workers, fork server, resource tracker (a process
        # that is exiting may have lost its environment already: its pid is asked too)
        started_pids = [p for pids in before.values() for p in pids]

        def ended() -> bool:
            return not tagged(tag) and not any(process_alive(p) for p in started_pids)

        assert wait_until(ended, GONE_WITHIN), (
            f"{ending}: still alive {GONE_WITHIN} s after the process ended: {before} "
            f"{[p for p in started_pids if process_alive(p)]} {tagged(tag)}"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        end_leftovers(tag)


def test_a_worker_ends_with_the_process_it_watches(tmp_path):
    """``exit_with`` ends the watching process as soon as the watched one is killed, even
    while the watched one is an unreaped zombie (its parent has not waited for it)."""
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pipeline.lifetime import exit_with\n"
            "exit_with(int(sys.argv[1]), code=7)\n"
            "time.sleep(600)\n",
            str(watched.pid),
        ]
    )
    try:
        time.sleep(1.0)
        assert watcher.poll() is None  # watching, not ended
        os.kill(watched.pid, signal.SIGKILL)  # not reaped yet: a zombie
        assert watcher.wait(timeout=GONE_WITHIN) == 7
        assert not process_alive(watched.pid)
    finally:
        for proc in (watcher, watched):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_without_a_pidfd_the_watch_polls(monkeypatch):
    """Where ``os.pidfd_open`` is missing, ``wait_for_exit`` asks every 0.5 s, and counts
    a killed, unreaped (zombie) process as ended."""
    monkeypatch.delattr(os, "pidfd_open")
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    waiter = threading.Thread(target=wait_for_exit, args=(watched.pid,), daemon=True)
    try:
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive()  # still waiting
        os.kill(watched.pid, signal.SIGKILL)  # not reaped: a zombie
        waiter.join(timeout=GONE_WITHIN)
        assert not waiter.is_alive()
    finally:
        if watched.poll() is None:
            watched.kill()
        watched.wait()
