"""Under ~10% injected object-store faults (503 SlowDown / 500, connections reset mid-body, bodies
cut short, latency), LFP spectra, spike counts, correlations and conversion complete with results
identical, bit for bit, to a fault-free run; every fault costs exactly one retry, every retry is
logged, and retries are bounded with backoff.

All of it runs with the package's default retry settings (botocore adaptive mode, 8 retries; s3fs
retries of bodies cut short), except the bound test, which shrinks them to count every attempt.
"""

from __future__ import annotations

import logging
import re
import time

import dask
import numpy as np
import pytest
import s3fs
import zarr
from reliability_support import fresh_cache, retry_records

from neuropixels_dask import caching, storage
from neuropixels_dask import convert as cv
from neuropixels_dask import zarrstore as zs
from neuropixels_dask.analyses import lfp_spectra, spike_count_correlations
from neuropixels_dask.errors import StoreUnavailableError

#: 10% of requests faulted: 4% errors (503 SlowDown or 500), 3% resets mid-body, 3% truncations
TEN_PERCENT = {"error_rate": 0.04, "reset_rate": 0.03, "truncate_rate": 0.03,
               "latency": (0.0, 0.004)}
#: faults that must have happened across the faulty runs of the analyses, every kind among them:
#: ranges.py coalesces reads into ~30 requests per run (~3 faults at 10 %), so as many seeds
#: run as it takes, up to MAX_SEEDS
MIN_FAULTS = 10
MAX_SEEDS = 8
#: Requests a fault-free run may differ by: the LFP's chunk tree has two leaves, which concurrent
#: spectrum tasks read in one batched request or in two, as their timing falls (each node is
#: still read once: tests/test_chunkindex.py)
TIMING_SLACK = 1


def analyses(url: str, so: dict, sid: int, pid: int) -> list[np.ndarray]:
    """A whole-probe spectrum per stimulus, spike counts of every unit around every flash and
    drifting grating, and noise correlations between areas: everything read from S3."""
    session = fresh_cache(url, so).get_session_data(sid)
    psd = lfp_spectra(session, pid)
    pres = session.get_stimulus_table(["flashes", "drifting_gratings"]).index
    counts = session.presentationwise_spike_counts(np.arange(-0.05, 0.3, 0.01), pres, None)
    # the tiny cache shows each grating orientation twice
    corr = spike_count_correlations(session, condition_by="orientation", min_trials=2)
    with dask.config.set(scheduler="threads", num_workers=8):
        out = dask.compute(psd, psd.n_segments, counts, corr)
    return [np.asarray(x) for x in out]


