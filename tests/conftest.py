"""Shared fixtures: one tiny synthetic cache, served by a real S3 server on localhost."""

from __future__ import annotations

import os
import shutil

import hypothesis  # noqa: F401
import pytest

from neuropixels_dask.local.synth import generate_cache

# hypothesis is imported here, at collection, on purpose: its pytest plugin otherwise imports it
# in the terminal summary, while Dask/tornado threads may still be compiling, and CPython 3.11.7's
# AST validator is not thread-safe ("SystemError: AST constructor recursion depth mismatch").

CACHE_PREFIX = "visual-coding-neuropixels/ecephys-cache"

# the chart kit, tests/plugins/chart.py (chart, reliability); AllenSDK's reference environment
pytest_plugins = ["plugins.chart", "plugins.allensdk"]


def pytest_collection_modifyitems(config, items):
    """Files with slow tests run first. ``./dev test`` spreads whole files over two processes
    in collection order (``--dist loadfile --no-loadscope-reorder``): started first, the few
    files of a minute or more (hubs, the browser, the benchmark smoke run) overlap the many
    short ones instead of finishing last, one process idle beside them."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: the order within stays


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory) -> str:
    """The tiny preset, generated once per test run (a few seconds)."""
    path = str(tmp_path_factory.mktemp("caches") / "tiny")
    generate_cache(path, "tiny", progress=False)
    return path


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server in its own process on 127.0.0.1, behind a counting proxy."""
    from neuropixels_dask.local.s3server import LocalS3Server

    with LocalS3Server(proxy=True) as server:
        yield server


@pytest.fixture(scope="session")
def s3_cache(s3_server, tiny_cache_dir) -> tuple[str, dict]:
    """``(url, storage_options)`` of the tiny cache uploaded to the local S3 server."""
    s3_server.upload(tiny_cache_dir, CACHE_PREFIX)
    return s3_server.url(CACHE_PREFIX), s3_server.storage_options()


@pytest.fixture
def scratch_cache(tmp_path, tiny_cache_dir) -> str:
    """A private copy of the tiny cache that a test may damage."""
    dst = str(tmp_path / "cache")
    shutil.copytree(tiny_cache_dir, dst)
    return dst


@pytest.fixture(scope="session")
def local_client():
    """A real multi-process LocalCluster (2 workers, 1 thread each)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(autouse=True)
def _no_ambient_gateway(monkeypatch):
    """Tests decide explicitly whether a dask-gateway is configured."""
    for key in list(os.environ):
        if key.startswith("DASK_GATEWAY__"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def close_handles_after_module():
    """Close cached HDF5 handles and Zarr caches once a module is done, before module-scoped
    S3 servers and temporary folders go away (use with ``pytestmark``)."""
    yield
    from neuropixels_dask import caching

    caching.clear_all()
