"""What the loader skipped, retried and padded: events named by their shard, and counts.

Problems with the data are not raised inside the loader: each becomes a
:class:`LoaderEvent` handed to a ``report`` callback, so that the loader can skip, count
and log it and still give every rank the same number of batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# kinds of LoaderEvent
RETRY = "retry"  # a shard could not be opened or read; trying again
UNREACHABLE = "unreachable"  # ... and gave up after the last retry: the shard is skipped
CORRUPT = "corrupt"  # a shard is truncated or damaged: the rest of it is skipped
BAD_WINDOW = "bad_window"  # one window is malformed or fails its checksums: it is skipped


@dataclass(frozen=True)
class LoaderEvent:
    """Something the loader skipped or retried, named by its shard (and window key)."""

    kind: str  # RETRY, UNREACHABLE, CORRUPT or BAD_WINDOW
    shard: str  # the shard's name, e.g. "train-000001.tar"
    detail: str  # what happened, naming the member where there is one
    window: str = ""  # the window's key (YYYYMMDD) for BAD_WINDOW, else ""

    def message(self) -> str:
        what = {
            RETRY: "retrying",
            UNREACHABLE: "unreachable, skipped",
            CORRUPT: "corrupt or truncated, rest of the shard skipped",
            BAD_WINDOW: "bad window skipped",
        }[self.kind]
        where = f"window {self.window}: " if self.window else ""
        return f"shard {self.shard}: {what}: {where}{self.detail}"


Report = Callable[[LoaderEvent], None]


@dataclass
class LoaderStats:
    """What the loader skipped, retried and padded, as seen by the main process.

    ``events``: every :class:`LoaderEvent` in arrival order (each also logged as a warning
    naming its shard); ``padded_samples``: zero-weight samples given.
    """

    events: list[LoaderEvent] = field(default_factory=list)
    padded_samples: int = 0

    def record(self, event: LoaderEvent) -> None:
        self.events.append(event)

    def _shards(self, kind: str) -> list[str]:
        return sorted({e.shard for e in self.events if e.kind == kind})

    @property
    def corrupt_shards(self) -> list[str]:
        """Names of the shards found truncated or corrupt (their rest skipped)."""
        return self._shards(CORRUPT)

    @property
    def unreachable_shards(self) -> list[str]:
        """Names of the shards that could not be read after every retry (skipped)."""
        return self._shards(UNREACHABLE)

    @property
    def bad_windows(self) -> int:
        """Windows skipped for a missing or malformed member or a failed checksum."""
        return sum(e.kind == BAD_WINDOW for e in self.events)

    @property
    def bad_window_keys(self) -> list[tuple[str, str]]:
        """``(shard, window key)`` of every window skipped as bad, sorted."""
        return sorted({(e.shard, e.window) for e in self.events if e.kind == BAD_WINDOW})

    @property
    def retries(self) -> int:
        return sum(e.kind == RETRY for e in self.events)

    def counts(self) -> dict[str, int]:
        return dict(Counter(e.kind for e in self.events)) | {"padded": self.padded_samples}
