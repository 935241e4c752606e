"""The NWB reader: laziness and transfer budgets, counted on the wire by the local S3 server's
proxy."""

from __future__ import annotations

import os

import dask
import h5py
import pytest

import neuropixels_dask as npd
from neuropixels_dask import caching


@pytest.fixture
def fresh_cache(s3_cache):
    """A cache whose files are not yet open in this process (so every read is counted)."""
    caching.clear_all()
    url, so = s3_cache
    return npd.open_cache(url, **so)


def _session_file(tiny_cache_dir, sid):
    return os.path.join(tiny_cache_dir, f"session_{sid}", f"session_{sid}.nwb")


def test_opening_a_session_reads_metadata_only(fresh_cache, s3_server, tiny_cache_dir):
    sid = int(fresh_cache.get_session_table().index[0])
    s3_server.reset_stats()
    session = fresh_cache.get_session_data(sid)
    assert len(session.probes) == 3 and len(session.units) > 0
    stats = s3_server.stats()
    path = _session_file(tiny_cache_dir, sid)
    with h5py.File(path) as f:
        spikes = f["units/spike_times"].nbytes + f["units/spike_amplitudes"].nbytes
    size = os.path.getsize(path)
    assert stats.bytes <= 2 * 2**20
    # nothing of the ragged spike data came down: metadata only
    assert stats.bytes < size - spikes, (stats.bytes, size, spikes)
    assert stats.requests <= 40, stats
    # spike times of one unit: one exact ranged read
    s3_server.reset_stats()
    uid = session.units.index[0]
    train = session.spike_times[uid]
    one = s3_server.stats()
    assert one.get_requests == 1 and one.bytes == train.nbytes


def test_lfp_is_lazy_and_reads_only_touched_chunks(fresh_cache, s3_server, tiny_cache_dir):
    sid = int(fresh_cache.get_session_table().index[0])
    session = fresh_cache.get_session_data(sid)
    pid = int(session.probes.index[0])
    s3_server.reset_stats()
    lfp = session.get_lfp(pid)
    meta = s3_server.stats()
    lfp_path = os.path.join(tiny_cache_dir, f"session_{sid}", f"probe_{pid}_lfp.nwb")
    size = os.path.getsize(lfp_path)
    assert meta.bytes < 0.1 * size, (meta.bytes, size)  # metadata, no samples
    # a 1 s window across all channels: the compressed chunks it touches, ×1.2 at most
    with h5py.File(lfp_path) as f:
        ds = f[f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data/data"]
        row = 1  # the window below lies in the second row of storage chunks
        touched = sum(ds.id.get_chunk_info_by_coord((row * ds.chunks[0], c)).size
                      for c in range(ds.shape[1]))
    t0 = float(lfp.time[46989 + 100])
    window = lfp.sel(time=slice(t0, t0 + 1.0))
    with dask.config.set(scheduler="sync"):
        window.values  # noqa: B018 - warm the chunk index (B-tree) of this file
        s3_server.reset_stats()
        window.values  # noqa: B018
    data = s3_server.stats()
    assert data.bytes <= 1.2 * touched, (data.bytes, touched)
    assert data.get_requests <= ds.shape[1] + 2
