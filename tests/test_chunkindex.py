"""The chunk-index reader (readers/chunkindex.py) against h5py's own lookup: every chunk of real
files (the synthetic LFP, files with v1 and v2 object headers, header continuations, unwritten
chunks, a multi-level tree), the fallback where it does not apply, and the request count that is
its reason to exist."""

from __future__ import annotations

import glob
import os
import time

import h5py
import numpy as np
import pytest

from neuropixels_dask import caching, storage
from neuropixels_dask.readers import chunkindex


def _fetcher(path: str, calls: list[int]):
    def fetch(starts: list[int], stops: list[int]) -> list[bytes]:
        calls.append(len(starts))
        return storage.fetch_ranges(path, None, starts, stops)

    return fetch


def _all_coords(ds: h5py.Dataset) -> list[tuple[int, ...]]:
    grid = [range(0, n, c) for n, c in zip(ds.shape, ds.chunks, strict=True)]
    return [tuple(int(v) for v in c) for c in np.stack(np.meshgrid(*grid, indexing="ij"),
                                                       -1).reshape(-1, ds.ndim)]


def _assert_same_as_h5py(ds: h5py.Dataset, found: dict) -> int:
    written = 0
    for coord, got in found.items():
        want = ds.id.get_chunk_info_by_coord(coord)
        if want.byte_offset is None:
            assert got is None, coord
            continue
        written += 1
        assert (got.offset, got.size, got.filter_mask) == (
            want.byte_offset, want.size, want.filter_mask), coord
    return written


def test_every_chunk_of_the_synthetic_lfp(tiny_cache_dir):
    path = sorted(glob.glob(os.path.join(tiny_cache_dir, "session_*", "probe_*_lfp.nwb")))[0]
    with h5py.File(path, "r") as f:
        (name,) = [n for n in f["acquisition"]]
        ds = f[f"acquisition/{name}/{name}_data/data"]
        calls: list[int] = []
        index = chunkindex.chunk_index(ds, _fetcher(path, calls))
        assert index is not None
        found = index.lookup(_all_coords(ds))
        assert _assert_same_as_h5py(ds, found) == ds.id.get_num_chunks()


@pytest.mark.parametrize("libver", ["earliest", "v108"])
def test_multi_level_tree_unwritten_chunks_and_continued_headers(tmp_path, libver):
    """Thousands of chunks (a tree of several levels) and chunks never written."""
    path = str(tmp_path / f"{libver}.h5")
    rng = np.random.default_rng(0)
    with h5py.File(path, "w", libver=(libver, "v108")) as f:
        ds = f.create_dataset("d", shape=(4_000, 70), chunks=(10, 1), dtype="f4")
        ds[:3_000, ::2] = rng.standard_normal((3_000, 35)).astype("f4")
    with h5py.File(path, "r") as f:
        ds = f["d"]
        calls: list[int] = []
        index = chunkindex.chunk_index(ds, _fetcher(path, calls))
        assert index is not None, "a layout-v3 dataset must be readable"
        found = index.lookup(_all_coords(ds))
        assert _assert_same_as_h5py(ds, found) == ds.id.get_num_chunks() > 10_000
        # one window: one batch per tree level, however many chunks it spans
        depth_before = len(calls)
        fresh = chunkindex.ChunkIndex(index.root, 2, _fetcher(path, calls))
        fresh.lookup([(1_230, c) for c in range(70)])
        assert len(calls) - depth_before <= 4


