"""Loader workers end with the process that started them (``docs/loader.md``, "Process lifetime").

With the ``forkserver`` context (the loader's default) a DataLoader worker's parent is the
fork server, not the process that started it. torch's own check in the worker (has the
parent's pid changed?) then never fires, and the fork server waits for its children: a
trainer killed by SIGKILL would leave its workers, the fork server and the resource
tracker running, each worker holding its memory. So every worker runs
:func:`exit_with` on the starting process: a daemon thread that waits for that process to
end and then ends the worker (``os._exit``). Once the workers are gone, the fork server
sees the end of its "alive" pipe and exits, and the resource tracker sees the end of its
pipe and exits too (both pipes were held open by the workers).
"""

from __future__ import annotations

import os
import select
import threading
import time

POLL_SECONDS = 0.5  # how often the fallback (no pidfd) asks whether the process lives


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists and (where ``/proc`` tells) is no zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): a zombie counts as alive until it is reaped
    return state not in (b"Z", b"X")


def wait_for_exit(pid: int) -> None:
    """Return once process ``pid`` has ended (exited or killed; reaped or not).

    A pidfd (Linux 5.3 or later) becomes readable when its process ends: no polling, no
    confusion with a later process that reuses the pid. Elsewhere, :func:`process_alive`
    every ``POLL_SECONDS``.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd_open (not Linux, an old kernel)
        while process_alive(pid):
            time.sleep(POLL_SECONDS)
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll()
    finally:
        os.close(fd)


def exit_with(pid: int, code: int = 0) -> threading.Thread:
    """End this process with ``os._exit(code)`` as soon as process ``pid`` has ended.

    Watches from a daemon thread (started and returned), so the caller goes on working.
    ``os._exit`` skips the interpreter's clean-up: nothing is left for this process to
    hand on once ``pid``, the only consumer of its batches, is gone.
    """

    def watch() -> None:
        wait_for_exit(pid)
        os._exit(code)

    thread = threading.Thread(target=watch, name=f"exit-with-{pid}", daemon=True)
    thread.start()
    return thread


__all__ = ["exit_with", "process_alive", "wait_for_exit"]
