"""``get_client()``: the current Dask client, else dask-gateway on the hub, else a LocalCluster.

The choice comes from the environment, not from the scientist: on the hub the chart sets
``DASK_GATEWAY__ADDRESS`` (and friends) in every user pod, so the same notebook cell creates a
gateway cluster there and a local process cluster on a laptop.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import dask.config
import numpy as np

from . import config
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


def local_cluster(n_workers: int | None = None, **kwargs):
    """A LocalCluster of processes (h5py serialises within a process; parallelism needs
    processes), one thread each by default."""
    from distributed import LocalCluster

    cfg = config.get("cluster") or {}
    n = _positive_int("n_workers", n_workers if n_workers is not None else
                      (cfg.get("n_workers") or max(1, (os.cpu_count() or 2))))
    threads = _positive_int("threads_per_worker",
                            kwargs.pop("threads_per_worker", cfg.get("threads_per_worker") or 1))
    kwargs.setdefault("dashboard_address", ":0")
    return LocalCluster(n_workers=n, threads_per_worker=threads, processes=True, **kwargs)


def get_client(n_workers: int | None = None, **options):
    """Return a ``distributed.Client``: the current one if any (the rule of ``tasks.client``);
    else a dask-gateway cluster when ``DASK_GATEWAY__ADDRESS`` is configured; else a new
    ``LocalCluster`` with processes."""
    from distributed import Client

    client = current_client()
    if client is not None:
        return client
    if dask.config.get("gateway.address", None):
        cluster = gateway_cluster(n_workers=n_workers, **options)
        log.info("dask-gateway cluster %s", cluster.name)
        return cluster.get_client()
    cluster = local_cluster(n_workers=n_workers, **options)
    return Client(cluster)
