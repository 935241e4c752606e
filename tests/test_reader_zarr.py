"""The Zarr copy reads back exactly what the NWB files hold, through the same session API.

One conversion of the tiny cache (prepared so that both LFP encodings and the fallback between
them are exercised) is shared by the module; the S3 tests convert one session straight into the
local S3 server and count what opening it costs.
"""

from __future__ import annotations

import json
import os
import shutil

import dask
import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import neuropixels_dask as npd
from neuropixels_dask import zarrstore as zs
from neuropixels_dask.convert import convert
from neuropixels_dask.errors import (
    CacheNotFoundError,
    DamagedStoreError,
    InvalidFileError,
    NoLFPError,
)
from neuropixels_dask.local.counting import count_requests
from neuropixels_dask.readers import nwb, read_lfp_block, read_spike_ranges, read_timestamps
from neuropixels_dask.readers import zarr as zr
from neuropixels_dask.zarrstore import Layout

#: small shards and spike chunks, so that a tiny probe spans many blocks and chunk boundaries
SMALL = Layout(lfp_chunk=1250, lfp_chunks_per_shard=16, spike_chunk=4096)
NO_FILTERS = {"amplitude_cutoff_maximum": None, "presence_ratio_minimum": None,
              "isi_violations_maximum": None}


def _lfp_path(cache: str, sid: int, pid: int) -> tuple[str, str]:
    path = os.path.join(cache, f"session_{sid}", f"probe_{pid}_lfp.nwb")
    return path, f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data/data"


def prepare_grid_cache(src: str, dst: str) -> dict:
    """Copy the tiny cache; make probe 1 of session 1 exactly int16 × 0.195 µV (as the real data
    is: no negative zeros) and probe 2 the same except one -0.0 in its *second* shard, so that
    the first block passes the int16 check and a later one forces the float32 fallback."""
    shutil.copytree(src, dst)
    cache = npd.open_cache(dst)
    sid = int(cache.get_session_table().index[0])
    probes = cache.get_probes()
    pids = [int(p) for p in probes.index[(probes["ecephys_session_id"] == sid)
                                         & probes["has_lfp_data"]]][:2]
    for k, pid in enumerate(pids):
        path, ds = _lfp_path(dst, sid, pid)
        with h5py.File(path, "r+") as f:
            x = f[ds][()] + np.float32(0.0)  # -0.0 + 0.0 == +0.0
            if k == 1:
                x[SMALL.lfp_shard + 5000, 3] = np.float32(-0.0)
            f[ds][...] = x
    return {"sid": sid, "int16_probe": pids[0], "fallback_probe": pids[1]}


pytestmark = pytest.mark.usefixtures("close_handles_after_module")


