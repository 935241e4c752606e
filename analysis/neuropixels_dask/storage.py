"""Opening remote files: fsspec filesystems tuned for HDF5, retries, and a per-process handle cache.

Why this module exists (see ``remote`` in ``neuropixels_dask.yaml`` for the knobs):

* HDF5 metadata is scattered in small pieces through the file. Reading it through a default
  fsspec file (5 MB read-ahead) downloads megabytes for a few kilobytes of headers; a *small block*
  LRU cache (``metadata_block_size``) keeps opening a 2 GB session file to a few hundred kB.
* Data chunks are fetched by exact byte ranges (``fetch_ranges``), all chunks of a task at once,
  concurrently, instead of one sequential h5py read per chunk: a task that needs 95 compressed
  chunks costs one round trip, not 95.
* Object stores fail transiently (500, 503 SlowDown, resets). botocore retries with adaptive
  backoff (``retries``); errors that survive the retries become clear exceptions (``errors.py``).
* Dask tasks carry a URL + storage options, never an open handle; each worker process keeps an LRU
  of open files (``open_files_per_worker``) so consecutive tasks on the same file reuse it.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import copy
import logging
import os
import threading
from typing import Any

import fsspec
from fsspec.caching import BaseCache, register_cache

from . import config
from .errors import (
    AccessDeniedError,
    CacheNotFoundError,
    EndpointUnreachableError,
    NeuropixelsDaskError,
)

log = logging.getLogger(__name__)


class HDF5BlockCache(BaseCache):
    """LRU of small aligned blocks for metadata; large reads bypass it and fetch exactly.

    h5py asks for a few bytes here and there while it walks object headers and B-trees (cache them
    in ``blocksize`` blocks), and for whole chunks when it reads data (fetch exactly those bytes,
    so the transfer equals the stored size).
    """

    name = "hdf5blocks"
    MAX_BLOCKS = 256

    def __init__(self, blocksize: int, fetcher, size: int, **kwargs: Any) -> None:
        super().__init__(blocksize, fetcher, size)
        self._blocks: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _block(self, i: int) -> bytes:
        with self._lock:
            if i in self._blocks:
                self._blocks.move_to_end(i)
                self.hit_count += 1
                return self._blocks[i]
        start = i * self.blocksize
        data = self.fetcher(start, min(self.size, start + self.blocksize))
        self.miss_count += 1
        self.total_requested_bytes += len(data)
        with self._lock:
            self._blocks[i] = data
            while len(self._blocks) > self.MAX_BLOCKS:
                self._blocks.popitem(last=False)
        return data

    def _fetch(self, start: int | None, stop: int | None) -> bytes:
        start = 0 if start is None else start
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return b""
        if stop - start > self.blocksize:
            # a data read: exact range, not cached
            self.miss_count += 1
            self.total_requested_bytes += stop - start
            return self.fetcher(start, stop)
        first, last = start // self.blocksize, (stop - 1) // self.blocksize
        parts = [self._block(i) for i in range(first, last + 1)]
        buf = b"".join(parts)
        off = start - first * self.blocksize
        return buf[off:off + (stop - start)]


register_cache(HDF5BlockCache, clobber=True)


def storage_options_for(url: str, storage_options: dict | None = None) -> dict[str, Any]:
    """Config defaults for ``url`` overlaid with the caller's options (caller wins)."""
    # deep copies: botocore rewrites nested dicts (config_kwargs["retries"]) in place, which would
    # change options_key() after first use and make every per-process cache miss
    opts = copy.deepcopy(config.storage_options_from_config(url))
    if storage_options:
        user = copy.deepcopy(dict(storage_options))
        if "client_kwargs" in user and "client_kwargs" in opts:
            user["client_kwargs"] = {**opts["client_kwargs"], **user["client_kwargs"]}
        opts.update(user)
    if str(url).startswith(("s3://", "s3a://")):
        remote = config.get("remote") or {}
        ck = dict(opts.get("config_kwargs") or {})
        ck.setdefault("retries", {"max_attempts": int(remote.get("retries", 8)),
                                  "mode": "adaptive"})
        ck.setdefault("connect_timeout", remote.get("connect_timeout", 10))
        ck.setdefault("read_timeout", remote.get("read_timeout", 60))
        opts["config_kwargs"] = ck
    return opts


