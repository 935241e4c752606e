"""``convert``: resumable, verified, parallel; the cache it writes opens like the original."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import dask
import numpy as np
import pytest
import zarr

import neuropixels_dask as npd
from neuropixels_dask import convert as cv
from neuropixels_dask import zarrstore as zs
from neuropixels_dask.errors import CacheNotFoundError, InvalidFileError
from neuropixels_dask.readers import zarr as zr

SMALL = zs.Layout(lfp_chunk=1250, lfp_chunks_per_shard=16, spike_chunk=4096)


pytestmark = pytest.mark.usefixtures("close_handles_after_module")


@pytest.fixture(scope="module")
def sid(tiny_cache_dir) -> int:
    return int(npd.open_cache(tiny_cache_dir).get_session_table().index[0])


def _store(dst: str, sid: int) -> str:
    return zs.store_url(os.path.join(dst, f"session_{sid}"), sid)


def assert_same_data(src: str, dst: str, sid: int) -> None:
    """Every LFP sample, timestamp and spike time of ``sid`` is bit-identical in both caches."""
    a = npd.open_cache(src).get_session_data(sid, filter_by_validity=False,
                                             amplitude_cutoff_maximum=None,
                                             presence_ratio_minimum=None,
                                             isi_violations_maximum=None)
    b = npd.open_cache(dst).get_session_data(sid, filter_by_validity=False,
                                             amplitude_cutoff_maximum=None,
                                             presence_ratio_minimum=None,
                                             isi_violations_maximum=None)
    assert type(b.reader).__name__ == "ZarrSessionReader"
    for uid in a.spike_times:
        assert a.spike_times[uid].tobytes() == b.spike_times[uid].tobytes()
    for pid in a.probes.index[a.probes["has_lfp_data"]]:
        try:
            la = a.get_lfp(pid, exact_timestamps=True)
        except npd.NoLFPError:
            continue
        lb = b.get_lfp(pid, exact_timestamps=True)
        assert la.values.tobytes() == lb.values.tobytes()
        assert la.time.values.tobytes() == lb.time.values.tobytes()


def test_int16_encoding_is_exact_or_refused():
    q = zs.LFP_VOLTS_PER_BIT
    k = np.arange(-32768, 32768, dtype=np.int64)
    volts = (k * q).astype(np.float32).reshape(-1, 16)  # every int16 value, Allen's way
    counts = zs.encode_lfp_int16(volts, q)
    assert counts is not None and counts.dtype == np.int16
    assert zs.decode_lfp(counts, q).tobytes() == volts.tobytes()
    for bad in (np.float32(-0.0), np.float32(0.5 * q), np.float32(np.nan),
                np.float32(40000 * q)):
        x = volts.copy()
        x[3, 2] = bad
        assert zs.encode_lfp_int16(x, q) is None, bad


def test_interrupted_conversion_resumes(tiny_cache_dir, tmp_path, sid, monkeypatch):
    dst = str(tmp_path / "zarr")
    calls = {"n": 0}
    real = cv._write_lfp_block

    def crash_on_fifth(job, values, timestamps):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        real(job, values, timestamps)

    monkeypatch.setattr(cv, "_write_lfp_block", crash_on_fifth)
    with dask.config.set(scheduler="synchronous"), \
            pytest.raises(RuntimeError, match="simulated crash"):
        cv.convert(tiny_cache_dir, dst, [sid], layout=SMALL, progress=False)
    # the half store: readable as a cache, refused as a session, with the way out in the message
    cache = npd.open_cache(dst)
    assert cache.format == "zarr"
    with pytest.raises(InvalidFileError, match="rerun|Rerun"):
        cache.get_session_data(sid)
    progress = os.path.join(_store(dst, sid), zs.PROGRESS_DIR)
    assert os.path.exists(os.path.join(progress, "tables"))
    done = [f for d, _, fs in os.walk(progress) for f in fs if d != progress]
    lfp_done = [f for d, _, fs in os.walk(os.path.join(progress, "lfp")) for f in fs]
    assert len(lfp_done) == 4  # the blocks written before the crash, each with its marker

    monkeypatch.setattr(cv, "_write_lfp_block", real)
    (r,) = cv.convert(tiny_cache_dir, dst, [sid], layout=SMALL, progress=False)
    assert r.status == "converted"
    assert r.blocks_skipped == len(done)  # everything finished before the crash is skipped
    n_lfp = sum(-(-npd.open_cache(tiny_cache_dir).get_session_data(sid).lfp_source(p).shape[0]
                  // SMALL.lfp_shard) for p in r.lfp_encodings)
    n_spike = -(-int(zr.ZarrSessionReader(os.path.join(dst, f"session_{sid}"),
                                          sid).spike_index()[-1]) // SMALL.spike_chunk)
    assert r.blocks_written + r.blocks_skipped == n_lfp + n_spike
    assert not os.path.exists(os.path.join(_store(dst, sid), zs.PROGRESS_DIR))
    assert_same_data(tiny_cache_dir, dst, sid)
    (again,) = cv.convert(tiny_cache_dir, dst, [sid], progress=False)
    assert again.status == "already complete" and again.blocks_written == 0


def test_killed_cli_run_resumes(tiny_cache_dir, tmp_path, sid):
    """SIGKILL (no cleanup code runs) in the middle of ``neuropixels-dask convert``; the same
    command again finishes the job and reports the blocks it skipped."""
    dst = str(tmp_path / "zarr")
    slow = textwrap.dedent(f"""
        import sys, time
        from neuropixels_dask import convert as cv
        real = cv._write_lfp_block
        def slow(*args):
            real(*args)
            time.sleep(0.5)
        cv._write_lfp_block = slow
        from neuropixels_dask.cli import main
        sys.exit(main(["convert", {tiny_cache_dir!r}, {dst!r}, "--sessions", "{sid}",
                       "--no-progress"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", slow], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    lfp_markers = os.path.join(_store(dst, sid), zs.PROGRESS_DIR, "lfp")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = [f for _, _, fs in os.walk(lfp_markers) for f in fs]
            if found:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert found, "no block finished within 60 s"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with pytest.raises(InvalidFileError):
        npd.open_cache(dst).get_session_data(sid)
    out = subprocess.run([sys.executable, "-m", "neuropixels_dask.cli", "convert",
                          tiny_cache_dir, dst, "--sessions", str(sid), "--verify"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"session {sid}: converted" in out.stdout
    skipped = int(out.stdout.split(" skipped")[0].rsplit(" ", 1)[1])
    assert skipped >= 1, out.stdout
    assert "every value verified" in out.stdout
    assert "block" in out.stderr  # the progress bar
    assert_same_data(tiny_cache_dir, dst, sid)


def test_verify_detects_a_corrupted_copy(tiny_cache_dir, tmp_path, sid):
    dst = str(tmp_path / "zarr")
    (r,) = cv.convert(tiny_cache_dir, dst, [sid], verify=True, progress=False)
    assert r.verified
    (again,) = cv.convert(tiny_cache_dir, dst, [sid], verify=True, progress=False)
    assert again.status == "verified"
    pid = next(iter(r.lfp_encodings))
    arr = zarr.open_array(_store(dst, sid), path=f"lfp/probe_{pid}/data", mode="r+")
    arr[100:101] = arr[100:101] + (1 if arr.dtype.kind == "i" else np.float32(1e-6))
    with pytest.raises(cv.ConversionError, match="differs.*data"):
        cv.convert(tiny_cache_dir, dst, [sid], verify=True, progress=False)


def test_cache_level_files(tiny_cache_dir, tmp_path, sid):
    dst = str(tmp_path / "zarr")
    cv.convert(tiny_cache_dir, dst, [sid], progress=False)
    for name in cv.CACHE_FILES + ("synthetic_ground_truth.json",):
        with open(os.path.join(tiny_cache_dir, name), "rb") as a, \
                open(os.path.join(dst, name), "rb") as b:
            assert a.read() == b.read(), name
    with open(os.path.join(dst, "manifest.json")) as f:
        entries = json.load(f)["manifest"]
    assert [e for e in entries if e.get("key") == "session_zarr"] == [zs.MANIFEST_ENTRY]
    cache = npd.open_cache(dst)
    assert cache.format == "zarr"
    others = [int(s) for s in cache.get_session_table().index if int(s) != sid]
    with pytest.raises(CacheNotFoundError, match=f"--sessions {others[0]}"):
        cache.get_session_data(others[0])
    with pytest.raises(cv.ConversionError, match="already a Zarr copy"):
        cv.convert(dst, str(tmp_path / "again"), progress=False)
    with pytest.raises(cv.ConversionError, match="not in"):
        cv.convert(tiny_cache_dir, dst, [123], progress=False)


def test_convert_runs_on_a_distributed_cluster(tiny_cache_dir, tmp_path, sid, local_client):
    """The tasks are plain picklable jobs: they run in other processes and write there."""
    dst = str(tmp_path / "zarr")
    (r,) = cv.convert(tiny_cache_dir, dst, [sid], verify=True, progress=False,
                      client=local_client)
    assert r.verified and r.blocks_written >= 4
    assert_same_data(tiny_cache_dir, dst, sid)


def test_cli_registers_convert():
    from neuropixels_dask.cli import build_parser

    args = build_parser().parse_args(["convert", "a", "b", "--sessions", "1", "2", "--verify"])
    assert args.sessions == [1, 2] and args.verify and args.func is cv._cmd_convert


def _tree_bytes(root: str) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(root) for f in fs}


def test_the_source_is_never_a_destination(scratch_cache, tmp_path, s3_cache, sid):
    """The destination may not be the source, lie inside it or hold it, however spelled;
    nothing is written, the source's bytes stay the same (issue 26, item 1)."""
    before = _tree_bytes(scratch_cache)
    link = str(tmp_path / "link")
    os.symlink(scratch_cache, link)
    for dst, how in [(scratch_cache, "is the source"), (scratch_cache + "/", "is the source"),
                     (f"file://{scratch_cache}", "is the source"),
                     (os.path.join(scratch_cache, "session_1", "..", "."), "is the source"),
                     (link, "is the source"), (os.path.join(scratch_cache, "zarr"), "inside"),
                     (os.path.dirname(scratch_cache), "contains")]:
        with pytest.raises(cv.ConversionError, match=how):
            cv.convert(scratch_cache, dst, [sid], progress=False)
    assert _tree_bytes(scratch_cache) == before
    assert sorted(os.listdir(tmp_path)) == ["cache", "link"]  # nothing made beside it either
    url, so = s3_cache
    fs = zs.filesystem(url, so)[0]
    n = len(fs.find(url.split("://", 1)[1]))
    for dst in (url, url + "//", url + "/copy", url.rsplit("/", 1)[0]):
        with pytest.raises(cv.ConversionError, match="never writes into its source"):
            cv.convert(url, dst, [sid], storage_options=so, dst_storage_options=so,
                       progress=False)
    fs.invalidate_cache()
    assert len(fs.find(url.split("://", 1)[1])) == n


def test_blocks_of_exact_zeros_and_nan_convert(scratch_cache, tmp_path, sid):
    """A 64 s stretch of exact zeros (or NaN, or never written in the HDF5 file) is legitimate
    data: every block is written,
    `--verify` passes, a rerun finds nothing missing, and the source is left as it was
    (issue 26, items 1 and 2)."""
    cache = npd.open_cache(scratch_cache)
    probes = cache.get_probes()
    pids = [int(p) for p in probes.index[(probes["ecephys_session_id"] == sid)
                                         & probes["has_lfp_data"]]][:2]
    shard = SMALL.lfp_shard
    for k, pid in enumerate(pids):
        path = os.path.join(scratch_cache, f"session_{sid}", f"probe_{pid}_lfp.nwb")
        import h5py

        with h5py.File(path, "r+") as f:
            name = f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data/data"
            ds = f[name]
            if k == 0:  # a stretch never written (HDF5 reads its fill value, 0 here)
                values, attrs = ds[()], dict(ds.attrs)
                kw = {"chunks": (shard // 8, ds.shape[1]), "compression": ds.compression,
                      "compression_opts": ds.compression_opts, "shuffle": ds.shuffle}
                del f[name]
                ds = f.create_dataset(name, shape=values.shape, dtype=values.dtype, **kw)
                ds.attrs.update(attrs)
                ds[:shard] = values[:shard] + np.float32(0.0)
                ds[2 * shard:] = values[2 * shard:] + np.float32(0.0)
                grid = np.prod([-(-n // c) for n, c in zip(ds.shape, ds.chunks, strict=True)])
                assert ds.id.get_num_chunks() < grid  # some chunks were never written
            else:
                ds[shard:2 * shard] = 0  # +0.0: the int16 fill value, a whole shard of it
                ds[2 * shard:3 * shard] = np.nan  # float32 from here
    before = _tree_bytes(scratch_cache)
    dst = str(tmp_path / "zarr")
    with dask.config.set(scheduler="threads"):
        (r,) = cv.convert(scratch_cache, dst, [sid], layout=SMALL, verify=True, progress=False)
    assert r.verified and r.status == "converted", r
    assert r.lfp_encodings[pids[0]] == zs.ENCODING_INT16
    assert r.lfp_encodings[pids[1]] == zs.ENCODING_FLOAT32
    from neuropixels_dask import verify

    assert verify.check_store(_store(dst, sid), deep=True).ok
    for pid in pids:
        assert os.path.exists(os.path.join(_store(dst, sid), f"lfp/probe_{pid}/data/c/1/0"))
    b = npd.open_cache(dst).get_session_data(sid)
    a = npd.open_cache(scratch_cache).get_session_data(sid)
    for pid in pids:
        assert b.get_lfp(pid).values.tobytes() == a.get_lfp(pid).values.tobytes()
    assert not np.any(b.get_lfp(pids[0]).values[shard:2 * shard])
    (again,) = cv.convert(scratch_cache, dst, [sid], layout=SMALL, progress=False)
    assert again.status == "already complete", again
    (again,) = cv.convert(scratch_cache, dst, [sid], layout=SMALL, verify=True, progress=False)
    assert again.status == "verified", again
    assert _tree_bytes(scratch_cache) == before


def test_a_probe_lfp_missing_from_the_source_is_said_and_recorded(scratch_cache, tmp_path,
                                                                  sid):
    """An LFP file that the source should have (``has_lfp_data``) but lacks: the conversion
    says so, the store's manifest records it, and the reader names it (issue 26, item 4)."""
    from neuropixels_dask.errors import LFPMissingAtConversionError

    probes = npd.open_cache(scratch_cache).get_session_data(sid).probes
    pid = int(probes.index[probes["has_lfp_data"]][0])
    os.remove(os.path.join(scratch_cache, f"session_{sid}", f"probe_{pid}_lfp.nwb"))
    dst = str(tmp_path / "zarr")
    (r,) = cv.convert(scratch_cache, dst, [sid], layout=SMALL, progress=False)
    assert list(r.lfp_missing) == [pid] and pid not in r.lfp_encodings
    assert f"WARNING: probe {pid}'s LFP was missing from the source" in str(r)
    with open(os.path.join(_store(dst, sid), zs.STORE_MANIFEST)) as f:
        manifest = zs.parse_manifest(f.read().encode(), dst)
    assert f"probe_{pid}_lfp.nwb" in manifest["lfp_missing"][str(pid)]
    session = npd.open_cache(dst).get_session_data(sid)
    with pytest.raises(LFPMissingAtConversionError,
                       match="this probe's LFP was missing from the source at conversion"):
        session.get_lfp(pid)
    with pytest.raises(npd.NoLFPError):  # what existing code catches still catches it
        session.get_lfp(pid)
    (again,) = cv.convert(scratch_cache, dst, [sid], layout=SMALL, progress=False)
    assert again.status == "already complete" and list(again.lfp_missing) == [pid]
