"""``get_client()``: the current Dask client, else dask-gateway on the hub, else a LocalCluster.

The choice comes from the environment, not from the scientist: on the hub the chart sets
``DASK_GATEWAY__ADDRESS`` (and friends) in every user pod, so the same notebook cell creates a
gateway cluster there and a local process cluster on a laptop.

A cluster's failures are said in the user's words too (:func:`explain`): the client that
``get_client()`` makes turns distributed's ``KilledWorker`` (a task whose workers kept dying,
most often for memory) into :class:`~neuropixels_dask.errors.WorkerMemoryError` naming the task,
the probe and the setting to raise (``worker_memory``), and a computation cut off by a lost
scheduler into :class:`~neuropixels_dask.errors.ClusterLostError`; ``map_sessions`` does the same
per session.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from typing import Any

import dask.config
import numpy as np

from . import config
from .errors import ClusterLostError, WorkerMemoryError
from .tasks.client import current_client

log = logging.getLogger(__name__)


def gateway_cluster(n_workers: int | None = None, adapt_max: int | None = None, **options):
    """Create a dask-gateway cluster with cluster options from config (overridable)."""
    from dask_gateway import Gateway

    if n_workers is not None:  # refuse a bad count before a cluster exists
        _positive_int("n_workers", n_workers)
    gateway = Gateway()
    opts = gateway.cluster_options()
    cfg = config.get("cluster") or {}
    wanted = {"worker_cores": cfg.get("worker_cores"), "worker_memory": cfg.get("worker_memory")}
    wanted.update(options)
    for key, value in wanted.items():
        if value is None:
            continue
        if key not in opts:
            raise ValueError(f"The hub offers no cluster option {key!r}; available: "
                             f"{sorted(opts)}")
        opts[key] = value
    cluster = gateway.new_cluster(opts)
    adapt_max = adapt_max if adapt_max is not None else cfg.get("adaptive_maximum")
    if adapt_max:
        cluster.adapt(minimum=1, maximum=int(adapt_max))
    else:
        cluster.scale(_positive_int("n_workers", n_workers if n_workers is not None else
                                    (cfg.get("n_workers") or 2)))
    return cluster


def _positive_int(name: str, value: Any) -> int:
    """A worker or thread count as a positive int: 0 or -1 would give a cluster whose
    computations wait forever for a worker, text would surface as int()'s bare ValueError."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool) or \
        isinstance(value, float) and value.is_integer()
    if not ok or int(value) < 1:
        raise ValueError(f"{name}={value!r}: give a whole number of at least 1 (e.g. "
                         f"get_client({name}=4)).")
    return int(value)


def threads_per_worker(value: Any = None) -> int:
    """Threads per local worker process: ``value``, else ``cluster.threads_per_worker`` (2 in
    the package's yaml: one task's reads overlap another's compute), checked."""
    if value is None:
        value = (config.get("cluster") or {}).get("threads_per_worker") or 2
    return _positive_int("threads_per_worker", value)


def local_cluster(n_workers: int | None = None, **kwargs):
    """A LocalCluster of processes (h5py serialises within a process; parallel compute needs
    processes), ``cluster.threads_per_worker`` threads each (2: one task's reads overlap
    another's compute)."""
    from distributed import LocalCluster

    cfg = config.get("cluster") or {}
    n = _positive_int("n_workers", n_workers if n_workers is not None else
                      (cfg.get("n_workers") or max(1, (os.cpu_count() or 2))))
    threads = threads_per_worker(kwargs.pop("threads_per_worker", None))
    kwargs.setdefault("dashboard_address", ":0")
    return LocalCluster(n_workers=n, threads_per_worker=threads, processes=True, **kwargs)


def get_client(n_workers: int | None = None, **options):
    """Return a ``distributed.Client``: the current one if any (the rule of ``tasks.client``)
    and still connected; else a dask-gateway cluster when ``DASK_GATEWAY__ADDRESS`` is
    configured; else a new ``LocalCluster`` with processes. A client made here explains
    failed computations (:func:`explain`)."""
    client = current_client()
    if client is not None and getattr(client, "status", "running") == "running":
        return client
    if client is not None:  # its cluster went away: a new one, not the dead one again
        log.warning("the current Dask client is %s (its cluster is gone): starting a new "
                    "cluster", client.status)
    if dask.config.get("gateway.address", None):
        cluster = gateway_cluster(n_workers=n_workers, **options)
        log.info("dask-gateway cluster %s", cluster.name)
        # what GatewayCluster.get_client() does, with the client class of this module
        client = client_class()(cluster, security=cluster.security, set_as_default=True,
                        asynchronous=cluster.asynchronous, loop=cluster.loop)
        clients = getattr(cluster, "_clients", None)  # closed with the cluster
        if clients is not None:
            clients.add(client)
        return client
    cluster = local_cluster(n_workers=n_workers, **options)
    return client_class()(cluster)


# ---- failures in the user's words ----------------------------------------------------------

#: graph nodes looked at to find what a failed task reads (its dependencies, breadth first)
SOURCE_SEARCH_NODES = 200
_PROBE = re.compile(r"probe_(\d+)")
_SESSION = re.compile(r"session_(\d+)")


def _gib(nbytes: Any) -> str:
    try:
        return f"{float(nbytes) / 2**30:.1f} GiB"
    except (TypeError, ValueError):
        return "its memory limit"


