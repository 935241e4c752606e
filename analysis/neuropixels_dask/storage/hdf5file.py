"""Remote files for h5py: small aligned blocks for metadata, exact ranges for data.

HDF5 metadata is scattered in small pieces through the file. Reading it through a default fsspec
file (5 MB read-ahead) downloads megabytes for a few kilobytes of headers; an LRU of small blocks
(``remote.metadata_block_size``) keeps opening a 2 GB session file to a few hundred kB, and reads
larger than a block (data) bypass it and fetch exactly their bytes.

Opening costs round trips, not bytes: h5py reads the superblock, then the root group, then each
object it is asked for, and every read waits for the one before, because it learns the next
address from it. The published files keep their superblock at the start and the root group and
much of the rest at the very end (HDF5 writes object headers when the file is closed), so an
open asks for the size (HEAD), then block 0, then one tail block after another. Here the first
three requests go out together: the size, the first block and the last ``remote.metadata_tail``
bytes (a suffix range, which needs no size), and h5py then finds those blocks in the cache.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from fsspec.asyn import AsyncFileSystem, sync
from fsspec.caching import BaseCache, caches, register_cache

from .. import config
from ..caching import LRU
from . import ranges

#: metadata blocks kept per open file (256 × 64 kB = 16 MB at most)
MAX_BLOCKS = 256
#: Bytes at the end of the file fetched with the first block when a file is opened
#: (``remote.metadata_tail``; 0: none). 512 KiB: in the published layout (as the synthetic
#: files reproduce it) opening an LFP file reads two blocks 200 and 270 kB before the end and a
#: session file two within its last 220 kB, each a round trip of its own; 512 KiB covers them at
#: a few ms of transfer, and keeps opening a session + probes + units under 2 MB.
METADATA_TAIL = 512 << 10


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

    def prefill(self, start: int, data: bytes) -> None:
        """Keep the whole blocks that ``data`` (bytes ``[start, start + len(data))`` of the
        file) covers, as if they had been read: bytes fetched ahead, at open."""
        stop = min(self.size, start + len(data))
        first = -(-start // self.blocksize)  # the first block that starts inside
        for i in range(first, self.size // self.blocksize + 1):
            a, b = i * self.blocksize, min(self.size, (i + 1) * self.blocksize)
            if b > stop or a >= b:
                break
            self._blocks.put(i, bytes(data[a - start:b - start]))

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
    tail = int(config.get("remote.metadata_tail", METADATA_TAIL) or 0)
    if tail <= 0 or not _is_s3(fs):
        return fs.open(path, "rb", block_size=block, cache_type=_register())
    info, head, end = sync(fs.loop, _first_reads, fs, path, block, tail)
    size = int(info["size"])
    f = fs.open(path, "rb", block_size=block, cache_type=_register(), size=size)
    f.details = info  # what fs.open would have asked the store for (no second HEAD)
    if _if_match(f, fs, info):  # as s3fs does when it sizes the file itself: h5py's reads
        f.read_kw = {**f.read_kw, "IfMatch": info["ETag"]}  # fail if the object is replaced
    if isinstance(f.cache, HDF5BlockCache):
        if head is not None:
            f.cache.prefill(0, head)
        if end is not None:
            f.cache.prefill(max(0, size - len(end)), end)
    return f


def _is_s3(fs) -> bool:
    """S3 (s3fs): async, and a suffix range is honoured (an HTTP server that ignores ranges
    would send the whole file for it)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool({"s3", "s3a"} & set(protocols)) and ranges._is_async(fs)


def _if_match(f, fs, info: dict) -> bool:
    return isinstance(getattr(f, "read_kw", None), dict) and bool(info.get("ETag")) \
        and not getattr(fs, "local_expiry_check", True)


async def _first_reads(fs: AsyncFileSystem, path: str, block: int, tail: int
                       ) -> tuple[dict, bytes | None, bytes | None]:
    """The object's info, its first block and its last ``tail`` bytes, requested together.
    The info's errors are the open's; a failed read ahead is only a block h5py reads later."""
    info, head, end = await asyncio.gather(
        fs._info(path), fs._cat_file(path, start=0, end=block),
        fs._cat_file(path, start=-tail), return_exceptions=True)
    if isinstance(info, BaseException):
        raise info
    size = int(info["size"])
    head = head if isinstance(head, bytes) else None
    # a suffix range of an object shorter than ``tail`` is the whole object
    end = end if isinstance(end, bytes) and len(end) == min(tail, size) else None
    return info, head, end
