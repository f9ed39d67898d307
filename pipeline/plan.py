"""The loader's epoch plans: which windows (and catchments) each rank and worker reads.

Every choice is a pure function of its key, drawn from a generator keyed by
``pipeline.masking.new_generator`` (stable across processes), so that an epoch's plan is a
deterministic function of (seed, epoch, rank, world size, workers) and a resumed run can
rebuild it and skip what was consumed:

- which K catchments a window expands to: (seed, epoch, window key);
- the order of the windows of an epoch: (seed, epoch); of shards when streaming, and where
  the streamed window sequence starts (so which windows are left over);
- the Zarr source's sample order within a block of windows: (seed, epoch, rank, block),
  so that it does not depend on the workers.

A *slot* is one (rank, worker) pair; slot ``rank * workers + worker``. Training gives every
slot the same number of windows and so the same number of batches. The windows left over
when streaming (``total % slots``) are a different run of the epoch's window sequence each
epoch, the run after the previous epoch's: in a fixed shard order (one shard, say) no
window is left over two epochs running. Evaluation gives every window exactly once and
pads every slot (or rank) to the same number of batches with zero-weight samples.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.masking import new_generator
from pipeline.schema import window_key
from pipeline.window import balanced_ranges, ceil_div, chunks

PAD = -1  # catchment_index (and plan entry) of a padding sample


def choose_catchments(
    catchments: Sequence[int], k: int, seed: int, epoch: int, key: str, train: bool
) -> list[int]:
    """Catchments a window expands to, of ``catchments`` (indices; in training those not
    held out): all in order (evaluation), or in training K (or all) in an order drawn by
    (seed, epoch, key), so that a window's units, and the tail a unit size leaves over,
    change with the epoch."""
    n = len(catchments)
    if not train:
        return list(catchments)
    rng = new_generator(seed, "catchments", epoch, key)
    pick = rng.permutation(n) if k <= 0 or k >= n else rng.choice(n, size=k, replace=False)
    return [int(catchments[int(c)]) for c in pick]


def samples_per_window(n_catchments: int, k: int, train: bool) -> int:
    return n_catchments if not train or k <= 0 or k >= n_catchments else k


# ------------------------------------------------------------------ streaming plan
@dataclass(frozen=True)
class StreamPlan:
    """One slot's share of an epoch of shards.

    ``pieces``: ``(shard index, first window, windows)`` to read, in order; ``batches``: the
    batches this slot yields (the same for every slot); ``windows``: its window count.
    """

    pieces: list[tuple[int, int, int]]
    windows: int
    batches: int


def leftover_rotation(total: int, slots: int, seed: int, epoch: int) -> int:
    """Where training's window sequence starts in ``epoch``: an offset into it, in windows.

    The ``leftover = total % slots`` windows that do not fill a slot are the last ones of
    the sequence once it starts at this offset: the run just before the offset (wrapping
    round the end). The offset moves on by ``leftover`` each epoch from a start drawn by
    ``seed``, so the left-over runs of consecutive epochs are adjacent and never overlap
    (``2 * leftover < total`` whenever a slot gets a window): in a fixed shard order no
    position is left over two epochs running, and each is left over about once every
    ``total / leftover`` epochs. 0 when nothing is left over (the plan is then unrotated).
    """
    leftover = total % slots if slots <= total else 0
    if leftover == 0:
        return 0
    base = int(new_generator(seed, "rotation").integers(total))
    return (base + epoch * leftover) % total


def stream_plan(
    counts: Sequence[int],
    *,
    train: bool,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    worker: int,
    workers: int,
    per_window: int,
    batch_size: int,
) -> StreamPlan:
    """Which windows of which shards slot (rank, worker) reads in ``epoch``.

    The shards are put in an order ((seed, epoch) permutation in training, manifest order
    otherwise) and their windows, end to end, are cut into ``world * workers`` contiguous
    ranges, one per slot, rank-major. Training: the sequence first starts at
    :func:`leftover_rotation`'s offset (wrapping round its end, so a slot's range may end
    in the first shard), every range has ``total // slots`` windows and every slot yields
    ``windows * per_window // batch_size`` batches. Evaluation: the ranges cover every
    window (counts within one) and every slot yields as many batches as the largest
    needs, padded.
    """
    slots = world * workers
    order = (
        [int(i) for i in new_generator(seed, "shards", epoch).permutation(len(counts))]
        if train
        else list(range(len(counts)))
    )
    total = int(sum(counts))
    if train:
        size = total // slots
        offset = leftover_rotation(total, slots, seed, epoch)
        ranges = [((offset + s * size) % max(total, 1), size) for s in range(slots)]
        batches = size * per_window // batch_size
    else:
        ranges = balanced_ranges(total, slots)
        batches = ceil_div(ranges[0][1] * per_window, batch_size)  # the first is the largest
    start, size = ranges[rank * workers + worker]
    # the slot's range in the sequence: [start, start + size), wrapping round its end
    spans = [(start, min(start + size, total))]
    if start + size > total:
        spans.append((0, start + size - total))
    pieces = []
    for lo_span, hi_span in spans:
        offset = 0
        for shard in order:
            n = counts[shard]
            lo, hi = max(lo_span, offset), min(hi_span, offset + n)
            if lo < hi:
                pieces.append((shard, lo - offset, hi - lo))
            offset += n
    return StreamPlan(pieces, size, batches)


# ------------------------------------------------------------------ Zarr plan
def zarr_plan(
    starts: Sequence[dt.date],
    catchments: Sequence[int],
    *,
    train: bool,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    k: int,
    batch_size: int,
    shuffle_windows: int,
    unit: int = 1,
) -> np.ndarray:
    """Rank ``rank``'s batches of ``epoch``: ``[N, B, 2]`` int64 of (window, catchment).

    Training: the windows in a (seed, epoch) order, ``len // world`` contiguous ones per
    rank; within each block of ``shuffle_windows`` windows their samples, in units of
    ``unit`` samples of one window (a shorter tail dropped), are shuffled (keyed by (seed,
    epoch, rank, block)); the remainder of the last batch is dropped.
    Evaluation: windows in order, balanced contiguous ranges per rank, every catchment,
    padded with ``PAD`` entries to the largest rank's batch count. The plan does not depend
    on the number of workers: workers take batches round-robin.
    """
    n = len(starts)
    if train:
        size = n // world
        order = new_generator(seed, "windows", epoch).permutation(n)[
            rank * size : (rank + 1) * size
        ]
        refs: list[tuple[int, int]] = []
        for b0 in range(0, size, max(1, shuffle_windows)):
            block = []  # units: lists of (window, catchment) of one window
            for w in order[b0 : b0 + max(1, shuffle_windows)]:
                chosen = choose_catchments(
                    catchments, k, seed, epoch, window_key(starts[int(w)]), True
                )
                block += chunks([(int(w), c) for c in chosen], unit)
            perm = new_generator(seed, "block", epoch, rank, b0).permutation(len(block))
            refs += [ref for i in perm for ref in block[int(i)]]
        count = len(refs) // batch_size
        plan = np.asarray(refs[: count * batch_size], dtype=np.int64)
    else:
        ranges = balanced_ranges(n, world)
        count = ceil_div(ranges[0][1] * len(catchments), batch_size)
        lo, size = ranges[rank]
        refs = [(w, int(c)) for w in range(lo, lo + size) for c in catchments]
        refs += [(PAD, PAD)] * (count * batch_size - len(refs))
        plan = np.asarray(refs, dtype=np.int64)
    return plan.reshape(count, batch_size, 2)
