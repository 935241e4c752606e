"""The Zarr side of the damage matrix (issues 23 and 26): every kind of object of a converted
store, each damaged by a flipped byte or a truncation, read through the session API from a local
path and over S3, and by zarr-python from the same bytes.

The rule, for every case: the session API returns **the values the store was written with, or
a named error** (``NeuropixelsDaskError``) - never different values, even where zarr-python
itself reads the damaged bytes without a word (an edited ``zarr.json``, a unit's slice of a
spike chunk). Hypothesis picks the byte and the bit pattern (a few examples per object: the
whole module runs in about a minute).
"""

from __future__ import annotations

import os

import dask
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from reliability_support import NO_FILTERS, SMALL, fresh_cache

from neuropixels_dask import convert as cv
from neuropixels_dask import verify
from neuropixels_dask import zarrstore as zs
from neuropixels_dask.errors import NeuropixelsDaskError
from neuropixels_dask.readers import read_spike_ranges

pytestmark = pytest.mark.usefixtures("close_handles_after_module")


@pytest.fixture(scope="module")
def store(tiny_cache_dir, ids, tmp_path_factory) -> dict:
    """One session converted (small shards and spike chunks), its truth read once."""
    sid = ids[0]
    dst = str(tmp_path_factory.mktemp("matrix") / "zarr")
    with dask.config.set(scheduler="threads"):
        cv.convert(tiny_cache_dir, dst, [sid], layout=SMALL, progress=False)
    path = zs.store_url(os.path.join(dst, f"session_{sid}"), sid)
    pid = next(iter(zarr.open_group(path, mode="r")["lfp"].group_keys()))
    with dask.config.set(scheduler="sync"):
        truth = ours(dst, {}, sid, int(pid.split("_")[1]))
    return {"cache": dst, "path": path, "sid": sid, "pid": pid, "truth": truth,
            "zarr": zarr_python(path, pid)}


def ours(cache: str, so: dict, sid: int, pid: int) -> dict[str, bytes]:
    """Everything of the session the damaged objects could touch, through the session API."""
    s = fresh_cache(cache, so).get_session_data(sid, **NO_FILTERS)
    lfp = s.get_lfp(pid, exact_timestamps=True)
    st = s.spike_times  # every unit in one concurrent batch, as the spike tasks read them
    spikes = read_spike_ranges(st._src, [st._ranges[int(u)] for u in s.units.index])
    return {"lfp": lfp.values.tobytes(), "time": lfp.time.values.tobytes(),
            "spikes": b"".join(x.tobytes() for x in spikes),
            "units": s.units.to_csv().encode()}


def zarr_python(path: str, pid: str) -> dict[str, bytes]:
    """The same values read by plain zarr-python (no package code)."""
    root = zarr.open_group(path, mode="r", use_consolidated=False)
    data = root[f"lfp/{pid}/data"]
    scale = data.attrs.get("scale_factor")
    values = data[...]
    lfp = (values.astype(np.float64) * scale).astype(np.float32) if scale else values
    return {"lfp": lfp.tobytes(), "time": root[f"lfp/{pid}/timestamps"][...].tobytes(),
            "spikes": root[zs.SPIKE_TIMES_PATH][...].tobytes(),
            "snr": root["units/snr"][...].tobytes()}


#: one object of each kind: ``(key, region)``; a shard's "chunks" or its "index" (at its end),
#: or the whole object
TARGETS = {
    "lfp chunk": ("lfp/{pid}/data/c/1/0", "chunks"),
    "shard index": ("lfp/{pid}/data/c/1/0", "index"),
    "timestamps shard": ("lfp/{pid}/timestamps/c/2", "chunks"),
    "spike chunk": ("units/spike_times/c/1", "data"),
    "table chunk": ("units/snr/c/0", "data"),
    "spike checksums chunk": (f"{zs.SPIKE_CRC_PATH}/c/0", "data"),
    "root zarr.json": ("zarr.json", "data"),
    "group zarr.json": ("units/zarr.json", "data"),
    "LFP data zarr.json": ("lfp/{pid}/data/zarr.json", "data"),
    "timestamps zarr.json": ("lfp/{pid}/timestamps/zarr.json", "data"),
    "spike times zarr.json": ("units/spike_times/zarr.json", "data"),
    "spike checksums zarr.json": (f"{zs.SPIKE_CRC_PATH}/zarr.json", "data"),
    "table column zarr.json": ("units/snr/zarr.json", "data"),
    "manifest": (zs.STORE_MANIFEST, "data"),
}


