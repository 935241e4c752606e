"""Memory: a whole-probe spectrum needs memory for a block, never for the probe; a worker killed
for memory is retried, and a task that kills its workers again is named in the user's error with
its probe and the setting to raise.

The real-size measurement (95 channels, ~2.7 h, at the chart's default worker memory) is a
benchmark, ``benchmarks/memory_spectrum.py``; here the same bound is checked at small scale
with ``tracemalloc`` (every allocation numpy and the readers make, counted exactly).
"""

from __future__ import annotations

import contextlib
import os
import tracemalloc

import dask
import numpy as np
import pytest
from dask.callbacks import Callback

import neuropixels_dask as npd
from neuropixels_dask import cluster
from neuropixels_dask.analyses import lfp_spectra, map_sessions
from neuropixels_dask.errors import WorkerMemoryError
from neuropixels_dask.kernels import segment_psd
from neuropixels_dask.local.synth import generate_cache

pytestmark = pytest.mark.usefixtures("close_handles_after_module")

#: what one block task may allocate, in blocks: compressed chunks, inflated chunks, the
#: assembled float32 block and its transposed copy for the FFT (measured: ~3x)
BLOCK_COPIES = 4
#: memory a worker is given in the kill tests, and what the task that kills it allocates
WORKER_MEMORY = 1 << 30
HOG_BYTES = 3 << 29


class TaskPeaks(Callback):
    """What each task allocated beyond what was held when it started, and the most held at any
    time (``tracemalloc``)."""

    def __init__(self) -> None:
        super().__init__()
        self.peaks: dict = {}
        self.highest = 0
        self._start = 0

    def _pretask(self, key, dsk, state):
        self._start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

    def _posttask(self, key, result, dsk, state, worker_id):
        peak = tracemalloc.get_traced_memory()[1]
        self.peaks[key] = peak - self._start
        self.highest = max(self.highest, peak)


@pytest.fixture(scope="module")
def long_cache(tmp_path_factory) -> str:
    """One session, one probe of ~520 s: fourteen of the published files' 37.6 s blocks."""
    path = str(tmp_path_factory.mktemp("long") / "cache")
    generate_cache(path, "tiny", n_sessions=1, n_probes=1, probe_without_lfp=False,
                   spontaneous_s=150.0, n_drifting_gratings=60, progress=False)
    return path


def test_whole_probe_spectrum_needs_memory_for_a_block_not_the_probe(long_cache):
    session = npd.open_cache(long_cache).get_session_data(
        int(npd.open_cache(long_cache).get_session_table().index[0]))
    pid = int(session.probes.index[0])
    src = session.lfp_source(pid)
    psd = lfp_spectra(session, pid)
    block = src.chunks[0] * src.shape[1] * 4  # one float32 block: a storage-chunk row
    whole = src.shape[0] * src.shape[1] * 4
    partial = psd.shape[0] * psd.shape[1] * psd.shape[2] * 8  # float64 sums per stimulus
    bound = BLOCK_COPIES * block + 2 * segment_psd.BATCH_BYTES + 2 * partial
    assert whole > 2 * bound  # the probe is far bigger than what a task may hold
    peaks = TaskPeaks()
    tracemalloc.start()
    try:
        with dask.config.set(scheduler="sync"), peaks:
            result = psd.compute()
        total = peaks.highest
    finally:
        tracemalloc.stop()
    assert np.isfinite(result.sel(stimulus="all").values).all()
    assert len(peaks.peaks) >= src.shape[0] // src.chunks[0]  # a task per block, at least
    worst = max(peaks.peaks.values())
    print(f"\nblock {block / 1e6:.1f} MB, probe {whole / 1e6:.1f} MB: worst task "
          f"{worst / 1e6:.1f} MB, whole computation {total / 1e6:.1f} MB (bound "
          f"{bound / 1e6:.1f} MB)")
    assert worst <= bound, {str(k): v for k, v in peaks.peaks.items() if v > bound}
    # and the computation as a whole never held the probe (what it holds besides the running
    # task is the blocks' small partial sums waiting for their neighbours)
    assert total < whole


