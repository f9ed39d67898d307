"""Where bytes come from: local paths, ``file://``, ``http(s)://``, ``pipe:CMD`` and fsspec URLs.

``open_location`` gives a binary stream for any of them; ``read_location`` reads one whole;
:class:`Retry` is the one retry rule (bounded attempts, exponential backoff) for every
read that may fail for a while (a server restarting, a network hiccup).
"""

from __future__ import annotations

import io
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


class MissingExtra(ImportError):
    """A location needs an optional extra that is not installed (the message names it)."""


@dataclass(frozen=True)
class Retry:
    """How a failing read is tried again: up to ``retries`` times, ``backoff`` seconds
    before the first retry, doubled before each next one."""

    retries: int = 3
    backoff: float = 0.5

    def wait(self, attempt: int, before: Callable[[], None] | None = None) -> bool:
        """Before retry number ``attempt`` (0-based): call ``before``, sleep the retry's
        delay and return True; False (nothing called) once the retries are spent."""
        if attempt >= self.retries:
            return False
        if before is not None:
            before()
        time.sleep(self.backoff * 2**attempt)
        return True


def is_url(location: str) -> bool:
    return location.startswith("pipe:") or "://" in location


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a directory or a URL."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def shard_label(location: str) -> str:
    """The shard's file name: ``train-000001.tar`` for a path, URL or ``pipe:`` command."""
    if location.startswith("pipe:"):
        tokens = location[5:].split()
        location = tokens[-1] if tokens else location
    path = urllib.parse.urlparse(location).path if "://" in location else location
    return Path(path).name


class _PipeStream(io.RawIOBase):
    """The stdout of a ``pipe:`` command; a failing command is an ``OSError`` at EOF."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.proc = subprocess.Popen(
            command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.proc.stdout.readinto(buffer)
        if n == 0:
            code = self.proc.wait()
            if code != 0:
                err = self.proc.stderr.read().decode(errors="replace").strip()
                raise OSError(f"pipe:{self.command} exited with {code}: {err[-300:]}")
        return n

    def close(self) -> None:
        if not self.closed:
            self.proc.stdout.close()
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stderr.close()
        super().close()


def open_location(location: str, timeout: float = 60.0) -> BinaryIO:
    """A binary stream: a local path, ``file://``, ``http(s)://``, ``pipe:CMD`` or fsspec URL.

    HTTP uses the standard library (no extra dependency); other schemes (``s3://``,
    ``gs://``, ...) go through ``fsspec`` and need its plugin for that scheme installed
    (``s3://``: ``pip install "hydromae[s3]"``); without it, :class:`MissingExtra` says so.
    """
    if location.startswith("pipe:"):
        return io.BufferedReader(_PipeStream(location[5:]), buffer_size=1 << 20)
    if location.startswith(("http://", "https://")):
        return urllib.request.urlopen(location, timeout=timeout)
    if location.startswith("file://"):
        location = urllib.parse.urlparse(location).path
    if "://" in location:
        return _open_fsspec(location)
    return open(location, "rb", buffering=1 << 20)


def _open_fsspec(location: str) -> BinaryIO:
    """``location`` opened by ``fsspec``; a missing plugin is an ``ImportError`` naming it."""
    scheme = location.split("://", 1)[0]
    try:
        import fsspec

        return fsspec.open(location, "rb").open()
    except ImportError as err:
        if scheme in ("s3", "s3a"):
            hint = 's3:// needs s3fs: pip install "hydromae[s3]"'
        else:
            hint = f"{scheme}:// needs fsspec and its plugin for {scheme}:// installed"
        raise MissingExtra(f"cannot open {location}: {hint} ({err})") from err


def read_location(location: str, retry: Retry | None = None, timeout: float = 60.0) -> bytes:
    """All bytes at ``location``, tried again on ``OSError`` as ``retry`` says (a missing
    file is not tried again)."""
    retry = retry or Retry()
    attempt = 0
    while True:
        try:
            with open_location(location, timeout) as fh:
                return fh.read()
        except FileNotFoundError:
            raise
        except OSError:
            if not retry.wait(attempt):
                raise
            attempt += 1
