"""Run the preprocessing's tasks with dask: local threads, or a dask.distributed cluster.

Tasks are plain ``fn(*args)`` calls, their arguments passed opaquely (not walked by dask);
the results come back in task order, so that
everything merged from them (normalisation moments, the shard list) is the same however
the run went. A progress bar counts finished tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from preprocessing.plan import PreprocessConfig


def run_tasks(
    tasks: Sequence[tuple[Callable[..., Any], tuple]], cfg: PreprocessConfig, desc: str
) -> list[Any]:
    """Run ``fn(*args)`` tasks with dask (local threads or a distributed cluster), in order."""
    import dask
    from tqdm import tqdm

    if not tasks:
        return []
    # the arguments pass opaquely, each distinct object once: dask would otherwise walk every
    # argument of every task (the per-day file index inside a job), which grows the graph's
    # construction with the square of the days
    shared: dict[int, Any] = {}

    def opaque(arg: Any) -> Any:
        if id(arg) not in shared:
            shared[id(arg)] = dask.delayed(arg, traverse=False)
        return shared[id(arg)]

    delayed = [dask.delayed(fn, pure=False)(*map(opaque, args)) for fn, args in tasks]
    bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=not cfg.progress)
    try:
        if cfg.scheduler:
            from distributed import Client, as_completed

            with Client(cfg.scheduler) as client:
                futures = client.compute(delayed)
                for _ in as_completed(futures):
                    bar.update()
                return client.gather(futures)
        from dask.callbacks import Callback

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in keys:
                    bar.update()

        keys = {d.key for d in delayed}
        # a pool of our own, shut down (waiting for running tasks) before anything is
        # raised: a failed task never leaves another still reading files behind it
        with ThreadPoolExecutor(cfg.workers) as pool, _Progress():
            return list(dask.compute(*delayed, scheduler="threads", pool=pool))
    finally:
        bar.close()