@pytest.fixture(scope="module")
def pair(tiny_cache_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("zarr-reader")
    src, dst = str(base / "nwb"), str(base / "zarr")
    info = prepare_grid_cache(tiny_cache_dir, src)
    with dask.config.set(scheduler="threads"):  # not on a cluster another module started
        results = convert(src, dst, layout=SMALL, verify=True, progress=False)
    return {**info, "src": src, "dst": dst, "results": {r.session_id: r for r in results}}


@pytest.fixture(scope="module")
def caches(pair):
    return npd.open_cache(pair["src"]), npd.open_cache(pair["dst"])


def _session_ids(cache) -> list[int]:
    return [int(s) for s in cache.get_session_table().index]


def test_conversion_picked_the_encodings(pair):
    r = pair["results"][pair["sid"]]
    assert r.verified and r.status == "converted"
    assert r.lfp_encodings[pair["int16_probe"]] == zs.ENCODING_INT16
    assert r.lfp_encodings[pair["fallback_probe"]] == zs.ENCODING_FLOAT32
    store = zs.store_url(os.path.join(pair["dst"], f"session_{pair['sid']}"), pair["sid"])
    root = zr.open_root(store, None)
    assert root[f"lfp/probe_{pair['int16_probe']}/data"].dtype == np.int16
    assert root[f"lfp/probe_{pair['fallback_probe']}/data"].dtype == np.float32
    assert not os.path.exists(os.path.join(store, ".convert"))  # progress markers cleaned up


def test_cache_level_tables_equal(caches):
    a, b = caches
    assert a.format == "nwb" and b.format == "zarr"
    pd.testing.assert_frame_equal(a.get_session_table(), b.get_session_table())
    pd.testing.assert_frame_equal(a.get_probes(), b.get_probes())
    pd.testing.assert_frame_equal(a.get_channels(), b.get_channels())
    pd.testing.assert_frame_equal(a.get_units(), b.get_units())


def test_reader_tables_bit_identical(pair, caches):
    """Every table of the reader interface: same values, dtypes, index, column order."""
    for sid in _session_ids(caches[0]):
        n = nwb.NWBSessionReader(os.path.join(pair["src"], f"session_{sid}"), sid)
        z = zr.ZarrSessionReader(os.path.join(pair["dst"], f"session_{sid}"), sid)
        for name in ("probes", "channels", "units", "running_speed", "invalid_times"):
            pd.testing.assert_frame_equal(getattr(z, name)(), getattr(n, name)(),
                                          check_exact=True, obj=name)
        sn, sz = n.stimulus_tables(), z.stimulus_tables()
        assert list(sz) == list(sn)
        for k in sn:
            pd.testing.assert_frame_equal(sz[k], sn[k], check_exact=True, obj=k)
        np.testing.assert_array_equal(z.spike_index(), n.spike_index())
        assert z.spike_index().dtype == n.spike_index().dtype


def test_spikes_and_lfp_bit_identical(pair, caches):
    for sid in _session_ids(caches[0]):
        n = nwb.NWBSessionReader(os.path.join(pair["src"], f"session_{sid}"), sid)
        z = zr.ZarrSessionReader(os.path.join(pair["dst"], f"session_{sid}"), sid)
        ends = n.spike_index()
        ranges = list(zip(np.r_[0, ends[:-1]].tolist(), ends.tolist(), strict=True))
        ranges += [(4000, 9000), (4096, 4096), (0, int(ends[-1]))]  # across chunk boundaries
        zsrc = z.spike_source()
        assert zsrc.byte_offset == 0  # raw layout: exact ranged reads
        for a, b in zip(read_spike_ranges(n.spike_source(), ranges),
                        read_spike_ranges(zsrc, ranges), strict=True):
            assert a.dtype == b.dtype == np.float64
            assert a.tobytes() == b.tobytes()
        for pid, row in n.probes().iterrows():
            if not row["has_lfp_data"]:
                continue
            try:
                ns = n.lfp_source(pid, row["description"])
            except NoLFPError:
                with pytest.raises(NoLFPError):
                    z.lfp_source(pid, row["description"])
                continue
            zs = z.lfp_source(pid, row["description"])
            assert zs.format == "zarr" and zs.shape == ns.shape and zs.dtype == ns.dtype
            assert zs.channel_ids == ns.channel_ids
            assert (zs.t_first, zs.t_last) == (ns.t_first, ns.t_last)
            assert zs.chunks == (SMALL.lfp_shard, ns.shape[1])
            cols = np.arange(ns.shape[1])
            full_n, full_z = (read_lfp_block(s, 0, ns.shape[0], cols) for s in (ns, zs))
            assert full_z.dtype == np.float32
            assert full_n.tobytes() == full_z.tobytes()  # every bit, -0.0 included
            assert (read_timestamps(ns, 0, ns.shape[0]).tobytes()
                    == read_timestamps(zs, 0, ns.shape[0]).tobytes())
            for i0, i1, c in [(19000, 21500, cols[::-1]), (123, 1373, cols[[2, 0]])]:
                assert (read_lfp_block(ns, i0, i1, c).tobytes()
                        == read_lfp_block(zs, i0, i1, c).tobytes())


def test_session_api_same_results(pair, caches):
    """The session object behaves identically whatever the format behind it."""
    a, b = caches
    sid = pair["sid"]
    sa, sb = a.get_session_data(sid, **NO_FILTERS), b.get_session_data(sid, **NO_FILTERS)
    assert type(sb.reader).__name__ == "ZarrSessionReader"
    for attr in ("probes", "channels", "units", "stimulus_presentations", "running_speed",
                 "invalid_times", "stimulus_conditions"):
        pd.testing.assert_frame_equal(getattr(sb, attr), getattr(sa, attr), check_exact=True,
                                      obj=attr)
    pd.testing.assert_frame_equal(a.get_session_data(sid).units, b.get_session_data(sid).units)
    assert list(sb.spike_times) == list(sa.spike_times)
    for uid in sa.spike_times:
        assert sb.spike_times[uid].tobytes() == sa.spike_times[uid].tobytes()
    stim = sa.stimulus_presentations
    pres = stim.index[stim["stimulus_name"] == "drifting_gratings"]
    edges = np.linspace(-0.1, 0.5, 25)
    ca = sa.presentationwise_spike_counts(edges, pres, sa.units.index)
    cb = sb.presentationwise_spike_counts(edges, pres, sb.units.index)
    xr.testing.assert_identical(cb.compute(), ca.compute())
    assert int(ca.sum()) > 0
    pd.testing.assert_frame_equal(sb.presentationwise_spike_times(pres[:4]),
                                  sa.presentationwise_spike_times(pres[:4]))
    for pid in (pair["int16_probe"], pair["fallback_probe"]):
        la, lb = sa.get_lfp(pid), sb.get_lfp(pid)
        assert lb.attrs["format"] == "zarr" and la.attrs["format"] == "nwb"
        assert lb.values.tobytes() == la.values.tobytes()
        xr.testing.assert_identical(lb.drop_attrs(), la.drop_attrs())
        sel = dict(time_range=(40.0, 41.0), channel_ids=list(la.channel.values[[5, 1]]),
                   exact_timestamps=True)
        xr.testing.assert_identical(sb.get_lfp(pid, **sel).compute().drop_attrs(),
                                    sa.get_lfp(pid, **sel).compute().drop_attrs())


def test_probe_without_lfp(caches):
    b = caches[1]
    probes = b.get_probes()
    row = probes[~probes["has_lfp_data"]]
    assert not row.empty, "the tiny preset must keep a probe without LFP for this test"
    s = b.get_session_data(int(row["ecephys_session_id"].iloc[0]))
    with pytest.raises(NoLFPError, match="has no LFP"):
        s.get_lfp(int(row.index[0]))


def test_xarray_opens_a_probe_group(pair):
    sid, pid = pair["sid"], pair["int16_probe"]
    store = zs.store_url(os.path.join(pair["dst"], f"session_{sid}"), sid)
    ds = xr.open_zarr(store, group=f"lfp/probe_{pid}")
    assert ds["data"].dims == ("time", "channel")
    assert "timestamps" in ds.coords and "channel" in ds.indexes
    z = zr.ZarrSessionReader(os.path.join(pair["dst"], f"session_{sid}"), sid)
    src = z.lfp_source(pid, "")
    assert list(ds["channel"].values) == list(src.channel_ids)
    exact = read_lfp_block(src, 0, 100, np.arange(src.shape[1]))
    np.testing.assert_allclose(ds["data"][:100].values, exact, rtol=1e-6)  # CF scale_factor
    units = xr.open_zarr(store, group="units")
    assert units.sizes["id"] == len(z.units())


def test_half_written_store_is_refused(pair, tmp_path):
    sid = pair["sid"]
    dst = str(tmp_path / "copy")
    shutil.copytree(pair["dst"], dst)
    zarr_json = os.path.join(dst, f"session_{sid}", f"session_{sid}.zarr", "zarr.json")
    with open(zarr_json) as f:
        meta = json.load(f)
    meta["attributes"][zs.ATTRS_KEY]["complete"] = False
    with open(zarr_json, "w") as f:
        json.dump(meta, f)
    cache = npd.open_cache(dst)
    # with the manifest of the complete store still there, the edit is damage, named
    with pytest.raises(DamagedStoreError, match="zarr.json is damaged.*manifest.json"):
        cache.get_session_data(sid)
    # convert removes the manifest (its commit record) before it changes a complete store
    os.remove(os.path.join(os.path.dirname(zarr_json), zs.STORE_MANIFEST))
    with pytest.raises(InvalidFileError, match="incomplete.*[Rr]erun"):
        cache.get_session_data(sid)
    # complete flag without the consolidated metadata: still incomplete (written in that order)
    meta["attributes"][zs.ATTRS_KEY]["complete"] = True
    meta.pop("consolidated_metadata", None)
    with open(zarr_json, "w") as f:
        json.dump(meta, f)
    with pytest.raises(InvalidFileError, match="incomplete"):
        cache.get_session_data(sid)
    shutil.rmtree(os.path.join(dst, f"session_{sid}"))
    with pytest.raises(CacheNotFoundError, match="convert"):
        cache.get_session_data(sid)


# ---- on S3 ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(pair):
    from neuropixels_dask.local.s3server import LocalS3Server

    with LocalS3Server(proxy=True, proxy_mode="thread") as server:
        server.upload(pair["src"], "nwb")
        yield server


@pytest.fixture(scope="module")
def s3_converted(s3, pair):
    """One session converted into S3 with the default (measured) layout."""
    with dask.config.set(scheduler="threads"):
        res = convert(pair["src"], s3.url("zarr"), [pair["sid"]],
                      dst_storage_options=s3.storage_options(), progress=False)
    return res[0]


def test_s3_conversion_and_one_request_open(s3, s3_converted, pair):
    so = s3.storage_options()
    sid = pair["sid"]
    assert s3_converted.status == "converted"
    zcache, ncache = npd.open_cache(s3.url("zarr"), **so), npd.open_cache(s3.url("nwb"), **so)
    for c in (zcache, ncache):
        c.get_session_table()  # cache-level CSVs: not part of opening a session
    with count_requests(s3) as meter:
        sz = zcache.get_session_data(sid)
    # the root zarr.json (with the consolidated metadata) and the manifest that checks it,
    # fetched in one concurrent batch
    assert meter.stats.requests == meter.stats.get_requests == 2, meter.stats
    sn = ncache.get_session_data(sid)
    with count_requests(s3) as meter:
        units = sz.units  # units, channels, probes and the spike index: one concurrent batch
    assert len(units) and meter.stats.head_requests == meter.stats.list_requests == 0
    with count_requests(s3) as meter:
        src = sz.lfp_source(pair["int16_probe"])  # from the consolidated attributes
    assert meter.stats.requests == 0
    assert src.chunks == (Layout().lfp_shard, src.shape[1])
    # counted in this process: local threads even when a distributed client is around
    with dask.config.set(scheduler="threads"):
        # a 1 s all-channel window: few requests, far fewer bytes than from the NWB file
        sz.get_lfp(pair["int16_probe"], time_range=(20.0, 21.0)).compute()  # array metadata
        sn.get_lfp(pair["int16_probe"], time_range=(20.0, 21.0)).compute()
        with count_requests(s3) as mz:
            wz = sz.get_lfp(pair["int16_probe"], time_range=(60.0, 61.0)).compute()
        with count_requests(s3) as mn:
            wn = sn.get_lfp(pair["int16_probe"], time_range=(60.0, 61.0)).compute()
        assert wz.values.tobytes() == wn.values.tobytes()
        assert mz.stats.requests <= 3, mz.stats
        assert mz.stats.bytes * 5 < mn.stats.bytes, (mz.stats, mn.stats)
        # a whole probe: one GET per shard (the partial last shard too), no HEADs
        n_shards = -(-src.shape[0] // src.chunks[0])
        with count_requests(s3) as mw:
            full = sz.get_lfp(pair["int16_probe"]).values
        assert mw.stats.get_requests == n_shards and mw.stats.head_requests == 0, mw.stats
        assert full.tobytes() == sn.get_lfp(pair["int16_probe"]).values.tobytes()
        pd.testing.assert_frame_equal(sz.units, sn.units, check_exact=True)
        uid = int(sn.units.index[0])
        assert sz.spike_times[uid].tobytes() == sn.spike_times[uid].tobytes()
        # every unit's spikes checked against their CRC32C, and still one GET per unit (the
        # checksums are read once per process and store, with the first unit above)
        more = [int(u) for u in sn.units.index[1:9]]
        with count_requests(s3) as ms:
            got = [sz.spike_times[u] for u in more]
        assert ms.stats.requests == ms.stats.get_requests == len(more), ms.stats
        assert all(g.tobytes() == sn.spike_times[u].tobytes() for g, u in zip(got, more, strict=True))
