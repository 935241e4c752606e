"""neuropixels_dask.inflate: every backend inflates real HDF5 deflate chunks to what h5py reads,
in order, on any number of threads; bad or cut-off chunks raise; the backend and the pool size
come from config once, at import."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import zlib

import h5py
import numpy as np
import pytest

from neuropixels_dask import inflate

BACKENDS = inflate.available()


def _blobs(n=40, seed=0) -> tuple[list[bytes], list[bytes]]:
    """gzip-9 zlib streams of LFP-like float32 columns of different lengths."""
    rng = np.random.default_rng(seed)
    raw = [np.cumsum(rng.standard_normal(int(rng.integers(1, 20000)))).astype(np.float32)
           .tobytes() for _ in range(n)]
    return [zlib.compress(r, 9) for r in raw], raw


def test_stdlib_zlib_is_always_there_and_the_default_is_the_first_available():
    assert BACKENDS[-1] == "zlib" and set(BACKENDS) <= set(inflate.PREFERENCE)
    if not os.environ.get("NEUROPIXELS_DASK__INFLATE__BACKEND"):
        fastest_here = BACKENDS[0]
        assert fastest_here == inflate.BACKEND


@pytest.mark.parametrize("backend", BACKENDS)
def test_hdf5_deflate_chunks_inflate_to_what_h5py_reads(backend, tmp_path):
    """The published layout in miniature: one-column chunks, gzip 9, read raw from the file."""
    rng = np.random.default_rng(1)
    data = np.cumsum(rng.standard_normal((5000, 3)), axis=0).astype(np.float32)
    with h5py.File(tmp_path / "lfp.h5", "w") as f:
        f.create_dataset("data", data=data, chunks=(1200, 1), compression="gzip",
                         compression_opts=9)
    with h5py.File(tmp_path / "lfp.h5", "r") as f:
        ds = f["data"]
        coords = [(r, c) for r in range(0, 5000, 1200) for c in range(3)]
        blobs = []
        for coord in coords:
            mask, blob = ds.id.read_direct_chunk(coord)
            assert mask == 0
            blobs.append(bytes(blob))
        want = ds[...]
    chunk_bytes = 1200 * 4
    for threads in (1, 2, 4):
        raws = inflate.inflate_many(blobs, chunk_bytes, backend=backend, threads=threads)
        for (r, c), raw in zip(coords, raws, strict=True):
            got = np.frombuffer(raw, np.float32)  # edge chunks are stored whole, padded
            assert got.size == 1200
            np.testing.assert_array_equal(got[:min(1200, 5000 - r)], want[r:r + 1200, c])


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_keep_their_order_and_size_hints_are_only_hints(backend):
    blobs, raw = _blobs()
    for threads in (1, 2, 4):
        assert inflate.inflate_many(blobs, backend=backend, threads=threads) == raw
    for hint in (1, 5000, 10**6):  # too small, about right, far too big: same bytes
        assert inflate.inflate_many(blobs, hint, backend=backend, threads=2) == raw
    assert inflate.inflate(blobs[3], backend=backend) == raw[3]
    assert inflate.inflate_many([], backend=backend) == []
    assert inflate.submit(blobs[5], backend=backend).result() == raw[5]


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_or_cut_off_chunks_raise(backend):
    """A chunk cut short by a bad transfer must fail, never come back as fewer samples."""
    blobs, _ = _blobs(n=3)
    for bad in (b"not a zlib stream", blobs[1][: len(blobs[1]) // 2], blobs[2][:-3]):
        with pytest.raises(inflate.InflateError, match="not a valid zlib stream"):
            inflate.inflate(bad, backend=backend)
        with pytest.raises(zlib.error):  # what callers of zlib.decompress already catch
            inflate.inflate_many([blobs[0], bad], backend=backend, threads=2)


def test_unknown_or_missing_backend_is_an_error(monkeypatch):
    with pytest.raises(ValueError, match="valid: 'auto', 'isal', 'zlib-ng', 'zlib'"):
        inflate.inflate(b"", backend="gzip")
    monkeypatch.setitem(inflate.PREFERENCE, "absent", ("no_such_inflate_module", "decompress"))
    with pytest.raises(ImportError, match="not installed"):
        inflate.inflate(b"", backend="absent")
    assert "absent" not in inflate.available()


def _in_child(blobs, queue):
    queue.put(inflate.inflate_many(blobs, threads=2))


def test_pool_is_made_again_in_a_forked_child():
    """A forked worker has none of its parent's pool threads: work handed to the inherited pool
    would wait forever."""
    blobs, raw = _blobs(n=8)
    assert inflate.inflate_many(blobs, threads=2) == raw  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_in_child, args=(blobs, queue))
    child.start()
    try:
        assert queue.get(timeout=60) == raw
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


def _import_with(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = ("from neuropixels_dask import inflate; "
            "print(inflate.BACKEND, inflate.THREADS)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_backend_and_threads_come_from_config_at_import():
    done = _import_with({"NEUROPIXELS_DASK__INFLATE__BACKEND": "zlib",
                         "NEUROPIXELS_DASK__INFLATE__THREADS": "3"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["zlib", "3"]
    bad = _import_with({"NEUROPIXELS_DASK__INFLATE__BACKEND": "brotli"})
    assert bad.returncode != 0 and "unknown inflate backend 'brotli'" in bad.stderr
