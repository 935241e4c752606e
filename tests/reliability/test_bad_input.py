"""Bad input over S3 and on clusters, beyond ``tests/test_errors.py`` (local files): each case gets
one of the package's errors with a message that names the problem and the way out, fails fast,
and leaves nothing behind that breaks the next, correct call.
"""

from __future__ import annotations

import os
import shutil
import socket
import time

import dask
import numpy as np
import pytest
from reliability_support import PREFIX, fresh_cache

import neuropixels_dask as npd
from neuropixels_dask import cluster
from neuropixels_dask.errors import (
    AccessDeniedError,
    CacheNotFoundError,
    EndpointUnreachableError,
    InvalidFileError,
    InvalidSelectionError,
    NeuropixelsDaskError,
    UnknownProbeError,
    UnknownSessionError,
    UnknownUnitError,
)
from neuropixels_dask.readers import nwb


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


# ---- credentials, buckets, endpoints --------------------------------------------------------

def test_denied_credentials_fail_fast_with_a_clear_message(faults, rel_server, s3):
    url, so = s3
    faults(deny_access_keys=["intruder"])
    t0 = time.monotonic()
    with pytest.raises(AccessDeniedError) as info:
        npd.open_cache(url, key="intruder", secret="not-the-secret",
                       client_kwargs=so["client_kwargs"])
    assert time.monotonic() - t0 < 5  # a 403 is not retried
    assert rel_server.stats().requests <= 2
    msg = str(info.value)
    assert url in msg and "denied" in msg and "AWS_ACCESS_KEY_ID" in msg
    assert isinstance(info.value, PermissionError)  # what a caller would naturally catch


def test_credentials_revoked_in_the_middle_of_an_analysis(faults, s3, ids, tiny_cache_dir):
    """Open files, then the store starts refusing our key: every read says so (no TypeError
    from a half-handled failure), and once access is back the same calls give the same data."""
    url, so = s3
    sid, pid = ids
    session = fresh_cache(url, so).get_session_data(sid)
    window = (20.0, 60.0)
    lfp = session.get_lfp(pid, time_range=window).values
    uids = session.units.index
    flashes = session.get_stimulus_table("flashes").index
    faults(deny_access_keys=["testing"])
    with pytest.raises(AccessDeniedError, match="denied"):
        session.get_lfp(pid, time_range=window).values  # noqa: B018
    with pytest.raises(AccessDeniedError, match="denied"):
        session.spike_times[uids[0]]  # noqa: B018
    with pytest.raises(AccessDeniedError, match="denied"):
        session.presentationwise_spike_counts([0.0, 0.1], flashes, uids).compute()
    faults()  # access restored: nothing of the failures was kept
    assert session.get_lfp(pid, time_range=window).values.tobytes() == lfp.tobytes()
    local = npd.open_cache(tiny_cache_dir).get_session_data(sid)
    assert np.array_equal(session.spike_times[uids[0]], local.spike_times[uids[0]])


def test_wrong_bucket_and_wrong_prefix(s3, rel_server):
    url, so = s3
    wrong = url.replace(rel_server.bucket, "no-such-bucket")
    with pytest.raises(CacheNotFoundError, match="Point open_cache"):
        npd.open_cache(wrong, **so)
    with pytest.raises(CacheNotFoundError, match="manifest.json is missing.*Point open_cache"):
        npd.open_cache(url + "-typo", **so)


def test_wrong_bucket_is_named_as_missing(s3, rel_server):
    url, so = s3
    with pytest.raises(CacheNotFoundError, match="bucket .* does not exist"):
        npd.open_cache(url.replace(rel_server.bucket, "no-such-bucket"), **so)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("endpoint", ["refused", "http://no-such-host.invalid:9000"])
def test_unreachable_endpoint_fails_fast_with_default_settings(endpoint):
    """No retry settings passed: the defaults (8 retries with backoff) must not turn a wrong
    endpoint into a minute-long hang."""
    if endpoint == "refused":
        endpoint = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(EndpointUnreachableError) as info:
        npd.open_cache("s3://allen-brain-observatory/visual-coding-neuropixels/ecephys-cache",
                       client_kwargs={"endpoint_url": endpoint})
    assert time.monotonic() - t0 < 5
    assert endpoint in str(info.value) and "NEUROPIXELS_DASK__S3__ENDPOINT_URL" in str(info.value)
    assert isinstance(info.value, ConnectionError)


# ---- damaged files on S3 --------------------------------------------------------------------

