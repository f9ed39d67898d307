"""Benchmark: mask generation and a whole collate call (``make bench``; not a test).

On B = 32 samples of T = 90 days with the reference mask's 94 valid patches, in one run:

  (a) the seed's straightforward loop: per sample and per day ``np.random.choice`` of 70 of
      the 94 valid patches, per sample 67 of 90 days (the reference);
  (b) ``MultiScaleMaskedCollate.generate_masks`` (the five masks, one generator);
  (c) a whole collate call on samples in the dataset layout (``[T, 94, 10, 10]`` float32
      images with NaN over sea, ``sample_key``-keyed masks), and the keyed mask draw inside it.

Absolute times on a shared machine are noisy: read the ratios, which are measured in the
same run. Each figure is the median over ``--rounds`` rounds of the median of ``--repeats``
calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from pipeline import IMAGE_MODALITIES, VECTOR_MODALITIES, MultiScaleMaskedCollate, patchify


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def seed_loop(valid: np.ndarray, batch: int, days: int, n_patches: int) -> None:
    """The original specification's per-sample, per-day loop (docs/masking.md)."""
    image = np.zeros((batch, days, n_patches), dtype=bool)
    vector = np.zeros((batch, days), dtype=bool)
    n_mask = int(len(valid) * 0.75)
    for b in range(batch):
        for t in range(days):
            image[b, t, np.random.choice(valid, n_mask, replace=False)] = True  # noqa: NPY002
        vector[b, np.random.choice(days, int(days * 0.75), replace=False)] = True  # noqa: NPY002


def dataset_samples(collate: MultiScaleMaskedCollate, batch: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    grid, days = collate.grid, collate.seq_len
    valid = collate.valid_patch_indices.numpy()
    sea = patchify(~collate.land_mask, grid)[valid]  # [N_valid, p, p]
    samples = []
    for i in range(batch):
        sample: dict = {"sample_key": f"20000101-{i:05d}"}
        for name in IMAGE_MODALITIES:
            x = rng.standard_normal(
                (days, len(valid), grid.patch_size, grid.patch_size), np.float32
            )
            x[:, sea] = np.nan
            sample[name] = x
        for name in VECTOR_MODALITIES:
            sample[name] = rng.standard_normal(days, np.float32)
        samples.append(sample)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30, help="calls per figure and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead")
    args = parser.parse_args()

    collate = MultiScaleMaskedCollate(seed=0)
    b, t = args.batch, collate.seq_len
    valid = collate.valid_patch_indices.numpy()
    samples = dataset_samples(collate, b, 0)
    keys = [s["sample_key"] for s in samples]
    noise = torch.rand(b, t, len(valid), dtype=torch.float64)

    measures = {
        "seed_loop_ms": (
            lambda: seed_loop(valid, b, t, collate.grid.num_patches),
            max(5, args.repeats // 5),
        ),
        "noise_argsort_ms": (lambda: noise.argsort(dim=-1), args.repeats),
        "generate_masks_ms": (lambda: collate.generate_masks(b), args.repeats),
        "keyed_masks_ms": (lambda: collate.draws.masks(keys, t), args.repeats),
        "collate_call_ms": (lambda: collate(samples), max(5, args.repeats // 3)),
    }
    # rounds interleave the measures, so that a busy spell on the machine hits all of them
    rounds = [{k: median_ms(fn, n) for k, (fn, n) in measures.items()} for _ in range(args.rounds)]
    figures: dict[str, float] = {k: statistics.median(r[k] for r in rounds) for k in measures}
    figures["speedup_vs_loop"] = figures["seed_loop_ms"] / figures["generate_masks_ms"]
    figures["masking_share_of_collate"] = figures["keyed_masks_ms"] / figures["collate_call_ms"]
    figures.update(batch=b, days=t, valid_patches=len(valid), threads=torch.get_num_threads())
    if args.json:
        print(json.dumps(figures))
        return
    rows = [
        ("(a) seed loop, np.random.choice per sample and day", "seed_loop_ms"),
        ("    plain noise-argsort over [B, T, 94] (reference)", "noise_argsort_ms"),
        ("(b) generate_masks", "generate_masks_ms"),
        ("(c) whole collate call", "collate_call_ms"),
        ("    of which the sample_key-keyed mask draw", "keyed_masks_ms"),
    ]
    print(f"B={b}, T={t}, {len(valid)} valid patches, torch threads {figures['threads']}")
    for label, key in rows:
        print(f"  {label:<52}{figures[key]:9.2f} ms")
    speedup, share = figures["speedup_vs_loop"], figures["masking_share_of_collate"]
    print(f"  speed-up of generate_masks over the loop: {speedup:.1f}x (goal >= 10x)")
    print(f"  masking share of a collate call: {100 * share:.1f}% (goal <= 5%)")


if __name__ == "__main__":
    main()
