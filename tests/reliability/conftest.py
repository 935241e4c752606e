"""Fixtures of the reliability suite (issue 9): one S3 server with a fault-injecting proxy in
front of the tiny cache, and fault settings that always switch back off. The chart fixtures
(helm, rendered objects, the real hub and gateway config) come from the chart kit plugin,
tests/plugins/chart.py, which tests/conftest.py registers for the whole suite.

The server serves ``tiny_cache_dir`` in place (``mounts=``: nothing is copied, the files are only
read) behind the proxy of :mod:`neuropixels_dask.local.s3proxy`, which injects 503/500 answers,
connection resets mid-body, truncated bodies and latency at the rates a test asks for.
"""

from __future__ import annotations

import pytest
from reliability_support import BUCKET, NO_FAULTS, PREFIX

import neuropixels_dask as npd


@pytest.fixture(scope="session")
def rel_server(tiny_cache_dir):
    """The tiny cache on a local S3 server, behind the fault-injecting proxy (own process)."""
    from neuropixels_dask.local.s3server import LocalS3Server

    with LocalS3Server(bucket=BUCKET, proxy=True, proxy_mode="process",
                       mounts={PREFIX: tiny_cache_dir}) as server:
        yield server


@pytest.fixture
def faults(rel_server):
    """``faults(**FaultConfig fields)`` turns injection on; it is off again after the test,
    whatever happened. Counters start at zero."""

    def inject(**changes):
        return rel_server.configure(**{**NO_FAULTS, **changes})

    rel_server.configure(**NO_FAULTS)
    rel_server.reset_stats()
    yield inject
    rel_server.configure(**NO_FAULTS)


@pytest.fixture(scope="session")
def s3(rel_server) -> tuple[str, dict]:
    """``(cache url, storage options)`` through the proxy."""
    return rel_server.url(PREFIX), rel_server.storage_options()


@pytest.fixture(scope="session")
def ids(tiny_cache_dir) -> tuple[int, int]:
    """``(session id, probe id)``: the first session and its first probe with LFP."""
    cache = npd.open_cache(tiny_cache_dir)
    sid = int(cache.get_session_table().index[0])
    probes = cache.get_session_data(sid).probes
    return sid, int(probes.index[probes["has_lfp_data"].astype(bool)][0])