@pytest.fixture(scope="module")
def damaged(rel_server, tiny_cache_dir, tmp_path_factory):
    """A cache on S3 with a truncated session file, an HTML page at an LFP key and a units
    table that lost its columns; ``(url, session ids, probe with the foreign file)``."""
    root = tmp_path_factory.mktemp("damaged")
    cache = npd.open_cache(tiny_cache_dir)
    first, second = (int(s) for s in cache.get_session_table().index[:2])
    for name in ("manifest.json", "sessions.csv", "probes.csv", "channels.csv"):
        shutil.copy(os.path.join(tiny_cache_dir, name), root / name)
    (root / "units.csv").write_text("id,foo\n1,2\n")
    for sid in (first, second):
        shutil.copytree(os.path.join(tiny_cache_dir, f"session_{sid}"), root / f"session_{sid}")
    nwb = root / f"session_{first}" / f"session_{first}.nwb"
    nwb.write_bytes(nwb.read_bytes()[: nwb.stat().st_size // 3])
    probe = int(cache.get_session_data(second).probes.index[0])
    (root / f"session_{second}" / f"probe_{probe}_lfp.nwb").write_bytes(
        b"<html><body>Service temporarily unavailable</body></html>" * 50)
    rel_server.upload(root, "damaged")
    return rel_server.url("damaged"), (first, second), probe


def test_damaged_files_on_s3_say_what_is_wrong(damaged, s3, ids, tiny_cache_dir):
    url, (first, second), probe = damaged
    _, so = s3
    cache = fresh_cache(url, so)
    with pytest.raises(InvalidFileError, match="truncated.*re-copy"):
        cache.get_session_data(first).units  # noqa: B018
    session = cache.get_session_data(second)
    with pytest.raises(InvalidFileError, match="not an HDF5/NWB file"):
        session.get_lfp(probe)
    with pytest.raises(InvalidFileError, match="lacks the column"):
        cache.get_units()
    # the intact cache on the same server, in the same process, is unaffected
    good = fresh_cache(*s3).get_session_data(ids[0])
    local = npd.open_cache(tiny_cache_dir).get_session_data(ids[0])
    a = good.get_lfp(ids[1], time_range=(30.0, 31.0)).values
    assert a.tobytes() == local.get_lfp(ids[1], time_range=(30.0, 31.0)).values.tobytes()


# ---- selections -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def session(tiny_cache_dir, ids):
    return npd.open_cache(tiny_cache_dir).get_session_data(ids[0])


@pytest.mark.parametrize("call,error,message", [
    (lambda s, pid: s.get_lfp(pid, time_range=(float("nan"), 20.0)),
     InvalidSelectionError, "start < stop"),
    (lambda s, pid: s.get_lfp(pid, time_range=(-50.0, -10.0)), InvalidSelectionError, "outside"),
    (lambda s, pid: s.get_lfp(pid, channel_ids=[1.5]), InvalidSelectionError,
     "integer channel ids"),
    (lambda s, pid: s.get_lfp(pid, channel_ids=[1]), InvalidSelectionError, "every 16th"),
    (lambda s, pid: s.presentationwise_spike_counts([[0.0, 0.1]], None, None),
     InvalidSelectionError, "1-D"),
    (lambda s, pid: s.presentationwise_spike_counts([0.1], None, None),
     InvalidSelectionError, "at least two"),
    (lambda s, pid: s.presentationwise_spike_counts([0.0, 0.1], [10**9], None),
     InvalidSelectionError, "not in session.stimulus_presentations"),
    (lambda s, pid: s.presentationwise_spike_times(None, [1]), UnknownUnitError, "not among"),
    (lambda s, pid: s.get_stimulus_table(["flashes", "natural_movie_one"]),
     InvalidSelectionError, "natural_movie_one"),
    (lambda s, pid: s.spike_times["unit-7"], UnknownUnitError, "unit-7"),
    (lambda s, pid: s.get_lfp(-1), UnknownProbeError, "probes are"),
])
def test_bad_selections_are_refused_clearly(session, ids, call, error, message):
    with pytest.raises(error, match=message):
        call(session, ids[1])


@pytest.mark.parametrize(("url", "error", "message"), [
    ("", "InvalidURLError", "URL is empty"), ("   ", "InvalidURLError", "URL is empty"),
    ("foo://bucket/cache", "InvalidURLError", "unknown protocol 'foo'.*s3://"),
    ("FILE", "CacheNotFoundError", "is a file, not a folder")])
def test_cache_urls_that_name_nothing(url, error, message, tiny_cache_dir):
    """An empty URL is not "the public bucket", an unknown protocol or a file is not a bare
    ValueError / NotADirectoryError (issue 26, item 6)."""
    url = os.path.join(tiny_cache_dir, "sessions.csv") if url == "FILE" else url
    with pytest.raises(NeuropixelsDaskError, match=message) as caught:
        npd.open_cache(url)
    assert type(caught.value).__name__ == error
    assert isinstance(caught.value, ValueError if error == "InvalidURLError" else OSError)


def test_bad_session_ids(tiny_cache_dir):
    cache = npd.open_cache(tiny_cache_dir)
    with pytest.raises(UnknownSessionError, match="not an integer"):
        cache.get_session_data("latest")
    with pytest.raises(UnknownSessionError, match="get_session_table"):
        cache.get_session_data(-1)


@pytest.mark.parametrize("case", ["probe name", "time_range None", "time_range 1 value",
                                  "channel id text", "bin edge NaN", "session id 1.5"])
def test_malformed_arguments_get_the_packages_errors(session, ids, tiny_cache_dir, case):
    sid, pid = ids
    calls = {
        "probe name": lambda: session.get_lfp("probeA"),
        "time_range None": lambda: session.get_lfp(pid, time_range=(None, 20.0)),
        "time_range 1 value": lambda: session.get_lfp(pid, time_range=(10.0,)),
        "channel id text": lambda: session.get_lfp(pid, channel_ids=["x"]),
        "bin edge NaN": lambda: session.presentationwise_spike_counts([0.0, np.nan, 0.1],
                                                                     None, None),
        "session id 1.5": lambda: npd.open_cache(tiny_cache_dir).get_session_data(sid + 0.5),
    }
    with pytest.raises(NeuropixelsDaskError):
        calls[case]()


# ---- cluster options ------------------------------------------------------------------------

class _FakeGateway:
    """Stands in for ``dask_gateway.Gateway``: real dask-gateway ``Options`` with the hub's
    limits (worker_cores 0.5-4, worker_memory 1-32 GiB); records clusters it was asked for."""

    created: list = []

    def cluster_options(self):
        from dask_gateway.options import Float, Options

        return Options(Float("worker_cores", default=1, min=0.5, max=4, label="Worker cores"),
                       Float("worker_memory", default=4, min=1, max=32, label="Worker memory"))

    def new_cluster(self, options):
        self.created.append(dict(options))
        raise AssertionError("no cluster may be created from invalid options")


@pytest.mark.parametrize("options,error,message", [
    ({"worker_gpus": 1}, ValueError, "no cluster option 'worker_gpus'; available: "
                                     r"\['worker_cores', 'worker_memory'\]"),
    ({"worker_cores": 64}, ValueError, "worker_cores must be <= 4"),
    ({"worker_memory": 0.25}, ValueError, "worker_memory must be >= 1"),
    ({"worker_cores": "four"}, TypeError, "worker_cores must be a float"),
])
def test_invalid_gateway_cluster_options(monkeypatch, options, error, message):
    import dask_gateway

    monkeypatch.setattr(dask_gateway, "Gateway", _FakeGateway)
    _FakeGateway.created = []
    with dask.config.set({"gateway.address": "http://hub.invalid/services/dask-gateway"}), \
            pytest.raises(error, match=message):
        cluster.get_client(**options)
    assert _FakeGateway.created == []


@pytest.mark.parametrize("n_workers", [-1, "two"])
def test_invalid_local_cluster_size(n_workers):
    with pytest.raises(ValueError, match="n_workers"):
        c = cluster.local_cluster(n_workers=n_workers)
        c.close()


def test_get_client_prefers_an_existing_client_over_options(monkeypatch):
    """With a client already running, get_client() returns it and never builds a cluster from
    options (so invalid options cannot tear down a working session)."""
    from distributed import Client, LocalCluster

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was built")

    monkeypatch.setattr(cluster, "local_cluster", no_cluster)
    monkeypatch.setattr(cluster, "gateway_cluster", no_cluster)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as lc, \
            Client(lc) as running:
        assert cluster.get_client(worker_cores=999) is running


def test_storage_state_is_clean_after_failures(s3):
    """The failures above left no broken handle behind: the cache still opens and reads."""
    session = npd.open_cache(*s3[:1], **s3[1]).get_session_data(
        int(npd.open_cache(*s3[:1], **s3[1]).get_session_table().index[0]))
    assert len(session.units) > 0
    assert len(nwb.files) <= 32
    assert PREFIX in s3[0]