def _children(obj: Any) -> list:
    """What a task (tuple, ``dask._task_spec`` node, container) holds."""
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)
    if isinstance(obj, dict):
        return list(obj.values())
    out = []
    for name in ("args", "value"):  # Task.args, DataNode.value
        val = getattr(obj, name, None)
        if val is not None and not callable(val):
            out.append(val)
    kwargs = getattr(obj, "kwargs", None)
    if isinstance(kwargs, dict):
        out += list(kwargs.values())
    return out


def _source_words(obj: Any) -> str:
    from .readers.base import LFPSource

    where = f"{obj.url}/{getattr(obj, 'data_path', '')}"
    probe, session = _PROBE.search(where), _SESSION.search(where)
    return (("LFP" if isinstance(obj, LFPSource) else "spike times")
            + (f" of probe {probe[1]}" if probe else "")
            + (f" of session {session[1]}" if session else ""))


def _sources_in(task: Any) -> list[str]:
    """Descriptions of the data sources a task (its arguments, a few levels down) reads."""
    from .readers.base import LFPSource, SpikeSource

    found, stack = [], [(task, 0)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, LFPSource | SpikeSource):
            found.append(_source_words(obj))
        elif depth < 6:
            stack += [(c, depth + 1) for c in _children(obj)]
    return found


def describe_task(graph: Any, key: Any) -> str:
    """What task ``key`` of ``graph`` works on, in words ("LFP of probe 1 of session 2"),
    from the data sources it or its nearest dependencies read; ``""`` when nothing says.

    A key that is not in ``graph`` (client.compute() fuses and renames the final tasks) is
    described by every source in the graph, if there are few."""
    try:
        tasks = dict(graph.__dask_graph__() if hasattr(graph, "__dask_graph__") else graph)
    except Exception:  # noqa: BLE001 - a description is a nicety
        return ""
    if key not in tasks:
        words = list(dict.fromkeys(w for t in list(tasks.values())[:SOURCE_SEARCH_NODES * 10]
                                   for w in _sources_in(t)))
        return ", ".join(words) if 0 < len(words) <= 3 else ""
    queue, seen = deque([key]), {key}
    while queue and len(seen) < SOURCE_SEARCH_NODES:
        k = queue.popleft()
        words = _sources_in(tasks.get(k))
        if words:
            return words[0]
        for d in getattr(tasks.get(k), "dependencies", None) or ():
            if d not in seen:
                seen.add(d)
                queue.append(d)
    return ""


def explain(exc: BaseException, graph: Any = None, cluster: str = "") -> BaseException:
    """Our error for what a failed computation means (or ``exc`` itself when nothing is
    known): ``KilledWorker`` becomes :class:`WorkerMemoryError` (which task, which probe, which
    setting), a future cancelled because the scheduler connection was lost
    :class:`ClusterLostError`. ``graph``: the collection or graph that was computed."""
    from distributed.client import FutureCancelledError, FuturesCancelledError
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        subject = describe_task(graph, exc.task) if graph is not None else ""
        worker = exc.last_worker
        limit = _gib(getattr(worker, "memory_limit", None))
        return WorkerMemoryError(
            f"Task {exc.task!r}{f' ({subject})' if subject else ''} was started on "
            f"{exc.allowed_failures + 1} workers and every one of them died while running it "
            f"(the last: {getattr(worker, 'address', worker)}, {limit}). Workers are killed "
            "when they use more memory than they have, so this task most likely needs more: "
            "raise the worker memory, e.g. npd.get_client(worker_memory=8) on the hub (the "
            "cluster option worker_memory, in GiB; NEUROPIXELS_DASK__CLUSTER__WORKER_MEMORY "
            "for every new cluster) or LocalCluster(memory_limit='8GiB') on a laptop; or ask "
            "for less per task (a time_range, fewer channels).")
    lost = ("scheduler-connection-lost", "lost-connection")
    if isinstance(exc, FutureCancelledError) and exc.reason in lost or \
            isinstance(exc, FuturesCancelledError) and any(
                g.reason in lost for g in exc.error_groups):
        where = f" ({cluster})" if cluster else ""
        return ClusterLostError(
            f"The Dask cluster{where} went away during the computation: its scheduler stopped "
            "or cannot be reached, and everything it held is lost. Start a new one "
            "(client = npd.get_client()) and run the computation again; map_sessions(..., "
            "resume=previous_results) recomputes only the sessions that did not finish.")
    return exc


_client_cls: type | None = None


def client_class() -> type:
    """``distributed.Client`` with :func:`explain` on every computation (``dask.compute`` and
    ``.compute()`` of collections call ``Client.get``). Made on first use: importing this module
    must not import distributed."""
    global _client_cls
    if _client_cls is None:
        from distributed import Client as Base

        class Client(Base):
            """A ``distributed.Client`` whose failed computations raise our errors where they
            mean something (:func:`neuropixels_dask.cluster.explain`)."""

            def get(self, dsk, keys, *args, **kwargs):
                if self.asynchronous:
                    return super().get(dsk, keys, *args, **kwargs)
                try:
                    return super().get(dsk, keys, *args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - re-raised, in the user's words
                    err = explain(exc, dsk, str(getattr(self.cluster, "name", "") or ""))
                    if err is exc:
                        raise
                    raise err from exc

        _client_cls = Client
    return _client_cls
