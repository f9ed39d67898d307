"""Windows in time, and how counts are dealt out: one definition for writer and loader.

A window is ``window`` consecutive days starting on a split's day; windows start every
``stride`` days and never straddle a split's end. Counts (windows to shards, windows to
ranks and workers, samples to batches) are split by the same few integer rules.
"""

from __future__ import annotations

import datetime as dt


def window_starts(first: dt.date, last: dt.date, window: int, stride: int) -> list[dt.date]:
    """Start days of the windows of ``window`` days, every ``stride`` days, that fit in
    ``first..last`` (both included): windows never straddle a split's end."""
    starts, day = [], first
    while day + dt.timedelta(days=window - 1) <= last:
        starts.append(day)
        day += dt.timedelta(days=stride)
    return starts


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from ``start`` to ``end``, both included."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers, exactly."""
    return -(-a // b)


def balanced_ranges(total: int, parts: int) -> list[tuple[int, int]]:
    """``(start, count)`` of ``parts`` contiguous ranges covering ``total``, counts within 1."""
    base, extra = divmod(total, parts)
    out, start = [], 0
    for i in range(parts):
        n = base + (i < extra)
        out.append((start, n))
        start += n
    return out


def balanced_counts(total: int, most: int) -> list[int]:
    """``total`` items in the fewest parts of at most ``most``, counts differing by <= 1."""
    if total == 0:
        return []
    return [n for _, n in balanced_ranges(total, ceil_div(total, most))]


def worker_share(total: int, worker: int, workers: int) -> int:
    """How many of ``total`` round-robin items (item j to worker j % workers) are ``worker``'s."""
    return max(0, ceil_div(total - worker, workers))


def chunks(items: list, size: int) -> list[list]:
    """``items`` in consecutive lists of ``size``; a shorter tail is dropped."""
    return [items[i : i + size] for i in range(0, len(items) - size + 1, size)]
