"""Benchmark: preprocessing's peak memory does not grow with the number of years.

Generates synthetic data for 2 and for 8 years (``hydromae synth``), preprocesses each in
a fresh process, and reports that process's peak RSS above its RSS after imports, and the
ratio of the two (goal: at most 1.3). Run with ``make bench``; it takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time
from pipeline import config
from preprocessing.job import run_job
from preprocessing.plan import PreprocessConfig

def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

raw, out = sys.argv[1], sys.argv[2]
cfg = config.load(PreprocessConfig, f"{raw}/preprocess.toml", {"out": out, "progress": False})
base = rss_kib("VmRSS")
start = time.perf_counter()
run_job(cfg)
print(json.dumps({"rss_after_imports_mib": base / 1024, "peak_rss_mib": rss_kib("VmHWM") / 1024,
                  "seconds": time.perf_counter() - start}))
"""


def measure(years: int, work: Path, catchments: int) -> dict:
    raw = work / f"raw{years}"
    subprocess.run(
        [sys.executable, "-m", "hydromae", "synth", "--out", str(raw),
         "--days", str(365 * years), "--catchments", str(catchments), "--no-progress"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(raw), str(work / f"data{years}")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["above_imports_mib"] = result["peak_rss_mib"] - result["rss_after_imports_mib"]
    result["years"] = years
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, nargs=2, default=[2, 8])
    parser.add_argument("--catchments", type=int, default=50)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(y, Path(tmp), args.catchments) for y in args.years]
    for r in rows:
        print(
            f"{r['years']} years: peak RSS {r['peak_rss_mib']:.0f} MiB, after imports "
            f"{r['rss_after_imports_mib']:.0f} MiB, above imports "
            f"{r['above_imports_mib']:.0f} MiB, preprocess {r['seconds']:.0f} s"
        )
    ratio = rows[1]["above_imports_mib"] / rows[0]["above_imports_mib"]
    print(f"ratio {args.years[1]} / {args.years[0]} years: {ratio:.2f} (goal <= 1.3)")
    print(f"(bench took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
