"""Remote files for h5py: small aligned blocks for metadata, exact ranges for data.

HDF5 metadata is scattered in small pieces through the file. Reading it through a default fsspec
file (5 MB read-ahead) downloads megabytes for a few kilobytes of headers; an LRU of small blocks
(``remote.metadata_block_size``) keeps opening a 2 GB session file to a few hundred kB, and reads
larger than a block (data) bypass it and fetch exactly their bytes.
"""

from __future__ import annotations

import threading
from typing import Any

from fsspec.caching import BaseCache, caches, register_cache

from .. import config
from ..caching import LRU

#: metadata blocks kept per open file (256 × 64 kB = 16 MB at most)
MAX_BLOCKS = 256


class HDF5BlockCache(BaseCache):
    """LRU of small aligned blocks for metadata; large reads bypass it and fetch exactly.

    h5py asks for a few bytes here and there while it walks object headers and B-trees (cached
    in ``blocksize`` blocks), and for whole chunks when it reads data (fetched exactly, so the
    transfer equals the stored size).
    """

    name = "hdf5blocks"

    def __init__(self, blocksize: int, fetcher, size: int, **kwargs: Any) -> None:
        super().__init__(blocksize, fetcher, size)
        self._blocks: LRU[int, bytes] = LRU(MAX_BLOCKS)
        self._stats_lock = threading.Lock()

    def _block(self, i: int) -> bytes:
        data = self._blocks.get(i)
        if data is not None:
            with self._stats_lock:
                self.hit_count += 1
            return data
        start = i * self.blocksize
        data = self.fetcher(start, min(self.size, start + self.blocksize))
        with self._stats_lock:
            self.miss_count += 1
            self.total_requested_bytes += len(data)
        self._blocks.put(i, data)
        return data

    def _fetch(self, start: int | None, stop: int | None) -> bytes:
        start = 0 if start is None else start
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return b""
        if stop - start > self.blocksize:
            # a data read: exact range, not cached
            with self._stats_lock:
                self.miss_count += 1
                self.total_requested_bytes += stop - start
            return self.fetcher(start, stop)
        first, last = start // self.blocksize, (stop - 1) // self.blocksize
        buf = b"".join(self._block(i) for i in range(first, last + 1))
        off = start - first * self.blocksize
        return buf[off:off + (stop - start)]


def _register() -> str:
    """Make the cache known to fsspec by name (on first use; another class of the same name is
    never replaced)."""
    existing = caches.get(HDF5BlockCache.name)
    if existing is not HDF5BlockCache:
        # our own class from an earlier import of this module may be replaced; a foreign cache
        # of the same name is not (fsspec refuses with a ValueError naming it)
        ours = existing is not None and existing.__module__ == HDF5BlockCache.__module__
        register_cache(HDF5BlockCache, clobber=ours)
    return HDF5BlockCache.name


def open_hdf5_file(fs, path: str):
    """A read-only file object of ``fs`` tuned for h5py (local files: the OS file)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return open(path, "rb")
    block = int(config.get("remote.metadata_block_size", 65536))
    return fs.open(path, "rb", block_size=block, cache_type=_register())
