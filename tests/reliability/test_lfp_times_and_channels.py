"""LFP times that are never guessed and channels that always agree with the file (issue 26 items
3, 5 and 6), on the tiny synthetic cache: through the NWB reader, ``convert --verify`` and the
Zarr copy."""

from __future__ import annotations

import json
import os
import struct

import h5py
import numpy as np
import pytest

import neuropixels_dask as npd
from neuropixels_dask import caching
from neuropixels_dask import convert as cv
from neuropixels_dask import zarrstore as zs
from neuropixels_dask.errors import (
    DamagedStoreError,
    InvalidFileError,
    InvalidSelectionError,
    NeuropixelsDaskError,
)
from neuropixels_dask.readers import chunkindex
from neuropixels_dask.readers import zarr as zr

pytestmark = pytest.mark.usefixtures("close_handles_after_module")

GAP = 5.0


def _first(cache_dir: str) -> tuple[int, int, str]:
    cache = npd.open_cache(cache_dir)
    sid = int(cache.get_session_table().index[0])
    probes = cache.get_session_data(sid).probes
    pid = int(probes.index[probes.has_lfp_data][0])
    return sid, pid, os.path.join(cache_dir, f"session_{sid}", f"probe_{pid}_lfp.nwb")


def _series(pid: int) -> str:
    return f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data"


def _session(cache_dir: str, sid: int):
    caching.clear_all()
    return npd.open_cache(cache_dir).get_session_data(sid)


def test_uneven_timestamps_give_the_files_times_nwb_and_zarr(scratch_cache, tmp_path):
    """A 5 s gap in the middle: the time coordinate is the stored timestamps, a window selects
    the samples whose stored times lie in it, and the Zarr copy does the same."""
    sid, pid, path = _first(scratch_cache)
    with h5py.File(path, "r+") as f:
        ts = f[f"{_series(pid)}/timestamps"]
        k = ts.shape[0] // 2
        ts[k:] = ts[k:] + GAP
        stamps = ts[()]
        data = f[f"{_series(pid)}/data"][()]
    a, b = float(stamps[k] - 0.5), float(stamps[k] + 0.5)  # half before the gap, half after
    inside = (stamps >= a) & (stamps < b)

    def check(session) -> None:
        lfp = session.get_lfp(pid)
        assert lfp.attrs["evenly_spaced"] is False
        assert lfp.time.values.tobytes() == stamps.tobytes()
        for exact in (False, True):
            win = session.get_lfp(pid, time_range=(a, b), exact_timestamps=exact)
            assert win.time.values.tobytes() == stamps[inside].tobytes()
            assert np.array_equal(win.values, data[inside])

    check(_session(scratch_cache, sid))
    dst = str(tmp_path / "zarr")
    (report,) = cv.convert(scratch_cache, dst, [sid], verify=True, progress=False)
    assert report.verified
    zsession = _session(dst, sid)
    assert type(zsession.reader).__name__ == "ZarrSessionReader"
    check(zsession)
    src = zsession.lfp_source(pid)
    assert zr._timestamps_evenly_spaced(src) is False  # the check of stores without the flag


def test_even_timestamps_keep_the_cheap_coordinate(tiny_cache_dir):
    sid, pid, path = _first(tiny_cache_dir)
    lfp = _session(tiny_cache_dir, sid).get_lfp(pid)
    assert lfp.attrs["evenly_spaced"] is True
    with h5py.File(path) as f:
        stamps = f[f"{_series(pid)}/timestamps"][()]
    assert np.abs(lfp.time.values - stamps).max() < 0.5 / lfp.attrs["sampling_rate"]


def test_a_channel_id_too_large_for_any_integer_is_a_named_error(tiny_cache_dir):
    sid, pid, _ = _first(tiny_cache_dir)
    with pytest.raises(InvalidSelectionError, match="integer channel ids"):
        _session(tiny_cache_dir, sid).get_lfp(pid, channel_ids=[2**70])


