"""The task layer's one rule for where graphs run, on a real multi-process LocalCluster:
an explicit client wins, a local scheduler set in Dask's config wins over an ambient client,
else the current client runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import dask
import pandas as pd
import pytest

import neuropixels_dask as npd
from neuropixels_dask.tasks import current_client, map_sessions, run_tasks


def _pid(_: int = 0) -> int:
    return os.getpid()


def _session_pid(session) -> pd.Series:
    """A per-session "analysis" that says where it was computed."""
    return dask.delayed(lambda: pd.Series({"pid": os.getpid()}))()


def test_no_client_means_dasks_local_scheduler():
    """In a fresh interpreter (this one may hold the suite's LocalCluster client)."""
    code = ("import os\n"
            "from neuropixels_dask.tasks import current_client, run_tasks\n"
            "assert current_client() is None\n"
            "pids = run_tasks([(os.getpid, ()) for _ in range(3)], progress=False)\n"
            "assert pids == [os.getpid()] * 3, pids\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_current_client_runs_tasks_on_its_workers(local_client):
    assert current_client() is local_client
    workers = set(local_client.run(os.getpid).values())
    pids = run_tasks([(_pid, (i,)) for i in range(6)], progress=False)
    assert set(pids) <= workers and os.getpid() not in pids


@pytest.mark.parametrize("scheduler", ["threads", "sync", "processes"])
def test_a_local_scheduler_in_dask_config_wins_over_the_client(local_client, scheduler):
    workers = set(local_client.run(os.getpid).values())
    with dask.config.set(scheduler=scheduler):
        assert current_client() is None
        pids = run_tasks([(_pid, (i,)) for i in range(3)], progress=False)
    assert not set(pids) & workers
    if scheduler != "processes":
        assert set(pids) == {os.getpid()}


def test_an_explicit_client_wins_over_the_config(local_client):
    with dask.config.set(scheduler="sync"):
        assert current_client(local_client) is local_client
        pids = run_tasks([(_pid, (i,)) for i in range(3)], client=local_client, progress=False)
    assert os.getpid() not in pids


def test_map_sessions_follows_the_same_rule(local_client, s3_cache):
    url, so = s3_cache
    cache = npd.open_cache(url, **so)
    ids = list(cache.get_session_table().index)
    workers = set(local_client.run(os.getpid).values())
    on_cluster = map_sessions(_session_pid, ids, cache, progress=False)
    assert set(on_cluster.result.xs("pid", level=1)) <= workers
    with dask.config.set(scheduler="sync"):
        here = map_sessions(_session_pid, ids, cache, progress=False)
    assert set(here.result.xs("pid", level=1)) == {os.getpid()}
    assert not here.failed and list(here.per_session) == ids