def filesystem(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem,
                                                                      str]:
    """``(fs, path)`` for ``url`` with our defaults; fsspec caches the filesystem instance."""
    return fsspec.core.url_to_fs(url, **storage_options_for(url, storage_options))


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *[p.strip("/") for p in parts]])


def translate_error(exc: BaseException, url: str) -> BaseException:
    """Turn a botocore/aiohttp/OS error about ``url`` into one of our errors, in the user's words."""
    if isinstance(exc, NeuropixelsDaskError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if isinstance(exc, PermissionError) or "accessdenied" in low or "forbidden" in low or \
            "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low:
        return AccessDeniedError(
            f"Access to {url} was denied ({text}). Check your credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an IAM role), or set "
            "NEUROPIXELS_DASK__S3__ANON=true for a public bucket.")
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return CacheNotFoundError(
            f"The bucket of {url} does not exist ({text}). Check the cache URL "
            "(NEUROPIXELS_DASK__CACHE__URL or open_cache(url=...)).")
    if isinstance(exc, FileNotFoundError) or "nosuchkey" in low or "not found" in low:
        return CacheNotFoundError(f"Nothing found at {url}. Check the cache URL and that the "
                                  "cache holds this file.")
    if isinstance(exc, ConnectionError | TimeoutError) or "could not connect" in low or \
            "connect timeout" in low or "endpointconnectionerror" in low or \
            "cannot connect" in low or "connection refused" in low:
        return EndpointUnreachableError(
            f"Could not reach the object store for {url} ({text}). Check the endpoint "
            "(NEUROPIXELS_DASK__S3__ENDPOINT_URL) and your network.")
    return exc


def open_file(url: str, storage_options: dict | None = None):
    """A read-only file object tuned for HDF5 (see module docstring)."""
    fs, path = filesystem(url, storage_options)
    block = int((config.get("remote") or {}).get("metadata_block_size", 65536))
    try:
        if getattr(fs, "protocol", None) in ("file", ("file", "local")) or \
                "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            return open(path, "rb")
        return fs.open(path, "rb", block_size=block, cache_type=HDF5BlockCache.name)
    except Exception as exc:  # noqa: BLE001 - re-raised in the user's words
        raise translate_error(exc, url) from exc


def fetch_ranges(url: str, storage_options: dict | None, starts: list[int],
                 stops: list[int]) -> list[bytes]:
    """Fetch many byte ranges of one file concurrently (one batch of ranged GETs on S3)."""
    fs, path = filesystem(url, storage_options)
    try:
        return fs.cat_ranges([path] * len(starts), starts, stops)
    except Exception as exc:  # noqa: BLE001
        raise translate_error(exc, url) from exc


class _HandleCache:
    """Per-process LRU of open ``h5py.File`` objects keyed by URL + options."""

    def __init__(self) -> None:
        self._files: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._lock = threading.RLock()
        self._pid = os.getpid()
        #: handles inherited through fork(): never used or closed in the child (HDF5's state is
        #: not fork-safe), only kept referenced so that no destructor runs on them here
        self._inherited: list[Any] = []

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._inherited.extend(self._files.values())
            self._files = collections.OrderedDict()
            self._lock = threading.RLock()
            self._pid = os.getpid()

    def get(self, key: tuple, opener) -> Any:
        self._check_fork()
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
            obj = opener()
            self._files[key] = obj
            cap = int((config.get("remote") or {}).get("open_files_per_worker", 32))
            while len(self._files) > cap:
                _, old = self._files.popitem(last=False)
                _close(old)
            return obj

    def clear(self) -> None:
        self._check_fork()
        with self._lock:
            while self._files:
                _, old = self._files.popitem(last=False)
                _close(old)

    def __len__(self) -> int:
        return len(self._files)


def _close(obj: Any) -> None:
    for o in obj if isinstance(obj, tuple) else (obj,):
        # closing a dead handle must not mask the real work
        with contextlib.suppress(Exception):
            o.close()


handles = _HandleCache()
# Close HDF5 files while the interpreter (and fsspec's event loop) is still intact: left to module
# teardown, h5py would call back into a half-destroyed file object.
atexit.register(handles.clear)


def options_key(storage_options: dict | None) -> str:
    import json

    return json.dumps(storage_options or {}, sort_keys=True, default=str)
