"""Does the loader feed a GPU? The training step and the whole loop, on one CUDA device.

    python bench/gpu.py [--seconds 20] [--presets tiny small full] [--workers 8]

For each model preset, on a small synthetic GB dataset made in a temporary directory
(``hydromae synth`` + ``preprocess``, the grids at their real 290 x 180 size):

- the training step alone: samples/s of forward, backward and optimizer step on a batch
  already on the device (bf16 autocast), with its peak device memory;
- the whole loop: samples/s from the loader (compact batches, pinned recycled buffers,
  non-blocking copies), and the share of each step spent waiting for the next batch;
- model FLOP utilisation: the step's FLOPs (``torch.utils.flop_counter``, which on CUDA
  counts the attention kernels too) over its time, against the device's dense bf16 peak
  (``--peak-tflops``, 989 for an H100/H200 SXM).

Prints one table and writes it to ``--out`` (JSON). Without CUDA it says so and exits 0.
Budget: about ``--seconds`` of timing per preset and measure, under 5 minutes in all.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import config  # noqa: E402
from pipeline.loader import build_loader  # noqa: E402
from pipeline.manifest import Manifest  # noqa: E402
from preprocessing.job import run_job  # noqa: E402
from preprocessing.plan import PreprocessConfig  # noqa: E402
from preprocessing.synth import generate  # noqa: E402
from training.device import to_device  # noqa: E402
from training.loss import LossConfig  # noqa: E402
from training.model import Geometry, HydroMAE  # noqa: E402
from training.model_config import ModelConfig  # noqa: E402
from training.optim import adamw  # noqa: E402


def dataset(work: Path, catchments: int) -> Path:
    raw, out = work / "raw", work / "dataset"
    generate(raw, start="2000-01-01", days=400, catchments=catchments, seed=0, progress=False)
    settings = dict(out=out, train="2000-01-01:2000-10-31", val="2000-11-01:2001-02-03",
                    test=None, progress=False, workers=8)  # fmt: skip
    run_job(config.load(PreprocessConfig, raw / "preprocess.toml", settings))
    return out


def step_fn(model, optimizer, loss_cfg):
    def step(batch):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = model.forward_loss(model(batch), loss_cfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(fn, seconds: float) -> tuple[int, float]:
    """Calls of ``fn`` (after two warm-up calls) in about ``seconds``, and their time."""
    fn()
    fn()
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    torch.cuda.synchronize()
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "full"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--catchments", type=int, default=32)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", type=Path, default=Path("gpu_bench.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; nothing measured (run it on a GPU host)")
        return
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device("cuda:0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset(Path(tmp), args.catchments)
        manifest = Manifest.read(data)
        loader = build_loader(
            source=str(data), split="train", batch_size=args.batch_size,
            num_workers=args.workers, layout="windows", window_samples=args.batch_size // 4,
            pin_memory=True, strategies={"seed": 0.5, "block": 0.2, "withhold": 0.3},
            rank=0, world_size=1,
        )  # fmt: skip
        for preset in args.presets:
            torch.manual_seed(0)
            cfg = ModelConfig.preset(preset)
            cfg.decoder = "cross"
            model = HydroMAE(
                cfg, Geometry.from_manifest(manifest, "unified"), manifest.normalizer()
            )
            model = model.to(device)
            optimizer, loss_cfg = adamw(model, 1e-4), LossConfig()
            step = step_fn(model, optimizer, loss_cfg)
            loader.set_epoch(0)
            batch = to_device(next(iter(loader)), device)
            with FlopCounterMode(display=False) as counter:
                step(batch)
            flops = counter.get_total_flops() / args.batch_size
            torch.cuda.reset_peak_memory_stats(device)
            n, seconds = timed(lambda step=step, batch=batch: step(batch), args.seconds)
            alone = n * args.batch_size / seconds
            memory = torch.cuda.max_memory_allocated(device) / 2**30
            waited, total, count, epoch = 0.0, 0.0, 0, 0
            stream = iter(loader)
            end = time.perf_counter() + args.seconds
            while time.perf_counter() < end:
                began = time.perf_counter()
                item = next(stream, None)
                if item is None:
                    epoch += 1
                    loader.set_epoch(epoch)
                    stream = iter(loader)
                    continue
                item = to_device(item, device)
                torch.cuda.synchronize()
                waited += time.perf_counter() - began
                step(item)
                torch.cuda.synchronize()
                total += time.perf_counter() - began
                count += 1
            row = {
                "preset": preset,
                "gflop_per_sample": flops / 1e9,
                "step_samples_per_s": alone,
                "loop_samples_per_s": count * args.batch_size / max(total, 1e-9),
                "data_wait": waited / max(total, 1e-9),
                "peak_memory_gib": memory,
                "mfu": flops * alone / (args.peak_tflops * 1e12),
            }
            rows.append(row)
            print(json.dumps(row))
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "rows": rows}))


if __name__ == "__main__":
    main()
