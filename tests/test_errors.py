"""Bad input gets a clear error naming the thing and what to do, never a bare h5py/botocore one."""

from __future__ import annotations

import glob
import json
import os
import time

import pytest

import neuropixels_dask as npd
from neuropixels_dask.errors import (
    CacheNotFoundError,
    EndpointUnreachableError,
    InvalidFileError,
    InvalidSelectionError,
    NoLFPError,
    UnknownProbeError,
    UnknownSessionError,
    UnknownUnitError,
)


def _first_session(cache):
    return int(cache.get_session_table().index[0])


def test_unknown_ids(scratch_cache):
    cache = npd.open_cache(scratch_cache)
    with pytest.raises(UnknownSessionError, match="not in this cache"):
        cache.get_session_data(123)
    session = cache.get_session_data(_first_session(cache))
    with pytest.raises(UnknownProbeError, match="probes are"):
        session.get_lfp(42)
    with pytest.raises(UnknownUnitError, match="not among"):
        session.spike_times[42]
    with pytest.raises(UnknownUnitError):
        session.presentationwise_spike_counts([0, 0.1], None, [42])
    with pytest.raises(TypeError, match="unknown unit filter"):
        cache.get_units(amplitude_cutof_maximum=0.2)
    # our KeyError subclasses still read well when printed
    try:
        cache.get_session_data(123)
    except KeyError as exc:
        assert str(exc).startswith("Session 123")


def test_probe_without_lfp(scratch_cache):
    cache = npd.open_cache(scratch_cache)
    session = cache.get_session_data(_first_session(cache))
    no_lfp = session.probes.index[~session.probes["has_lfp_data"]][0]
    with pytest.raises(NoLFPError, match="has no LFP file"):
        session.get_lfp(no_lfp)


def test_out_of_range_selections(scratch_cache):
    cache = npd.open_cache(scratch_cache)
    session = cache.get_session_data(_first_session(cache))
    pid = session.probes.index[0]
    with pytest.raises(InvalidSelectionError, match="outside"):
        session.get_lfp(pid, time_range=(5000.0, 5001.0))
    with pytest.raises(InvalidSelectionError, match="start < stop"):
        session.get_lfp(pid, time_range=(40.0, 30.0))
    with pytest.raises(InvalidSelectionError, match="no LFP on this probe"):
        session.get_lfp(pid, channel_ids=[session.channels.index[1]])
    with pytest.raises(InvalidSelectionError, match="strictly increasing"):
        session.presentationwise_spike_counts([0.1, 0.0], None, None)
    with pytest.raises(InvalidSelectionError, match="not shown"):
        session.get_stimulus_table("natural_movie_one")


def test_truncated_nwb(scratch_cache):
    cache = npd.open_cache(scratch_cache)
    sid = _first_session(cache)
    path = os.path.join(scratch_cache, f"session_{sid}", f"session_{sid}.nwb")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 3)
    with pytest.raises(InvalidFileError, match="truncated"):
        cache.get_session_data(sid).units  # noqa: B018


def test_foreign_file_at_nwb_key(scratch_cache):
    cache = npd.open_cache(scratch_cache)
    sid = _first_session(cache)
    path = os.path.join(scratch_cache, f"session_{sid}", f"session_{sid}.nwb")
    with open(path, "wb") as f:
        f.write(b"<html>this is not the file you are looking for</html>" * 100)
    with pytest.raises(InvalidFileError, match="not an HDF5/NWB file"):
        cache.get_session_data(sid)


def test_nwb_missing_groups(scratch_cache):
    import h5py

    cache = npd.open_cache(scratch_cache)
    sid = _first_session(cache)
    path = os.path.join(scratch_cache, f"session_{sid}", f"session_{sid}.nwb")
    with h5py.File(path, "a") as f:
        del f["units"]
    session = cache.get_session_data(sid)
    with pytest.raises(InvalidFileError, match="has no '/units'"):
        session.units  # noqa: B018
    lfp = glob.glob(os.path.join(scratch_cache, f"session_{sid}", "probe_*_lfp.nwb"))[0]
    with h5py.File(lfp, "a") as f:
        del f["acquisition"]
    pid = int(os.path.basename(lfp).split("_")[1])
    with pytest.raises(InvalidFileError, match="not an Allen LFP file"):
        session.get_lfp(pid)


def test_corrupt_csv_and_manifest(scratch_cache):
    with open(os.path.join(scratch_cache, "units.csv"), "w") as f:
        f.write("id,foo\n1,2\n")
    cache = npd.open_cache(scratch_cache)
    with pytest.raises(InvalidFileError, match="lacks the column"):
        cache.get_units()
    with open(os.path.join(scratch_cache, "manifest.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(InvalidFileError, match="not valid JSON"):
        npd.open_cache(scratch_cache)


def test_missing_cache_and_session_file(scratch_cache, tmp_path):
    with pytest.raises(CacheNotFoundError, match="manifest.json is missing"):
        npd.open_cache(str(tmp_path / "nothing-here"))
    cache = npd.open_cache(scratch_cache)
    sid = _first_session(cache)
    os.remove(os.path.join(scratch_cache, f"session_{sid}", f"session_{sid}.nwb"))
    with pytest.raises(CacheNotFoundError, match="does not exist"):
        cache.get_session_data(sid)


def test_wrong_bucket(s3_server):
    with pytest.raises(CacheNotFoundError, match="bucket"):
        npd.open_cache("s3://no-such-bucket-here/ecephys-cache", **s3_server.storage_options())


def test_unreachable_endpoint_fails_fast():
    t0 = time.monotonic()
    with pytest.raises(EndpointUnreachableError, match="Could not reach"):
        npd.open_cache("s3://allen-brain-observatory/ecephys-cache", anon=True,
                       client_kwargs={"endpoint_url": "http://127.0.0.1:9"},
                       config_kwargs={"retries": {"max_attempts": 2, "mode": "standard"},
                                      "connect_timeout": 1})
    assert time.monotonic() - t0 < 20


def test_cache_without_tables(scratch_cache):
    # a manifest without its tables opens, then fails clearly on the first table it needs
    with open(os.path.join(scratch_cache, "manifest.json"), "w") as f:
        json.dump({"manifest": []}, f)
    os.remove(os.path.join(scratch_cache, "sessions.csv"))
    cache = npd.open_cache(scratch_cache)
    with pytest.raises(CacheNotFoundError, match="sessions.csv"):
        cache.get_session_table()
