"""Load: many analysis sessions at once against one S3 server (a bounded number in flight), all
complete and correct without a retry storm; and hundreds of tasks leave no file handles and no
memory behind, in the worker processes and in the client process.
"""

from __future__ import annotations

import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import numpy as np
import psutil
import pytest

import neuropixels_dask as npd
from neuropixels_dask import caching
from neuropixels_dask.readers import nwb

CONCURRENT = 8  # sessions in flight at once (the bound)
SESSIONS = 24  # analysis sessions in all


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster, set_as_default=False) as c:
        yield c


def analysis(url: str, so: dict, sid: int):
    """What a scientist runs per session: a PSTH-like count and LFP power in a window."""
    session = npd.open_cache(url, **so).get_session_data(sid)
    flashes = session.get_stimulus_table("flashes").index
    counts = session.presentationwise_spike_counts(np.arange(0.0, 0.25, 0.01), flashes, None)
    pid = int(session.probes.index[0])
    lfp = session.get_lfp(pid, time_range=(20.0, 80.0))
    return counts.sum("stimulus_presentation_id").data, (lfp.astype("float64") ** 2).mean(
        "time").data


def _sessions(url, so) -> list[int]:
    return [int(s) for s in npd.open_cache(url, **so).get_session_table().index]


def test_many_concurrent_sessions_against_one_server(client, faults, rel_server, s3):
    url, so = s3
    sids = _sessions(url, so)
    cold = {}
    with dask.config.set(scheduler="sync"):
        reference = {}
        for sid in sids:
            caching.clear_all()
            rel_server.reset_stats()
            reference[sid] = [np.asarray(x) for x in dask.compute(*analysis(url, so, sid))]
            cold[sid] = rel_server.stats().requests  # one analysis, every file opened anew
    caching.clear_all()
    client.run(caching.clear_all)
    rel_server.reset_stats()
    in_flight, peak = [0], [0]

    def one(i: int):
        sid = sids[i % len(sids)]
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        try:
            futures = client.compute(list(analysis(url, so, sid)))
            return sid, [np.asarray(x) for x in client.gather(futures)]
        finally:
            in_flight[0] -= 1

    t0 = time.monotonic()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(one, range(SESSIONS)))
    elapsed = time.monotonic() - t0
    assert len(results) == SESSIONS and peak[0] <= CONCURRENT
    for sid, got in results:
        for a, b in zip(got, reference[sid], strict=True):
            assert a.tobytes() == b.tobytes()
    stats = rel_server.stats()
    assert stats.faults_total == 0
    # no request storm: never more than if every session had opened its files anew
    assert stats.requests <= SESSIONS * max(cold.values()), (stats, cold)
    assert elapsed < 120
    # the server is still healthy
    assert _sessions(url, so) == sids


def _usage() -> dict[str, int]:
    """Open file descriptors and resident memory of this process, after a garbage collection."""
    gc.collect()
    return {"fds": len(os.listdir("/proc/self/fd")), "rss": psutil.Process().memory_info().rss}


def _remote_usage(client) -> dict[str, dict[str, int]]:
    # a lambda travels by value: workers need not import this test module
    return client.run(lambda: (gc.collect(), {
        "fds": len(os.listdir("/proc/self/fd")),
        "rss": psutil.Process().memory_info().rss})[1])


def _many_tasks(url: str, so: dict, sids: list[int]):
    """One round: short LFP windows of two channels of every probe and spike counts of the
    first presentations: ~100 tasks."""
    out = []
    for sid in sids:
        session = npd.open_cache(url, **so).get_session_data(sid)
        for pid in session.probes.index[session.probes["has_lfp_data"].astype(bool)]:
            channels = session.lfp_source(int(pid)).channel_ids[:2]
            for t in np.arange(15.0, 115.0, 12.5):
                out.append(session.get_lfp(int(pid), time_range=(t, t + 2.0),
                                           channel_ids=channels).data.sum())
        pres = session.stimulus_presentations.index[:20]
        out.append(session.presentationwise_spike_counts([0.0, 0.1, 0.2], pres, None).data)
    return out


MB = 2**20


def test_no_file_handle_or_memory_growth_in_workers(client, s3):
    url, so = s3
    sids = _sessions(url, so)
    client.gather(client.compute(_many_tasks(url, so, sids)))  # warm up: files, caches, pools
    before = _remote_usage(client)
    n_tasks = 0
    first = None
    for _ in range(4):
        graph = _many_tasks(url, so, sids)
        n_tasks += sum(len(x.__dask_graph__()) for x in graph)
        values = client.gather(client.compute(graph))
        first = first or values
        # equal_nan: windows over a session's invalid intervals are NaN (get_lfp masks them)
        assert all(np.array_equal(a, b, equal_nan=True)
                   for a, b in zip(values, first, strict=True))
    after = _remote_usage(client)
    print(f"{n_tasks} tasks on the workers")
    assert n_tasks >= 300, n_tasks
    for worker, use in after.items():
        assert use["fds"] - before[worker]["fds"] <= 3, (worker, before[worker], use)
        assert use["rss"] - before[worker]["rss"] < 50 * MB, (worker, before[worker], use)
    assert all(n <= 32 for n in client.run(lambda: len(nwb.files)).values())


def test_no_file_handle_or_memory_growth_in_the_client(s3, tiny_cache_dir):
    """Threads scheduler in this process, over S3 and over local files (real file descriptors);
    for the local ones there is room for only two open files, so most accesses close one."""
    url, so = s3
    sids = _sessions(url, so)
    with dask.config.set(scheduler="threads"):
        dask.compute(*_many_tasks(url, so, sids))  # warm up
        dask.compute(*_many_tasks(tiny_cache_dir, {}, sids))
        before = _usage()
        n_tasks = 0
        for _ in range(2):
            graph = _many_tasks(url, so, sids)
            n_tasks += sum(len(x.__dask_graph__()) for x in graph)
            dask.compute(*graph)
        with dask.config.set({"neuropixels_dask.remote.open_files_per_worker": 2}):
            caching.clear_all()  # from now on every file opened closes another one
            for _ in range(3):
                graph = _many_tasks(tiny_cache_dir, {}, sids)
                n_tasks += sum(len(x.__dask_graph__()) for x in graph)
                dask.compute(*graph)
                assert len(nwb.files) <= 2
        after = _usage()
    caching.clear_all()
    print(f"{n_tasks} tasks in this process")
    assert n_tasks >= 300, n_tasks
    # S3's connection pool may still grow under the threads' concurrency (up to botocore's
    # max_pool_connections, 10); a leak of files or handles would show as hundreds here
    assert after["fds"] - before["fds"] <= 3 + 10, (before, after)
    assert after["rss"] - before["rss"] < 60 * MB, (before, after)
