"""The cache-level tables: each CSV is one whole-object GET, read once per process and shared by
every cache object and method of the same URL; callers cannot change the shared copy."""

from __future__ import annotations

import os

import neuropixels_dask as npd
from neuropixels_dask import caching

TABLES = ("sessions", "probes", "channels", "units")


def _all_four(cache) -> tuple:
    return (cache.get_session_table(), cache.get_probes(), cache.get_channels(),
            cache.get_units())


def test_each_table_is_read_once_per_process(s3_server, s3_cache, tiny_cache_dir):
    url, so = s3_cache
    caching.clear_all()
    s3_server.reset_stats()
    first = _all_four(npd.open_cache(url, **so))
    cold = s3_server.stats()
    sizes = {name: os.path.getsize(os.path.join(tiny_cache_dir, f"{name}.csv"))
             for name in TABLES}
    manifest = os.path.getsize(os.path.join(tiny_cache_dir, "manifest.json"))
    # the manifest and each table: one whole-object GET, exactly their bytes, nothing else
    assert cold.get_requests == 1 + len(TABLES) and cold.requests == cold.get_requests, cold
    assert cold.bytes == manifest + sum(sizes.values()), (cold, sizes)
    s3_server.reset_stats()
    second = _all_four(npd.open_cache(url, **so))  # another cache object, same process
    warm = s3_server.stats()
    assert warm.requests == warm.get_requests == 1 and warm.bytes == manifest, warm
    for a, b in zip(first, second, strict=True):
        assert a.equals(b)


def test_tables_handed_out_are_copies(s3_cache):
    url, so = s3_cache
    cache = npd.open_cache(url, **so)
    units = cache.get_units()
    units["amplitude_cutoff"] = -1.0
    column = units.columns[0]
    del units[column]  # changes this frame in place
    sessions = cache.get_session_table()
    sessions["session_type"] = "changed"
    again = npd.open_cache(url, **so)
    assert len(again.get_units()) > 0 and column in again.get_units().columns
    assert (again.get_units()["amplitude_cutoff"] >= 0).all()
    assert (again.get_session_table()["session_type"] != "changed").all()


def test_a_cleared_process_reads_again(s3_server, s3_cache):
    """``caching.clear_all()`` (what a benchmark does between cold repetitions) forgets the
    tables: the next cache reads them again, once each."""
    url, so = s3_cache
    npd.open_cache(url, **so).get_session_table()
    caching.clear_all()
    s3_server.reset_stats()
    npd.open_cache(url, **so).get_session_table()
    npd.open_cache(url, **so).get_session_table()
    assert s3_server.stats().get_requests == 2 + len(TABLES)