def damage(data: bytes, how: str, where: float, bits: int, region: str) -> bytes:
    """``data`` with one byte XORed by ``bits`` (``flip``) or cut at ``where`` (``truncate``);
    ``where`` in [0, 1) is the position within the region."""
    lo, hi = 0, len(data)
    index = SMALL.lfp_chunks_per_shard * 16 + zs.CHECKSUM_BYTES
    if region == "index":
        lo = hi - index
    elif region == "chunks":  # the inner chunks of a shard, before its index
        hi -= index
    at = lo + min(hi - lo - 1, int(where * (hi - lo)))
    if how == "flip":
        return data[:at] + bytes([data[at] ^ bits]) + data[at + 1:]
    return data[:at]


def check(store: dict, read_ours, key: str, how: str, url: str, so: dict) -> None:
    """The rule: our values are the truth, or our read is a named error naming the object;
    and ``verify`` (from the store alone) finds the damaged object."""
    try:
        got = read_ours()
    except NeuropixelsDaskError as exc:
        where = key if key != "zarr.json" else f"{os.path.basename(store['path'])}/zarr.json"
        assert where in str(exc) or zs.STORE_MANIFEST in str(exc), (key, how, str(exc))
    else:  # a document the session API does not read (it reads the consolidated copy)
        assert got == store["truth"], f"{key} ({how}): different values without an error"
    (report,) = verify.verify_cache(url, [store["sid"]], storage_options=so, deep=True)
    same = how == "flip" and key == zs.STORE_MANIFEST and report.ok  # JSON whitespace for
    assert key in report.keys or same, (key, how, str(report))  # whitespace: same manifest


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("how", ["flip", "truncate"])
@settings(max_examples=1, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0, 1, exclude_max=True), bits=st.integers(1, 255))
def test_damage_on_a_local_path(store, target, how, where, bits):
    key, region = TARGETS[target]
    key = key.format(pid=store["pid"])
    path = os.path.join(store["path"], *key.split("/"))
    with open(path, "rb") as f:
        good = f.read()
    bad = damage(good, how, where, bits, region)
    with open(path, "wb") as f:
        f.write(bad)
    try:
        foreign: dict | Exception
        try:
            foreign = zarr_python(store["path"], store["pid"])
        except Exception as exc:  # noqa: BLE001 - zarr-python's own verdict, recorded
            foreign = exc
        with dask.config.set(scheduler="sync"):
            check(store, lambda: ours(store["cache"], {}, store["sid"],
                                      int(store["pid"].split("_")[1])), key, how,
                  store["cache"], {})
        if isinstance(foreign, dict) and foreign != store["zarr"]:
            # zarr-python reads different values from these bytes: ours must have refused
            with pytest.raises(NeuropixelsDaskError), dask.config.set(scheduler="sync"):
                ours(store["cache"], {}, store["sid"], int(store["pid"].split("_")[1]))
    finally:
        with open(path, "wb") as f:
            f.write(good)


#: over S3, one object of each kind (the full matrix runs on the local path)
S3_CASES = [(t, "flip") for t in ("lfp chunk", "shard index", "spike chunk", "table chunk",
                                  "root zarr.json", "LFP data zarr.json", "manifest")] + [
    (t, "truncate") for t in ("lfp chunk", "spike chunk", "spike checksums zarr.json")]


@pytest.mark.parametrize(("target", "how"), S3_CASES)
def test_damage_over_s3(store, rel_server, target, how):
    """The same objects on the S3 server, damaged there (one byte each: the middle of the
    region); reads go through s3fs, ranged GETs and the retry layer."""
    prefix = "zarr-matrix"
    if not getattr(test_damage_over_s3, "uploaded", False):
        rel_server.upload(store["cache"], prefix)
        test_damage_over_s3.uploaded = True
    fs = rel_server.filesystem(direct=True, skip_instance_cache=True)
    key, region = TARGETS[target]
    key = key.format(pid=store["pid"])
    sid = store["sid"]
    path = f"{rel_server.bucket}/{prefix}/session_{sid}/session_{sid}.zarr/{key}"
    good = fs.cat_file(path)
    fs.pipe_file(path, damage(good, how, 0.5, 0x10, region))
    try:
        with dask.config.set(scheduler="sync"):
            check(store, lambda: ours(rel_server.url(prefix), rel_server.storage_options(),
                                      sid, int(store["pid"].split("_")[1])), key, how,
                  rel_server.url(prefix), rel_server.storage_options())
    finally:
        fs.pipe_file(path, good)
