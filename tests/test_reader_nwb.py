"""The NWB reader: laziness and transfer budgets, counted on the wire by the local S3 server's
proxy."""

from __future__ import annotations

import os

import dask
import h5py
import pytest

import neuropixels_dask as npd
from neuropixels_dask import caching
from neuropixels_dask.readers import nwb
from neuropixels_dask.storage import hdf5file


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
    # spike times of one unit: one exact ranged read (the mapping itself first reads the invalid
    # intervals it warns about, as AllenSDK's spike_times does)
    spike_times = session.spike_times
    s3_server.reset_stats()
    uid = session.units.index[0]
    train = spike_times[uid]
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
    # metadata (with the tail read ahead at open, storage/hdf5file.py), no samples
    assert meta.bytes < 0.1 * size + hdf5file.METADATA_TAIL, (meta.bytes, size)
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


def test_a_damaged_lfp_chunk_is_named(scratch_cache):
    """A chunk that does not inflate (bytes flipped on disk) fails the read with the file named
    and what to do, instead of returning wrong samples; its neighbours still read."""
    from neuropixels_dask.errors import InvalidFileError

    caching.clear_all()
    cache = npd.open_cache(scratch_cache)
    sid = int(cache.get_session_table().index[0])
    session = cache.get_session_data(sid)
    pid = int(session.probes.index[0])
    path = os.path.join(scratch_cache, f"session_{sid}", f"probe_{pid}_lfp.nwb")
    with h5py.File(path) as f:
        ds = f[f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data/data"]
        info = ds.id.get_chunk_info_by_coord((0, 3))  # first row, fourth channel
        rows, cols = ds.shape
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 2)
        fh.write(b"\xff" * 64)
    lfp = session.get_lfp(pid)
    with dask.config.set(scheduler="threads"), pytest.raises(InvalidFileError) as err:
        lfp.isel(time=slice(0, 100)).values  # noqa: B018
    assert "does not inflate" in str(err.value) and "re-copy" in str(err.value)
    with dask.config.set(scheduler="threads"):  # the last row was not damaged
        assert lfp.isel(time=slice(rows - 10, rows)).values.shape == (10, cols)


def test_opening_an_lfp_file_reads_ahead_and_agrees_with_h5py(fresh_cache, s3_server,
                                                               tiny_cache_dir):
    """Opening a probe's LFP asks for the size, the first block and the file's tail together,
    and reads the first and last timestamp in one batch: fewer round trips, same values."""
    sid = int(fresh_cache.get_session_table().index[0])
    session = fresh_cache.get_session_data(sid)
    probes = session.probes[session.probes.has_lfp_data]
    for pid in probes.index:
        s3_server.reset_stats()
        src = session.lfp_source(int(pid))
        stats = s3_server.stats()
        path = os.path.join(tiny_cache_dir, f"session_{sid}", f"probe_{pid}_lfp.nwb")
        with h5py.File(path) as f:
            ts = f[f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data/timestamps"]
            assert (src.t_first, src.t_last) == (float(ts[0]), float(ts[-1]))
        # one HEAD at most (the first three requests go out together), and the tail came
        # down in one piece: a handful of GETs, not one per block walked, plus the sampled
        # timestamp chunks checked for even spacing (in the batch of the first and last)
        assert stats.head_requests <= 1, stats
        assert stats.get_requests <= 6 + nwb.TIMESTAMP_SAMPLE_CHUNKS, stats
        assert stats.bytes >= hdf5file.METADATA_TAIL
