"""``run_tasks``: independent calls as Dask tasks with a progress bar, where the client rule says.

The conversion (and its verification) is thousands of small, independent, side-effecting
calls whose results are a few bytes of status each; they are submitted as futures on a
distributed client (so the bar moves as each finishes and a failure cancels the rest), or
computed as delayed calls on Dask's local scheduler otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .client import current_client


def run_tasks(calls: Sequence[tuple[Callable, tuple]], *, client: Any = None,
              progress: bool = True, desc: str = "") -> list:
    """Run ``func(*args)`` for every call; results in call order (see :mod:`.client`)."""
    if not calls:
        return []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(calls), desc=desc, unit="block", disable=not progress, leave=True)
    try:
        client = current_client(client)
        if client is not None:
            from distributed import as_completed

            futures = [client.submit(f, *args, pure=False) for f, args in calls]
            order = {f.key: i for i, f in enumerate(futures)}
            results: list = [None] * len(futures)
            try:
                # loop=: the given client need not be the default one
                for fut in as_completed(futures, loop=client.loop):
                    results[order[fut.key]] = fut.result()
                    bar.update(1)
            except BaseException:
                client.cancel(futures)
                raise
            return results
        import dask
        from dask.callbacks import Callback

        class _Bar(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                bar.update(1)

        tasks = [dask.delayed(f, pure=False)(*args) for f, args in calls]
        with _Bar():
            return list(dask.compute(*tasks))
    finally:
        bar.close()