def assert_identical(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()  # bit for bit, NaNs included


@pytest.fixture(scope="module")
def baseline(rel_server, s3, ids):
    """Fault-free results and the number of requests they take (measured twice: stable up to
    TIMING_SLACK)."""
    from reliability_support import NO_FAULTS

    rel_server.configure(**NO_FAULTS)
    n_requests = []
    for _ in range(2):
        rel_server.reset_stats()
        results = analyses(*s3, *ids)
        n_requests.append(rel_server.stats().requests)
    assert abs(n_requests[0] - n_requests[1]) <= TIMING_SLACK, n_requests
    psd_all, n_segments, counts = results[0][0], results[1], results[2]  # row 0: "all"
    assert np.isfinite(psd_all).all() and n_segments[0] > 10 and counts.sum() > 0
    return results, n_requests[1]


def test_analyses_identical_under_ten_percent_faults(baseline, faults, rel_server, s3, ids,
                                                     caplog):
    expected, n_requests = baseline
    caplog.set_level(logging.INFO, logger="neuropixels_dask.storage")
    seen: dict[str, int] = {}
    for seed in range(1, MAX_SEEDS + 1):
        faults(seed=seed, **TEN_PERCENT)
        rel_server.reset_stats()
        caplog.clear()
        before = storage.retry_counts()["total"]
        got = analyses(*s3, *ids)
        stats = rel_server.stats()
        assert_identical(got, expected)
        for kind, n in stats.faults.items():  # the faults really happened (counted below)...
            seen[kind] = seen.get(kind, 0) + n
        # ...each cost exactly one retried request, no more, no less...
        assert abs(stats.requests - stats.faults_total - n_requests) <= TIMING_SLACK, stats
        # ...and each retry is in the log, and in the process' counters
        assert len(retry_records(caplog)) == stats.faults_total
        assert storage.retry_counts()["total"] - before == stats.faults_total
        if sum(seen.values()) >= MIN_FAULTS and set(seen) == {"error", "reset", "truncate"}:
            break
    assert sum(seen.values()) >= MIN_FAULTS, seen
    assert set(seen) == {"error", "reset", "truncate"}, seen


def _arrays(group: zarr.Group) -> dict[str, np.ndarray]:
    return {name: arr[...] for name, arr in group.members(max_depth=None)
            if isinstance(arr, zarr.Array)}


def test_conversion_identical_under_ten_percent_faults(faults, rel_server, s3, ids, tmp_path,
                                                       tiny_cache_dir, caplog):
    """NWB on a faulty S3 -> Zarr: every array of the store equals a fault-free conversion's."""
    url, so = s3
    sid, _ = ids
    caplog.set_level(logging.INFO, logger="neuropixels_dask.storage")
    with dask.config.set(scheduler="threads", num_workers=8):
        # the arrays do not depend on where the NWB files were read from: a local reference
        (ref,) = cv.convert(tiny_cache_dir, str(tmp_path / "ref"), [sid], progress=False)
        faults(seed=3, **TEN_PERCENT)
        caplog.clear()
        caching.clear_all()
        (got,) = cv.convert(url, str(tmp_path / "faulty"), [sid], storage_options=so,
                            progress=False)
    stats = rel_server.stats()
    assert stats.faults_total >= 3, stats  # (~80 coalesced requests: ~8 faults at 10 %)
    assert len(retry_records(caplog)) == stats.faults_total
    assert got.status == "converted" and got.blocks_written == ref.blocks_written
    a = zarr.open_group(ref.store_url, mode="r")
    b = zarr.open_group(got.store_url, mode="r")
    arrays_a, arrays_b = _arrays(a), _arrays(b)
    assert sorted(arrays_a) == sorted(arrays_b) and len(arrays_a) > 20
    for name, values in arrays_a.items():
        assert values.dtype == arrays_b[name].dtype, name
        assert values.tobytes() == arrays_b[name].tobytes(), name
    assert b.attrs[zs.ATTRS_KEY]["complete"] is True
    assert b.attrs[zs.ATTRS_KEY]["lfp"] == a.attrs[zs.ATTRS_KEY]["lfp"]


def test_retries_are_bounded_with_backoff_then_fail_clearly(faults, rel_server, s3, ids,
                                                            caplog, monkeypatch):
    """A store that never recovers: a bounded number of attempts, with growing waits in
    between, then a StoreUnavailableError that says what happened."""
    url, so = s3
    sid, pid = ids
    lfp_key = f"{url}/session_{sid}/probe_{pid}_lfp.nwb"
    caplog.set_level(logging.INFO, logger="neuropixels_dask.storage")
    # the defaults are finite: 1 + 8 botocore attempts within each of s3fs' 5 attempts
    defaults = storage.resolve(url, so)["config_kwargs"]["retries"]
    assert defaults == {"max_attempts": 8, "mode": "adaptive"}
    assert s3fs.S3FileSystem.retries == 5
    # shrink them to count every attempt: 1 + 2 botocore attempts, 2 s3fs attempts
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 2)
    small = {**so, "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}}}
    faults(error_rate=1.0, fault_methods=["GET"], seed=5)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="kept failing.*after every retry"):
        storage.fetch_ranges(lfp_key, small, [0, 100], [10, 200])
    elapsed = time.monotonic() - t0
    stats = rel_server.stats()
    # two ranges, each: at least one botocore round of 3 attempts, at most two
    assert 2 * 3 <= stats.get_requests <= 2 * 3 * 2, stats
    assert stats.faults_total == stats.requests
    records = [r.getMessage() for r in retry_records(caplog)]
    # every request but each range's first was a logged retry (s3fs also logs its last try)
    assert stats.requests - 2 <= len(records) <= stats.requests
    delays = [float(m) for m in re.findall(r"botocore, after ([0-9.]+) s", " ".join(records))]
    assert len(delays) >= 2 * 2
    assert all(0 <= d <= 2.0 for d in delays)  # jitter * 2**(attempt - 1), attempts 1 and 2
    assert sum(delays) > 0 and elapsed >= max(delays)  # the waits really happened
    # nothing was remembered from the failure: the same read works once the store recovers
    faults()
    blobs = storage.fetch_ranges(lfp_key, small, [0, 100], [10, 200])
    assert [len(b) for b in blobs] == [10, 100]
