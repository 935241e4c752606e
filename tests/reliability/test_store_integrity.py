"""A Zarr copy that lost or damaged objects after it was made (an interrupted ``aws s3 sync``, a
bad rclone, a truncated upload) never reads as data: every chunk and shard carries a CRC32C, a
missing, empty or short object is an error naming it, ``verify`` finds every such object from the
store alone (one LIST, the shard indexes, the checksums), and ``convert`` rewrites only those.

The stores live on the real local S3 server (reliability fixture, through the proxy, which
counts requests); objects are damaged behind the package's back, straight in the server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from reliability_support import NO_FILTERS, SMALL, fresh_cache

import neuropixels_dask as npd
from neuropixels_dask import convert as cv
from neuropixels_dask import verify
from neuropixels_dask import zarrstore as zs
from neuropixels_dask.errors import DamagedStoreError

pytestmark = pytest.mark.usefixtures("close_handles_after_module")


@pytest.fixture(scope="module")
def pristine(tiny_cache_dir, ids, tmp_path_factory) -> str:
    """One session of the tiny cache converted (small shards: many objects), kept untouched."""
    dst = str(tmp_path_factory.mktemp("integrity") / "zarr")
    with dask.config.set(scheduler="threads"):
        cv.convert(tiny_cache_dir, dst, [ids[0]], layout=SMALL, progress=False)
    return dst


def _store_key(sid: int) -> str:
    return f"session_{sid}/session_{sid}.zarr"


def _upload(pristine: str, rel_server, prefix: str):
    rel_server.upload(pristine, prefix)
    fs = rel_server.filesystem(direct=True, skip_instance_cache=True)
    return rel_server.url(prefix), rel_server.storage_options(), fs, prefix


@pytest.fixture(scope="module")
def shared_s3(pristine, rel_server):
    """The converted cache on S3 once for the module: ``(url, storage options, direct fs,
    base)``; tests that damage it put every object back (:func:`damaged`)."""
    got = _upload(pristine, rel_server, "zarr-shared")
    yield got
    got[2].rm(f"{rel_server.bucket}/zarr-shared", recursive=True)


@pytest.fixture
def damaged(shared_s3, rel_server):
    """``damage(key, how)`` on the shared copy; the objects are restored after the test."""
    url, so, fs, base = shared_s3
    saved: dict[str, bytes] = {}

    def damage(key: str, how: str) -> None:
        path = f"{rel_server.bucket}/{base}/{key}"
        saved.setdefault(path, fs.cat_file(path))
        _damage(fs, path, how)

    yield damage
    for path, data in saved.items():
        fs.pipe_file(path, data)


@pytest.fixture
def on_s3(pristine, rel_server):
    """A copy of its own on S3, for a test that repairs it."""
    got = _upload(pristine, rel_server, "zarr-repaired")
    yield got
    got[2].rm(f"{rel_server.bucket}/zarr-repaired", recursive=True)


def _objects(fs, bucket: str, base: str) -> list[str]:
    root = f"{bucket}/{base}/"
    return sorted(p[len(root):] for p in fs.find(root))


def _damage(fs, path: str, how: str) -> None:
    """Damage one object on the server: ``missing``, ``truncated``, ``empty``, ``flipped``."""
    if how == "missing":
        fs.rm(path)
        return
    data = fs.cat_file(path)
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "empty":
        data = b""
    elif how == "flipped":  # one bit in the middle: same size, same key
        mid = len(data) // 2
        data = data[:mid] + bytes([data[mid] ^ 0x10]) + data[mid + 1:]
    fs.pipe_file(path, data)


def _keys(store: str) -> dict[str, str]:
    """One object of each kind in a store, by what reads it."""
    root = zarr.open_group(store, mode="r")
    pid = next(k for k in root["lfp"].group_keys())
    return {"lfp": f"lfp/{pid}/data/c/1/0", "timestamps": f"lfp/{pid}/timestamps/c/2",
            "spikes": "units/spike_times/c/1", "table": "units/snr/c/0", "pid": pid}


def _copy_of(pristine: str, folder, sid: int) -> tuple[str, str, dict[str, str], int]:
    """``(cache copy, session store, _keys, probe id)`` of a fresh copy of the converted cache."""
    copy = str(folder)
    shutil.copytree(pristine, copy)
    store = zs.store_url(os.path.join(copy, f"session_{sid}"), sid)
    keys = _keys(store)
    return copy, store, keys, int(keys["pid"].split("_")[1])


def test_every_chunk_and_shard_carries_a_checksum(pristine, ids):
    store = zs.store_url(os.path.join(pristine, f"session_{ids[0]}"), ids[0])
    root = zarr.open_group(store, mode="r")
    assert root.attrs[zs.ATTRS_KEY]["version"] == zs.FORMAT_VERSION == 3
    arrays = [a for _, a in root.members(max_depth=None) if isinstance(a, zarr.Array)]
    assert len(arrays) > 50
    for arr in arrays:
        codecs = arr.metadata.codecs
        if arr.shards is not None:
            (shard,) = codecs
            assert zs.has_checksum(list(shard.codecs)), arr.path  # every inner chunk
            assert zs.has_checksum(list(shard.index_codecs)), arr.path  # and the index
        else:
            assert zs.has_checksum(list(codecs)), arr.path
    # every chunk inside the extent is written, even one equal to the fill value
    report = verify.check_store(store, deep=True)
    assert report.ok, report
    assert report.objects > len(arrays)


@pytest.mark.parametrize(("what", "how"), [
    ("lfp", "missing"), ("lfp", "empty"), ("lfp", "truncated"), ("lfp", "flipped"),
    ("timestamps", "missing"), ("spikes", "missing"), ("spikes", "truncated"),
    ("table", "missing"), ("table", "flipped")])
def test_a_damaged_object_is_an_error_naming_it(shared_s3, damaged, ids, pristine, what, how):
    url, so, _, _ = shared_s3
    sid = ids[0]
    store = zs.store_url(os.path.join(pristine, f"session_{sid}"), sid)
    keys = _keys(store)
    pid = int(keys["pid"].split("_")[1])
    damaged(f"{_store_key(sid)}/{keys[what]}", how)
    session = fresh_cache(url, so).get_session_data(sid, **NO_FILTERS)

    def read():
        if what == "lfp":
            return session.get_lfp(pid).values  # whole shards, fetched at once
        if what == "timestamps":
            return session.get_lfp(pid, exact_timestamps=True).time.values
        if what == "spikes":
            return [session.spike_times[u] for u in session.units.index]
        return session.units

    with pytest.raises(DamagedStoreError) as caught:
        read()
    msg = str(caught.value)
    assert keys[what] in msg and f"--sessions {sid}" in msg and "convert" in msg
    assert isinstance(caught.value, OSError)  # what `except OSError` in a notebook catches
    if what == "lfp" and how != "flipped":  # a short window in that shard: zarr's partial
        # read, same error (a flipped bit only fails the inner chunk holding it)
        t = session.get_lfp(pid).time.values
        shard = int(keys["lfp"].split("/")[-2])
        i = shard * SMALL.lfp_shard + 100
        with pytest.raises(DamagedStoreError, match=keys["lfp"]):
            session.get_lfp(pid, time_range=(t[i], t[i + 50])).compute()


def test_verify_finds_them_without_the_source_and_convert_rewrites_them(
        on_s3, rel_server, ids, pristine, tiny_cache_dir, tmp_path):
    url, so, fs, base = on_s3
    sid = ids[0]
    store = zs.store_url(os.path.join(pristine, f"session_{sid}"), sid)
    keys = _keys(store)
    where = f"{rel_server.bucket}/{base}/{_store_key(sid)}"
    damage = {keys["lfp"]: "missing", keys["spikes"]: "truncated",
              keys["timestamps"]: "empty", keys["table"]: "flipped",
              "units/quality/zarr.json": "missing"}
    for key, how in damage.items():
        _damage(fs, f"{where}/{key}", how)
    payload_flip = f"lfp/{keys['pid']}/data/c/3/0"  # a bit inside a shard's data: deep finds it
    _damage(fs, f"{where}/{payload_flip}", "flipped")
    n_objects = len(_objects(fs, rel_server.bucket, f"{base}/{_store_key(sid)}"))

    rel_server.reset_stats()
    (report,) = verify.verify_cache(url, [sid], storage_options=so)
    stats = rel_server.stats()
    assert not report.ok and report.keys == set(damage), str(report)
    # fast: one LIST, the shard indexes and small objects; nothing of the NWB source (which
    # is not even on this server) and far fewer bytes than the store holds
    assert stats.list_requests == 1, stats
    assert stats.get_requests < n_objects, stats
    assert stats.bytes < sum(os.path.getsize(os.path.join(d, f)) for d, _, fs_ in
                             os.walk(store) for f in fs_) / 2, stats
    text = str(report)
    assert f"neuropixels-dask convert {tiny_cache_dir} {url} --sessions {sid}" in text
    for key in damage:
        assert key in text
    (deep,) = verify.verify_cache(url, [sid], storage_options=so, deep=True)
    assert deep.keys == set(damage) | {payload_flip}, str(deep)
    # every session of the cache by default: one that was never converted is reported too
    other = [r for r in verify.verify_cache(url, storage_options=so) if r.session_id != sid]
    assert other and all(r.keys == {"zarr.json"} and "no store" in str(r) for r in other)

    # the command line: a readable report and a non-zero exit, then zero once rewritten
    env = {**os.environ, **rel_server.env()}
    cli = [sys.executable, "-m", "neuropixels_dask.cli"]
    out = subprocess.run([*cli, "verify", url, "--sessions", str(sid)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert keys["lfp"] in out.stdout and "missing" in out.stdout
    assert f"damaged or missing: [{sid}]" in out.stdout
    fixed = subprocess.run([*cli, "convert", tiny_cache_dir, url, "--sessions", str(sid),
                            "--no-progress"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"session {sid}: repaired" in fixed.stdout
    # only what was damaged: the blocks of the lost objects, and the tables
    assert "3 blocks written" in fixed.stdout, fixed.stdout
    assert verify.verify_cache(url, [sid], storage_options=so)[0].ok
    # a bit flipped inside a shard's data passes the fast check; `convert --verify` decodes
    # every block (and compares it with the source): the shard fails its checksum, is rewritten
    (again,) = cv.convert(tiny_cache_dir, url, [sid], dst_storage_options=so, verify=True,
                          progress=False)
    assert again.status == "repaired" and again.verified, again
    assert again.repaired == [f"damaged block lfp/{keys['pid']}/{3 * SMALL.lfp_shard}"]
    (deep,) = verify.verify_cache(url, [sid], storage_options=so, deep=True)
    assert deep.ok, str(deep)


def test_a_foreign_reader_reads_the_store_and_sees_fill_values_for_a_lost_chunk(
        pristine, ids, tmp_path):
    sid = ids[0]
    copy, store, keys, pid = _copy_of(pristine, tmp_path / "copy", sid)
    ds = xr.open_zarr(store, group=f"lfp/{keys['pid']}")
    lfp = npd.open_cache(copy).get_session_data(sid).get_lfp(pid)
    assert ds["data"].dims == ("time", "channel")
    np.testing.assert_allclose(ds["data"].values, lfp.values, rtol=1e-6)  # CF scale_factor
    assert list(ds["channel"].values) == list(lfp.channel.values)
    os.remove(os.path.join(store, *keys["lfp"].split("/")))
    # what docs/zarr-layout.md says: plain zarr/xarray read a lost shard as the fill value ...
    lost = xr.open_zarr(store, group=f"lfp/{keys['pid']}")["data"][SMALL.lfp_shard:
                                                                 2 * SMALL.lfp_shard]
    assert float(np.abs(lost.values).max()) == 0.0
    # ... the session API refuses it
    with pytest.raises(DamagedStoreError):
        npd.open_cache(copy).get_session_data(sid).get_lfp(pid).compute()


def _downgrade_to_format_1(store: str) -> None:
    """Rewrite a store as format 1 wrote it: no CRC32C anywhere, tables without their all-fill
    chunks, version 1 (what stores converted before checksums look like)."""
    from zarr.codecs import ShardingCodec

    root = zarr.open_group(store, mode="r+")
    for path, arr in list(root.members(max_depth=None)):
        if not isinstance(arr, zarr.Array):
            continue
        values = arr[...]
        codecs = arr.metadata.codecs
        kw = {"filters": None, "serializer": "auto"}
        if arr.shards is not None:
            (sh,) = codecs
            inner = [c for c in sh.codecs if not isinstance(c, zs.CHECKSUM)]
            kw = {"filters": [c for c in inner if type(c).__name__ == "TransposeCodec"],
                  "serializer": next(c for c in inner if type(c).__name__ == "BytesCodec"),
                  "compressors": inner[[type(c).__name__ for c in inner].index("BytesCodec")
                                       + 1:], "shards": arr.shards}
            assert isinstance(sh, ShardingCodec)
        else:
            kw["serializer"] = codecs[0]
            kw["compressors"] = [c for c in codecs[1:] if not isinstance(c, zs.CHECKSUM)]
        data_array = verify.is_data_array(path)
        new = root.create_array(path, shape=arr.shape, dtype=arr.dtype, chunks=arr.chunks,
                                fill_value=arr.fill_value, attributes=dict(arr.attrs),
                                dimension_names=arr.metadata.dimension_names, overwrite=True,
                                config={"write_empty_chunks": data_array}, **kw)
        if values.size:
            new[...] = values
    info = dict(root.attrs[zs.ATTRS_KEY])
    info["version"] = 1
    root.attrs[zs.ATTRS_KEY] = info
    os.remove(os.path.join(store, zs.STORE_MANIFEST))  # format 1 had none
    zarr.consolidate_metadata(store)


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
@pytest.mark.filterwarnings("ignore::neuropixels_dask.errors.UnverifiedStoreWarning")
def test_format_1_stores_are_still_read_and_checked(pristine, ids, tmp_path):
    sid = ids[0]
    copy, store, keys, pid = _copy_of(pristine, tmp_path / "v1", sid)
    _downgrade_to_format_1(store)
    with open(os.path.join(store, "zarr.json")) as f:
        assert json.load(f)["attributes"][zs.ATTRS_KEY]["version"] == 1
    a = npd.open_cache(pristine).get_session_data(sid, **NO_FILTERS)
    b = npd.open_cache(copy).get_session_data(sid, **NO_FILTERS)
    assert b.get_lfp(pid).values.tobytes() == a.get_lfp(pid).values.tobytes()
    assert all(a.spike_times[u].tobytes() == b.spike_times[u].tobytes() for u in a.units.index)
    assert b.units.equals(a.units)
    report = verify.check_store(store)
    assert report.ok and report.version == 1 and "no checksum" in str(report)
    os.remove(os.path.join(store, *keys["lfp"].split("/")))
    with pytest.raises(DamagedStoreError, match=keys["lfp"]):
        npd.open_cache(copy).get_session_data(sid).get_lfp(pid).compute()
    assert verify.check_store(store).keys == {keys["lfp"]}


def _as_format_2(store: str) -> None:
    """Rewrite a store as format 2 left it: no manifest, no spike-time checksums."""
    os.remove(os.path.join(store, zs.STORE_MANIFEST))
    shutil.rmtree(os.path.join(store, *zs.SPIKE_CRC_PATH.split("/")))
    root = zarr.open_group(store, mode="r+")
    info = dict(root.attrs[zs.ATTRS_KEY])
    info["version"] = 2
    root.attrs[zs.ATTRS_KEY] = info
    with pytest.warns(UserWarning):  # zarr: "consolidated metadata is not in the spec"
        zarr.consolidate_metadata(store)


def test_format_2_stores_without_a_manifest_read_with_a_warning(pristine, ids, tmp_path):
    """A store written before the manifest (format 2: no metadata checksums, no spike-time
    checksums) still reads, and says how to upgrade; verify notes it."""
    from neuropixels_dask.errors import UnverifiedStoreWarning

    sid = ids[0]
    copy, store, keys, pid = _copy_of(pristine, tmp_path / "v2", sid)
    _as_format_2(store)
    a = npd.open_cache(pristine).get_session_data(sid, **NO_FILTERS)
    with pytest.warns(UnverifiedStoreWarning, match="convert SRC NEWDST"):
        b = npd.open_cache(copy).get_session_data(sid, **NO_FILTERS)
    assert all(a.spike_times[u].tobytes() == b.spike_times[u].tobytes() for u in a.units.index)
    assert b.get_lfp(pid).values.tobytes() == a.get_lfp(pid).values.tobytes()
    report = verify.check_store(store)
    assert report.ok and "no manifest.json" in str(report), str(report)


def test_edited_metadata_is_named_found_and_rewritten(pristine, ids, tmp_path, tiny_cache_dir):
    """An edited array zarr.json (the dtype, as a partial sync or a hand edit could leave it) is
    a DamagedStoreError naming it, verify lists it, convert writes it back (issue 23)."""
    sid = ids[0]
    copy, store, keys, pid = _copy_of(pristine, tmp_path / "edit", sid)
    doc = os.path.join(store, "lfp", keys["pid"], "data", "zarr.json")
    with open(doc) as f:
        text = f.read()
    assert '"int16"' in text or '"float32"' in text
    with open(doc, "w") as f:
        f.write(text.replace('"int16"', '"uint16"').replace('"float32"', '"int32"'))
    with pytest.raises(DamagedStoreError, match=f"{keys['pid']}/data/zarr.json is damaged"):
        npd.open_cache(copy).get_session_data(sid).get_lfp(pid).compute()
    # and the spike-time checksums themselves: a unit's read names them
    crc = os.path.join(store, *zs.SPIKE_CRC_PATH.split("/"), "c", "0")
    with open(crc, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0x01
    with open(crc, "wb") as f:
        f.write(bytes(data))
    session = npd.open_cache(copy).get_session_data(sid, **NO_FILTERS)
    with pytest.raises(DamagedStoreError, match=f"{zs.SPIKE_CRC_PATH}/c/0"):
        session.spike_times[session.units.index[0]]
    assert verify.check_store(store).keys == {f"lfp/{keys['pid']}/data/zarr.json",
                                              f"{zs.SPIKE_CRC_PATH}/c/0"}
    with dask.config.set(scheduler="threads"):
        (r,) = cv.convert(tiny_cache_dir, copy, [sid], layout=SMALL, progress=False)
    assert r.status == "repaired", r
    assert verify.check_store(store, deep=True).ok
    a = npd.open_cache(pristine).get_session_data(sid, **NO_FILTERS)
    b = npd.open_cache(copy).get_session_data(sid, **NO_FILTERS)
    assert b.get_lfp(pid).values.tobytes() == a.get_lfp(pid).values.tobytes()
    assert all(a.spike_times[u].tobytes() == b.spike_times[u].tobytes() for u in a.units.index)


@pytest.mark.filterwarnings("ignore::neuropixels_dask.errors.UnverifiedStoreWarning")
def test_unreadable_metadata_is_named_without_a_manifest_too(pristine, ids, tmp_path):
    """Where no manifest checks it (format 2), a broken root zarr.json is a DamagedStoreError,
    not a JSONDecodeError, and invalid array metadata not a bare MetadataValidationError
    (issue 26, item 6)."""
    sid = ids[0]
    copy, store, keys, pid = _copy_of(pristine, tmp_path / "broken", sid)
    _as_format_2(store)
    root_doc = os.path.join(store, "zarr.json")
    with open(root_doc, "rb") as f:
        good = f.read()
    with open(root_doc, "wb") as f:
        f.write(good[:len(good) // 2])
    with pytest.raises(DamagedStoreError, match=r"\.zarr/zarr.json is damaged.*JSONDecodeError"
                       ) as caught:
        npd.open_cache(copy).get_session_data(sid)
    assert "convert" in str(caught.value)
    with open(root_doc, "wb") as f:
        f.write(good)
    doc = os.path.join(store, "lfp", keys["pid"], "data", "zarr.json")
    with open(doc) as f:
        meta = json.load(f)
    meta["data_type"] = "int17"
    with open(doc, "w") as f:
        json.dump(meta, f)
    with pytest.raises(DamagedStoreError, match=f"{keys['pid']}/data/zarr.json is damaged.*"
                       "not valid array metadata"):
        npd.open_cache(copy).get_session_data(sid).get_lfp(pid).compute()