@pytest.mark.parametrize("delta", [-1, 1])
def test_data_wider_or_narrower_than_its_electrodes_is_named(scratch_cache, delta):
    """The electrodes region one shorter (data wider) or one longer (data narrower) than the
    data's columns: a named error saying both counts, never an IndexError or a column of
    zeros."""
    sid, pid, path = _first(scratch_cache)
    with h5py.File(path, "r+") as f:
        g = f[_series(pid)]
        region = g["electrodes"][()]
        n_cols = g["data"].shape[1]
        del g["electrodes"]
        g["electrodes"] = region[:-1] if delta < 0 else np.append(region, region[:1])
    with pytest.raises(InvalidFileError) as err:
        _session(scratch_cache, sid).get_lfp(pid)
    text = str(err.value)
    assert f"{n_cols} channel column(s)" in text and f"{n_cols + delta} electrode(s)" in text
    assert os.path.basename(path) in text


def test_zarr_copy_with_channel_ids_not_matching_its_data_is_named(tiny_cache_dir, tmp_path):
    sid, pid, _ = _first(tiny_cache_dir)
    dst = str(tmp_path / "zarr")
    cv.convert(tiny_cache_dir, dst, [sid], progress=False)
    root_meta = os.path.join(zs.store_url(os.path.join(dst, f"session_{sid}"), sid), "zarr.json")
    with open(root_meta) as fh:
        doc = json.load(fh)
    info = doc["attributes"][zs.ATTRS_KEY]
    info["lfp"][str(pid)]["channel_ids"] = info["lfp"][str(pid)]["channel_ids"][:-1]
    with open(root_meta, "w") as fh:
        json.dump(doc, fh)
    with pytest.raises(DamagedStoreError):
        _session(dst, sid).get_lfp(pid)


def _damage_a_chunk_origin(path: str, pid: int) -> None:
    """Move one chunk of the LFP data off the chunk grid in its B-tree key (h5py: "bad
    coordinate offset"; our reader placed it elsewhere and read zeros before)."""
    with open(path, "rb") as fh:
        raw = bytearray(fh.read())
    with h5py.File(path, "r") as f:
        ds = f[f"{_series(pid)}/data"]
        index = chunkindex.chunk_index(
            ds, lambda a, b: [bytes(raw[s:e]) for s, e in zip(a, b, strict=True)])
        addr = index.root
        while raw[addr + 5]:  # down to the first leaf
            addr = struct.unpack_from("<Q", raw, addr + 24 + 8 + 8 * 3)[0]
    key = addr + 24 + 2 * (8 + 8 * 3 + 8)  # the third chunk's key
    struct.pack_into("<Q", raw, key + 8, struct.unpack_from("<Q", raw, key + 8)[0] + 7)
    with open(path, "wb") as fh:
        fh.write(bytes(raw))


def _fletcher32_and_flip(path: str, pid: int) -> None:
    """Rewrite the LFP data with Fletcher32, then flip one byte of one chunk."""
    with h5py.File(path, "r+") as f:
        g = f[_series(pid)]
        old = g["data"]
        values, chunks = old[()], old.chunks
        del g["data"]
        g.create_dataset("data", data=values, chunks=chunks, fletcher32=True)
        info = g["data"].id.get_chunk_info_by_coord((0, 1))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 100)
        byte = fh.read(1)
        fh.seek(info.byte_offset + 100)
        fh.write(bytes([byte[0] ^ 0x04]))


@pytest.mark.parametrize("damage", [_damage_a_chunk_origin, _fletcher32_and_flip],
                         ids=["chunk-index key", "fletcher32"])
def test_convert_verify_never_passes_a_good_copy_of_bad_data(scratch_cache, tmp_path, damage):
    """The reader refuses what h5py refuses, so ``convert --verify`` fails with a named error
    naming the damaged file instead of copying zeros or the flipped value."""
    sid, pid, path = _first(scratch_cache)
    damage(path, pid)
    with h5py.File(path) as f, pytest.raises(OSError):  # h5py refuses these bytes
        f[f"{_series(pid)}/data"][()]
    caching.clear_all()
    with pytest.raises(NeuropixelsDaskError) as err:
        cv.convert(scratch_cache, str(tmp_path / "zarr"), [sid], verify=True, progress=False)
    assert os.path.basename(path) in str(err.value), err.value
