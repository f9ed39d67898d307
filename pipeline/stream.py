"""One shard streamed for the loader: its planned windows, retried reads, faults reported.

Nothing is raised: a read that fails is tried again (``pipeline.location.Retry``), then
reported UNREACHABLE; a malformed archive, or one that ends before the manifest's window
count, is reported CORRUPT, with every complete window before the damage delivered; a
window that is malformed or fails its checksums is reported BAD_WINDOW by the decode stage
(``pipeline.shard.shard_windows``) and dropped. The caller pads what is missing so that
every rank still gets its batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.faults import CORRUPT, RETRY, UNREACHABLE, LoaderEvent, Report
from pipeline.location import Retry, open_location, shard_label
from pipeline.shard import ShardError, WindowShape, shard_windows


def stream_shard(
    location: str,
    expected: int,
    shape: WindowShape,
    report: Report,
    first: int = 0,
    limit: int | None = None,
    retry: Retry | None = None,
    timeout: float = 60.0,
) -> Iterator[dict[str, Any]]:
    """Windows ``first`` to ``limit - 1`` of the shard at ``location``, with fault reports.

    Windows before ``first`` are read past, not decoded. Reading stops after ``limit``,
    unless ``limit`` is the shard's end (``expected``, the manifest's count): then the
    rest of the stream is read too (its end blocks: 1 KiB), so that a shard truncated or
    damaged after its last window, or holding more windows than the manifest says, is
    reported. Opening and reading are tried again on ``OSError`` as ``retry`` says (a
    retry after a partial read resumes after the windows already given); after the last
    retry the shard is reported UNREACHABLE. A malformed archive, or one that ends before
    ``min(expected, limit)`` windows, is reported CORRUPT.
    """
    retry = retry or Retry()
    name = shard_label(location)
    limit = expected if limit is None else limit
    to_end = limit >= expected  # read on to the end blocks, to check them
    nxt = first  # the next window to give
    attempt = 0
    while nxt < limit or to_end:
        try:
            with open_location(location, timeout) as stream:
                windows = shard_windows(
                    stream, name, shape, report, keep=lambda i, lo=nxt: lo <= i < limit
                )
                while nxt < limit or to_end:
                    try:
                        position, window = next(windows)
                    except StopIteration as stop:
                        _check_count(stop.value, expected, limit, name, report)
                        return
                    nxt = position + 1
                    yield window
                return
        except ShardError as err:
            report(LoaderEvent(CORRUPT, name, str(err)))
            return
        except (OSError, EOFError) as err:
            failed = LoaderEvent(RETRY, name, f"{location}: attempt {attempt + 1} failed: {err}")
            if not retry.wait(attempt, lambda event=failed: report(event)):
                report(
                    LoaderEvent(
                        UNREACHABLE, name, f"{location}: after {retry.retries} retries: {err}"
                    )
                )
                return
            attempt += 1


def _check_count(seen: int, expected: int, limit: int, name: str, report: Report) -> None:
    """Report CORRUPT when a shard read to its end held fewer windows than wanted (or,
    read to its end, more than the manifest says); ``seen`` counts good and bad ones."""
    if seen < min(expected, limit):
        detail = f"ends after {seen} window(s), the manifest says {expected}"
    elif limit >= expected and seen > expected:
        detail = f"holds {seen} windows, the manifest says {expected}"
    else:
        return
    report(LoaderEvent(CORRUPT, name, detail))