def test_threads_looking_up_at_once_fetch_each_node_once(tmp_path):
    """Tasks of one worker share the index: sixteen threads looking up the same window of a
    fresh index, all at once, fetch each tree node once (the others wait for it), so how many
    reads a window costs does not depend on thread timing."""
    import threading

    path = str(tmp_path / "d.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=np.ones((4_000, 70), "f4"), chunks=(10, 1))
    with h5py.File(path, "r") as f:
        root = chunkindex.chunk_index(f["d"], _fetcher(path, [])).root
        fetched: list[int] = []
        gate = threading.Barrier(16)

        def slow_fetch(starts: list[int], stops: list[int]) -> list[bytes]:
            fetched.extend(starts)
            time.sleep(0.05)  # long enough for every thread to ask meanwhile
            return storage.fetch_ranges(path, None, starts, stops)

        index = chunkindex.ChunkIndex(root, 2, slow_fetch)
        want = [(1_230, c) for c in range(70)]
        results = []

        def look() -> None:
            gate.wait()
            results.append(index.lookup(want))

        threads = [threading.Thread(target=look) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(results) == 16 and all(r == results[0] for r in results)
        assert _assert_same_as_h5py(f["d"], results[0]) == 70
        assert len(fetched) == len(set(fetched)) == len(index._nodes) >= 3, fetched


@pytest.mark.parametrize("libver,n_attrs,size", [("earliest", 40, 200), ("v108", 8, 2000)])
def test_object_headers_with_continuation_blocks(tmp_path, libver, n_attrs, size):
    """Attributes added after the data push the header into continuation blocks (v1 headers
    and v2 "OHDR"/"OCHK"): every message is still found, the layout among them."""
    path = str(tmp_path / "attrs.h5")
    with h5py.File(path, "w", libver=(libver, "v108")) as f:
        ds = f.create_dataset("d", shape=(100, 4), chunks=(10, 1), dtype="f4")
        ds[:] = 1
        for i in range(n_attrs):
            ds.attrs[f"note_{i}"] = "x" * size
    with h5py.File(path, "r") as f:
        addr = h5py.h5o.get_info(f["d"].id).addr
    calls: list[int] = []
    fetch = _fetcher(path, calls)
    (head,) = fetch([addr], [addr + chunkindex.HEADER_FETCH])
    types = [t for t, _ in chunkindex._messages(head, addr, lambda a, b: fetch([a], [b])[0])]
    assert len(calls) >= 2, calls  # the header, then at least one continuation block
    assert types.count(0x0C) == n_attrs and types.count(0x08) == 1, types


def test_layouts_it_does_not_read_fall_back_to_h5py(tmp_path, tiny_cache_dir):
    """A v4 layout (libver latest: another chunk index) gives None; the reader then asks h5py
    and the values are the same."""
    path = str(tmp_path / "latest.h5")
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("d", data=np.arange(20_000, dtype="f4").reshape(-1, 4),
                         chunks=(100, 1), compression="gzip", maxshape=(None, 4))
        f.create_dataset("contiguous", data=np.arange(10))
    with h5py.File(path, "r") as f:
        assert chunkindex.chunk_index(f["d"], _fetcher(path, [])) is None
        assert chunkindex.chunk_index(f["contiguous"], _fetcher(path, [])) is None


def test_a_cold_window_costs_a_few_metadata_requests(s3_server, s3_cache, tiny_cache_dir):
    """Through the counting proxy: a 1 s all-channel window of a file never read before costs
    one or two coalesced GETs for its row of chunks plus a handful of index requests (header,
    one batch per tree level), not one per B-tree node; and the touched chunks' bytes (within
    the few B-tree nodes written between them) once the index is known."""
    import dask

    import neuropixels_dask as npd
    from neuropixels_dask.readers import nwb

    url, so = s3_cache
    cache = npd.open_cache(url, **so)
    sid = int(cache.get_session_table().index[0])
    session = cache.get_session_data(sid)
    pid = int(session.probes.index[0])
    lfp = session.get_lfp(pid)
    t0 = float(lfp.time[46989 + 100])
    window = lfp.sel(time=slice(t0, t0 + 1.0))
    path = os.path.join(tiny_cache_dir, f"session_{sid}", f"probe_{pid}_lfp.nwb")
    with h5py.File(path) as f:
        ds = f[f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data/data"]
        touched = sum(ds.id.get_chunk_info_by_coord((ds.chunks[0], c)).size
                      for c in range(ds.shape[1]))
    with dask.config.set(scheduler="sync"):
        caching.clear_all()  # forgets the chunk indexes too
        window.values  # noqa: B018 - opens the file again, cold index
        caching.clear_all()
        assert len(nwb.indexes) == 0
        s3_server.reset_stats()
        cold = window.values
        first = s3_server.stats()
        s3_server.reset_stats()
        warm = window.values
        second = s3_server.stats()
    assert np.array_equal(cold, warm)
    # h5py's own lookup walked one node per request here (dozens on long recordings); the
    # row's adjacent chunks are one coalesced GET (storage/ranges.py), not one per channel
    assert first.get_requests <= 2 + 12, first
    assert second.get_requests <= 2, second
    assert touched <= second.bytes <= 1.05 * touched, (second, touched)


class _CountingFile:
    """A local file object that counts h5py's reads (h5py reads through it like a remote one)."""

    def __init__(self, path: str) -> None:
        self.f, self.reads = open(path, "rb"), 0  # noqa: SIM115 - closed by the test

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return self.f.read(n)

    def readinto(self, buf) -> int:
        self.reads += 1
        return self.f.readinto(buf)

    def seek(self, *args) -> int:
        return self.f.seek(*args)

    def tell(self) -> int:
        return self.f.tell()


def test_finding_the_index_reads_no_node_through_h5py(tmp_path):
    """The dataset's header address comes from its link: h5py's ``h5o.get_info`` would walk the
    whole chunk B-tree through the (remote) file first, one node per read."""
    path = str(tmp_path / "tree.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=np.arange(40_000, dtype="f4").reshape(-1, 8),
                         chunks=(20, 1), compression="gzip")  # 2,000 chunks, 3 tree levels
    counting = _CountingFile(path)
    try:
        with h5py.File(counting, "r") as f:
            ds = f["d"]
            before = counting.reads
            calls: list[int] = []
            index = chunkindex.chunk_index(ds, _fetcher(path, calls))
            assert counting.reads == before and calls == [1]  # the header, nothing else
            h5py.h5o.get_info(ds.id)  # the call avoided: it reads the tree
            assert counting.reads - before > 20
            assert index is not None
            assert _assert_same_as_h5py(ds, index.lookup(_all_coords(ds))) == 2000
    finally:
        counting.f.close()



def test_the_index_starts_from_blocks_the_open_file_already_holds(s3_server, s3_cache):
    """Over S3: the dataset's object header (and continuation) and the tree's root are read
    through the open file's metadata block cache, where h5py put them when it opened the
    dataset: looking up a window's chunks in a file just opened costs no header or root request
    (only the tree's lower nodes, if it has any, are fetched)."""
    import neuropixels_dask as npd
    from neuropixels_dask.readers import nwb

    url, so = s3_cache
    cache = npd.open_cache(url, **so)
    session = cache.get_session_data(int(cache.get_session_table().index[0]))
    src = session.lfp_source(int(session.probes.index[0]))
    coords = [(src.chunks[0], c) for c in range(src.shape[1])]
    with nwb.open_h5(src.url, src.storage_options) as f:
        ds = f[src.data_path]
        gets = []
        for read in (None, nwb._metadata_reader(f)):
            nwb.indexes.clear()
            s3_server.reset_stats()
            found = nwb._chunk_infos(src.url, src.storage_options, src.data_path, ds, coords,
                                     read)
            gets.append(s3_server.stats().get_requests)
            assert _assert_same_as_h5py(ds, found) == len(coords)
        from neuropixels_dask import storage

        key = (src.url, storage.resolve(src.url, src.storage_options).key, src.data_path)
        index = nwb.indexes.get(key, lambda: None)
        lower = len(index._nodes) - 1  # the nodes below the root (one GET for all of them)
        # header (and continuation), root, then one batch per lower level
        assert 2 + min(lower, 1) <= gets[0] <= 10, gets
        assert gets[1] == min(lower, 1), gets  # header and root from h5py's blocks


@pytest.mark.parametrize("libver", ["earliest", "v108"])
def test_checked_keys_accept_every_tree_h5py_writes(tmp_path, libver):
    """The checks that make a damaged index an error (keys on the grid, increasing, children
    matching their parents' keys, sizes fitting) hold for trees written in random chunk order,
    with gaps, unaligned edges and a dataset never written at all."""
    path = str(tmp_path / "random.h5")
    rng = np.random.default_rng(3)
    shape, chunks = (997, 13), (7, 3)
    with h5py.File(path, "w", libver=(libver, "v108")) as f:
        ds = f.create_dataset("d", shape=shape, chunks=chunks, dtype="f4")
        f.create_dataset("never", shape=shape, chunks=chunks, dtype="f4")
        origins = _all_coords(ds)
        rng.shuffle(origins)
        for o in origins[: len(origins) * 4 // 5]:
            sl = tuple(slice(a, a + c) for a, c in zip(o, chunks, strict=True))
            ds[sl] = rng.standard_normal(ds[sl].shape)
    with h5py.File(path, "r") as f:
        for name in ("d", "never"):
            ds = f[name]
            index = chunkindex.chunk_index(ds, _fetcher(path, []))
            assert index is not None and index.geometry is not None
            assert _assert_same_as_h5py(ds, index.lookup(_all_coords(ds))) \
                == ds.id.get_num_chunks()