@contextlib.contextmanager
def _small_cluster():
    """One worker of 1 GiB under a nanny (which kills it above 95 %); a task may be tried on
    two workers (``allowed-failures`` 1) before the scheduler gives up on it. The client is the
    one ``get_client()`` makes (``cluster.client_class()``), which explains failures."""
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                         memory_limit=WORKER_MEMORY, dashboard_address=":0",
                         silence_logs=50) as lc, \
            cluster.client_class()(lc, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="module")
def small_workers():
    with _small_cluster() as client:
        yield client


def _hogging(session, pid: int, marker_dir: str | None):
    """The sum of a probe's LFP, each block first allocating more than a worker has: on its
    first attempt only when ``marker_dir`` is given (a file there says it was tried)."""
    def hog(block, marker_dir=marker_dir):
        import os
        import time

        import numpy as np

        if marker_dir is not None:
            marker = os.path.join(marker_dir, f"tried-{len(block)}-{float(block[0, 0])!r}")
            if os.path.exists(marker):
                return block
            open(marker, "w").close()
        waste = np.ones(HOG_BYTES // 8)  # written, so resident
        time.sleep(10)  # the nanny sees it and kills the worker meanwhile
        return block + waste[:1].astype(block.dtype) * 0

    lfp = session.get_lfp(pid, time_range=(20.0, 30.0))  # one block
    # meta: without it dask calls hog() on an empty block while building the graph
    return lfp.data.map_blocks(hog, meta=np.empty((0, 0), lfp.dtype), name="hog-memory").sum()


def test_worker_killed_for_memory_is_retried(small_workers, tiny_cache_dir, ids, tmp_path):
    sid, pid = ids
    session = npd.open_cache(tiny_cache_dir).get_session_data(sid)
    expected = session.get_lfp(pid, time_range=(20.0, 30.0)).data.sum().compute(
        scheduler="sync")
    before = set(small_workers.run(os.getpid).values())
    got = small_workers.compute(_hogging(session, pid, str(tmp_path))).result(timeout=180)
    assert got == expected
    assert set(small_workers.run(os.getpid).values()).isdisjoint(before)  # it was killed


def test_worker_dying_again_names_the_task_the_probe_and_the_setting(small_workers,
                                                                     tiny_cache_dir, ids):
    sid, pid = ids
    cache = npd.open_cache(tiny_cache_dir)
    with small_workers.as_current(), pytest.raises(WorkerMemoryError) as caught:
        _hogging(cache.get_session_data(sid), pid, None).compute()  # a notebook's .compute()
    msg = str(caught.value)
    killed = caught.value.__cause__  # distributed's KilledWorker, kept as the cause
    assert type(killed).__name__ == "KilledWorker"
    assert repr(killed.task) in msg and f"probe {pid}" in msg and f"session {sid}" in msg
    assert "worker_memory" in msg and "1.0 GiB" in msg and "2 workers" in msg
    assert isinstance(caught.value, MemoryError)


def test_map_sessions_names_the_session_a_worker_died_on(tiny_cache_dir, ids):
    """map_sessions says the same for the session, and goes on with the others. On a cluster
    of its own: after the test above the nanny restarts its worker a second time, which on a
    loaded machine once took minutes (distributed's restart, not ours to time)."""
    sid, pid = ids
    cache = npd.open_cache(tiny_cache_dir)
    with _small_cluster() as client:
        res = map_sessions(lambda s: _hogging(s, pid, None), [sid], cache, client=client,
                           retries=0, progress=False)
    assert not res.per_session and list(res.failed) == [sid]
    assert res.failed[sid].startswith("WorkerMemoryError") and f"probe {pid}" in res.failed[sid]
    assert "worker_memory" in res.failed[sid]
