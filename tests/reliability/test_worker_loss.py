"""A Dask worker process killed (SIGKILL: no clean-up) in the middle of a whole-probe spectrum
and of a conversion: the result is still complete and identical to an undisturbed run, because
tasks carry URLs and slices (any worker can redo them), lost results are recomputed from their
lineage, and conversion tasks write whole objects and mark them only when done.

Also here: faults injected while the work runs on worker processes are retried there, and the
retries are counted in those processes (``storage.retry_counts`` through ``client.run``).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import dask
import numpy as np
import pytest
import zarr
from reliability_support import fresh_cache

from neuropixels_dask import convert as cv
from neuropixels_dask import storage
from neuropixels_dask import zarrstore as zs
from neuropixels_dask.analyses import lfp_spectra

SMALL = zs.Layout(lfp_chunk=1250, lfp_chunks_per_shard=16, spike_chunk=4096)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes under nannies (which restart a killed worker)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster, set_as_default=False) as c:
        yield c


def _probes(session) -> list[int]:
    return [int(p) for p in session.probes.index[session.probes["has_lfp_data"].astype(bool)]]


def _spectra_graph(url, so, sid):
    """Whole-probe spectra of every probe with LFP (one task per storage-chunk row + a tree)."""
    session = fresh_cache(url, so).get_session_data(sid)
    psds = [lfp_spectra(session, pid) for pid in _probes(session)]
    return [x for p in psds for x in (p.data, p.n_segments.data)]


@pytest.fixture(scope="module")
def spectra_reference(rel_server, s3, ids):
    with dask.config.set(scheduler="threads"):
        return [np.asarray(x) for x in dask.compute(*_spectra_graph(*s3, ids[0]))]


def _pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def _holders(client, prefix: str) -> dict[str, list[str]]:
    """Scheduler view: worker address -> keys of finished tasks named ``prefix…`` it holds."""

    def look(dask_scheduler, prefix=prefix):
        out: dict[str, list[str]] = {}
        for ts in dask_scheduler.tasks.values():
            if ts.state == "memory" and ts.prefix.name.startswith(prefix):
                for ws in ts.who_has:
                    out.setdefault(ws.address, []).append(str(ts.key))
        return out

    return client.run_on_scheduler(look)


def _busy(client) -> list[str]:
    return client.run_on_scheduler(
        lambda dask_scheduler: [ws.address for ws in dask_scheduler.workers.values()
                                if ws.processing])


def test_faults_on_workers_are_retried_and_counted(client, spectra_reference, faults,
                                                   rel_server, s3, ids):
    before = client.run(storage.retry_counts)
    graph = _spectra_graph(*s3, ids[0])
    faults(error_rate=0.08, reset_rate=0.06, truncate_rate=0.06, seed=11)
    got = client.gather(client.compute(graph))
    stats = rel_server.stats()
    for x, y in zip(got, spectra_reference, strict=True):
        assert np.asarray(x).tobytes() == y.tobytes()
    after = client.run(storage.retry_counts)
    retried = sum(after[w]["total"] - before.get(w, {}).get("total", 0) for w in after)
    assert stats.faults_total >= 3, stats  # enough faults to mean something
    assert retried == stats.faults_total, (before, after, stats)


def test_worker_killed_mid_spectrum(client, spectra_reference, faults, s3, ids):
    client.wait_for_workers(2)
    graph = _spectra_graph(*s3, ids[0])
    faults(latency=(0.05, 0.1))  # slow reads: the kill lands while blocks are still pending
    pids = _pids(client)
    futures = client.compute(graph)
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline:
        holders = _holders(client, "block_sums")
        # a worker that holds a finished block: its result is lost with it and must be redone
        victim = next(iter(holders), None)
        time.sleep(0.02)
    assert victim is not None, "no block finished within 60 s"
    assert not all(f.done() for f in futures), "the spectrum finished before the kill"
    _kill(pids[victim])
    got = client.gather(futures)
    for x, y in zip(got, spectra_reference, strict=True):
        assert np.asarray(x).tobytes() == y.tobytes()
    client.wait_for_workers(2, timeout=60)
    now = _pids(client)
    assert victim not in now and pids[victim] not in now.values()


def _arrays(path: str) -> dict[str, bytes]:
    group = zarr.open_group(path, mode="r")
    return {name: arr[...].tobytes() for name, arr in group.members(max_depth=None)
            if isinstance(arr, zarr.Array)}


def test_worker_killed_mid_conversion(client, faults, s3, ids, tiny_cache_dir, tmp_path):
    url, so = s3
    sid, _ = ids
    with dask.config.set(scheduler="threads"):
        (ref,) = cv.convert(tiny_cache_dir, str(tmp_path / "ref"), [sid], layout=SMALL,
                            progress=False)
    client.wait_for_workers(2)
    dst = tmp_path / "killed"
    markers = dst / f"session_{sid}" / f"session_{sid}.zarr" / zs.PROGRESS_DIR
    faults(latency=(0.01, 0.03))
    pids = _pids(client)
    out: dict = {}

    def run() -> None:
        try:
            with client.as_current():  # see test_convert_on_a_client_that_is_not_the_default
                out["result"] = cv.convert(url, str(dst), [sid], storage_options=so,
                                           layout=SMALL, verify=True, progress=False,
                                           client=client)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and thread.is_alive():
        done = [f for _, _, fs in os.walk(markers) for f in fs] if markers.exists() else []
        busy = _busy(client)
        if len(done) >= 2 and busy:
            victim = busy[0]  # killed while it runs a block task
        time.sleep(0.02)
    assert victim is not None, ("no worker was busy after two blocks", out.get("error"))
    _kill(pids[victim])
    thread.join(120)
    assert not thread.is_alive()
    assert "error" not in out, out.get("error")
    (result,) = out["result"]
    assert result.status == "converted" and result.verified
    assert result.blocks_written == ref.blocks_written  # every block, none skipped or lost
    assert not markers.exists()
    assert _arrays(result.store_url) == _arrays(ref.store_url)
    client.wait_for_workers(2, timeout=60)
    assert pids[victim] not in _pids(client).values()


def test_convert_on_a_client_that_is_not_the_default(client, tiny_cache_dir, ids, tmp_path):
    (r,) = cv.convert(tiny_cache_dir, str(tmp_path / "zarr"), [ids[0]], layout=SMALL,
                      progress=False, client=client)
    assert r.status == "converted"
