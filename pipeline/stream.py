"""One shard streamed for the loader: its planned windows, retried reads, faults reported.

Nothing is raised: a read that fails is tried again (``pipeline.location.Retry``), then
reported UNREACHABLE; a malformed archive, or one that ends before the manifest's window
count, is reported CORRUPT, with every complete window before the damage delivered; the
caller pads what is missing so that every rank still gets its batches.
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

    Windows before ``first`` are read past, not decoded; reading stops after ``limit``.
    Opening and reading are tried again on ``OSError`` as ``retry`` says (a retry after a
    partial read resumes after the windows already given); after the last retry the shard
    is reported UNREACHABLE. A malformed archive, or one that ends before
    ``min(expected, limit)`` windows (the manifest's count), is reported CORRUPT.
    """
    retry = retry or Retry()
    name = shard_label(location)
    limit = expected if limit is None else limit
    nxt = first  # the next window to give
    attempt = 0
    while nxt < limit:
        try:
            with open_location(location, timeout) as stream:
                windows = shard_windows(
                    stream, name, shape, report, keep=lambda i, lo=nxt: lo <= i < limit
                )
                while nxt < limit:
                    try:
                        position, window = next(windows)
                    except StopIteration as stop:
                        if stop.value < min(expected, limit):
                            report(
                                LoaderEvent(
                                    CORRUPT,
                                    name,
                                    f"ends after {stop.value} window(s), the manifest says "
                                    f"{expected}",
                                )
                            )
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
