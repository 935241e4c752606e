"""The object store goes down in the middle of a whole-probe spectrum on a real cluster.

* It stays down (the proxy takes requests and never answers, the case that used to hang for
  ``read_timeout`` × every retry): the computation ends within ``remote.outage_timeout`` (plus
  at most one backoff pause) with ``StoreUnavailableError`` naming the endpoint; every worker
  is still there and runs the next task at once; once the store is back, the same call gives
  the same result, bit for bit.
* It is down for 10 s (nothing listens: connections are refused), inside the timeout: nothing
  changes, the result is bit-identical, and the workers' counters show they waited.

The test's ``outage_timeout`` is 15 s (the default is 30 s) so that the suite stays short; the
workers get it through Dask's config, as a hub's workers get ``NEUROPIXELS_DASK__REMOTE__…``.
The cluster is the suite's (``local_client``): starting one costs more than this module's tests.
"""

from __future__ import annotations

import os
import time

import dask
import numpy as np
import pytest
from reliability_support import fresh_cache

from neuropixels_dask import storage
from neuropixels_dask.analyses import lfp_spectra
from neuropixels_dask.errors import StoreUnavailableError

OUTAGE_TIMEOUT = 15.0
#: botocore's longest pause between two attempts, which the timeout check can follow
MAX_BACKOFF = 20.0
#: the short outage of the second test, well inside OUTAGE_TIMEOUT
SHORT_OUTAGE = 10.0
#: latency per request while the spectrum runs, so that the outage lands in the middle of it
SLOW = (0.5, 0.8)


@pytest.fixture(scope="module")
def client(local_client):
    """The suite's cluster (two single-threaded worker processes) with ``outage_timeout`` set
    in its workers' config while this module runs, as a hub's workers get it from
    ``NEUROPIXELS_DASK__REMOTE__OUTAGE_TIMEOUT``."""

    def _set_outage_timeout(value: float | None) -> None:
        # nested, so that cloudpickle sends it by value: by reference, a worker would have to
        # import this test module, and the suite's workers may have started before this
        # folder was on sys.path
        import dask

        dask.config.set({"neuropixels_dask.remote.outage_timeout": value})

    before = set(local_client.run(
        lambda: __import__("dask").config.get("neuropixels_dask.remote.outage_timeout")).values())
    local_client.run(_set_outage_timeout, OUTAGE_TIMEOUT)
    yield local_client
    local_client.run(_set_outage_timeout, before.pop() if len(before) == 1 else None)


def _spectra(url, so, sid, pid):
    """Whole-probe spectra of every probe of the session with LFP (one read task per block)."""
    session = fresh_cache(url, so).get_session_data(sid)
    probes = session.probes.index[session.probes["has_lfp_data"].astype(bool)]
    psds = [lfp_spectra(session, int(p)) for p in probes]
    return [x for p in psds for x in (p.data, p.n_segments.data)]


@pytest.fixture(scope="module")
def reference(client, rel_server, s3, ids):
    from reliability_support import NO_FAULTS

    rel_server.configure(**NO_FAULTS)
    return [np.asarray(x) for x in client.gather(client.compute(_spectra(*s3, *ids)))]


def _identical(got, expected) -> None:
    for x, y in zip(got, expected, strict=True):
        assert np.asarray(x).tobytes() == y.tobytes()


def _started(client, futures, timeout: float = 60) -> None:
    """Wait until the spectrum is under way: a block finished, and blocks still to be read (an
    outage after the last read would leave nothing for the store to refuse)."""

    def blocks(dask_scheduler) -> tuple[int, int]:
        states = [ts.state == "memory" for ts in dask_scheduler.tasks.values()
                  if ts.prefix.name.startswith("block_sums")]
        return sum(states), len(states) - sum(states)

    deadline = time.monotonic() + timeout
    done, pending = 0, 0
    while time.monotonic() < deadline:
        done, pending = client.run_on_scheduler(blocks)
        if done:
            break
        time.sleep(0.02)
    assert done, f"no block finished within {timeout:g} s"
    assert pending and not all(f.done() for f in futures if hasattr(f, "done")), \
        "the spectrum read every block before the outage"


def test_store_down_for_good_ends_the_computation_in_bounded_time(client, reference, faults,
                                                                  rel_server, s3, ids):
    pids = client.run(os.getpid)
    faults(latency=SLOW)
    futures = client.compute(_spectra(*s3, *ids))
    _started(client, futures)
    faults(outage="blackhole")  # every request taken, none answered, until told otherwise
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        client.gather(futures)
    elapsed = time.monotonic() - t0
    msg = str(caught.value)
    assert rel_server.endpoint_url in msg and "did not answer" in msg, msg
    assert "outage_timeout" in msg
    print(f"\nstore down for good: StoreUnavailableError {elapsed:.1f} s after the outage began "
          f"(outage_timeout {OUTAGE_TIMEOUT:g} s)")
    assert elapsed < OUTAGE_TIMEOUT + MAX_BACKOFF, elapsed  # bounded, not read_timeout x retries
    assert rel_server.stats().faults.get("outage", 0) >= 1
    # the same call builds the same task keys (tokenized from its inputs): the scheduler must
    # forget the erred ones, or it answers the rerun with their old error at once
    client.cancel([f for f in futures if hasattr(f, "key")])  # n_segments may be plain numpy
    del futures

    # every worker is the same process and takes work at once (nothing left hanging in it)
    assert client.run(os.getpid) == pids
    for worker, pid in pids.items():
        fut = client.submit(os.getpid, workers=[worker], allow_other_workers=False, pure=False)
        assert fut.result(timeout=OUTAGE_TIMEOUT + MAX_BACKOFF) == pid

    faults()  # the store is back: the same call, the same result
    _identical(client.gather(client.compute(_spectra(*s3, *ids))), reference)


def test_outage_inside_the_timeout_changes_nothing(client, reference, faults, rel_server, s3,
                                                   ids):
    before = client.run(storage.retry_counts)
    faults(latency=SLOW)
    futures = client.compute(_spectra(*s3, *ids))
    _started(client, futures)
    t0 = time.monotonic()
    # nothing listens for 10 s (the proxy's control endpoint included: it ends by itself)
    faults(latency=SLOW, outage="refuse", outage_seconds=SHORT_OUTAGE)
    got = client.gather(futures)
    _identical(got, reference)
    after = client.run(storage.retry_counts)
    waited = sum(after[w].get("reconnect", 0) - before.get(w, {}).get("reconnect", 0)
                 for w in after)
    assert waited >= 1, (before, after)  # the workers did meet the outage, and rode it out
    time.sleep(max(0.0, SHORT_OUTAGE + 0.5 - (time.monotonic() - t0)))  # control is back


def test_outage_timeout_is_a_checked_setting(s3):
    """Every S3 client gets the bounded HTTP session; the setting is refused when it would
    not bound anything, with the key named."""
    from neuropixels_dask.storage import deadline
    from neuropixels_dask.storage.httpsession import DeadlineSession

    url, so = s3
    ck = storage.resolve(url, so)["config_kwargs"]
    assert ck["http_session_cls"] is DeadlineSession
    assert ck["read_timeout"] <= deadline.outage_timeout() == deadline.OUTAGE_TIMEOUT <= 60
    for bad in (0, -1, 1e6, "soon"):
        with dask.config.set({"neuropixels_dask.remote.outage_timeout": bad}), \
                pytest.raises(ValueError, match="remote.outage_timeout"):
            storage.resolve(url, so)
