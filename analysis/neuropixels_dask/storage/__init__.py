"""Reading remote files: fsspec filesystems with our defaults, one job per module.

- :mod:`.options`: config defaults + the caller's ``storage_options``, resolved once
  (:class:`StorageOptions`).
- :mod:`.reach`: an unreachable endpoint fails at first contact, in about a second.
- :mod:`.translate`: botocore/aiohttp/OS errors in the user's words (``errors.py``).
- :mod:`.retries`: transient S3 errors are retried by botocore (adaptive backoff) and s3fs;
  every retry is counted and logged at INFO (``retry_counts()``).
- :mod:`.deadline`, :mod:`.httpsession`: a store that stops answering fails every read within
  ``remote.outage_timeout`` (``StoreUnavailableError``) instead of hanging; the fetch functions
  below are each one bounded read.
- :mod:`.hdf5file`: remote files tuned for h5py (small blocks for metadata, exact data reads).
- :mod:`.ranges`: many byte ranges of one object in one concurrent batch.

Dask tasks carry a URL and :class:`StorageOptions`, never an open handle; this module keeps one
filesystem instance per (protocol, options) and process.
"""

from __future__ import annotations

import fsspec

from ..caching import ProcessCache
from . import deadline, ranges, retries
from .hdf5file import HDF5BlockCache, open_hdf5_file
from .options import StorageOptions, check_url, is_s3, options_key, resolve, with_defaults
from .reach import check_reachable
from .retries import RetryLog, retry_counts, retry_log
from .translate import translate_error

__all__ = ["HDF5BlockCache", "RetryLog", "StorageOptions", "bounded", "check_url", "exists",
           "fetch_object_ranges",
           "fetch_objects", "fetch_ranges",
           "filesystem", "is_s3", "join", "open_file", "options_key", "resolve", "retry_counts",
           "retry_log", "translate_error", "with_defaults"]

#: fsspec filesystem instances per (protocol, options key), per process
_filesystems: ProcessCache[tuple[str, str], fsspec.AbstractFileSystem] = ProcessCache(
    "filesystems", maxsize=64)


#: a read whose S3 requests must all be answered within ``remote.outage_timeout`` (.deadline)
bounded = deadline.bounded


def join(url: str, *parts: str) -> str:
    """``url`` and path parts joined with single slashes."""
    return "/".join([url.rstrip("/"), *[p.strip("/") for p in parts]])


def filesystem(url: str, storage_options: dict | None = None
               ) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(fs, path)`` for ``url`` with our defaults (options resolved unless they already are).

    The first S3 filesystem of a process installs the retry log and checks that the endpoint
    can be reached at all (:mod:`.reach`).
    """
    opts = resolve(url, storage_options)
    protocol = fsspec.core.split_protocol(str(url))[0] or "file"
    if is_s3(url):
        retries.install()
        check_reachable(url, opts)

    def make() -> fsspec.AbstractFileSystem:
        return fsspec.filesystem(protocol, **opts.to_fsspec())

    fs = _filesystems.get((protocol, opts.key), make)
    return fs, fs._strip_protocol(str(url))


def open_file(url: str, storage_options: dict | None = None):
    """A read-only file object of ``url`` tuned for h5py (:mod:`.hdf5file`)."""
    fs, path = filesystem(url, storage_options)
    try:
        return open_hdf5_file(fs, path)
    except Exception as exc:  # noqa: BLE001 - re-raised in the user's words
        raise translate_error(exc, url) from exc


def exists(url: str, storage_options: dict | None = None) -> bool:
    """Whether ``url`` exists; errors of the store in the user's words."""
    fs, path = filesystem(url, storage_options)
    try:
        with bounded():
            return bool(fs.exists(path))
    except Exception as exc:  # noqa: BLE001
        raise translate_error(exc, url) from exc


def fetch_ranges(url: str, storage_options: dict | None, starts: list[int],
                 stops: list[int]) -> list[bytes]:
    """Bytes ``[start, stop)`` of ``url`` for every pair, fetched concurrently (:mod:`.ranges`)."""
    fs, path = filesystem(url, storage_options)
    try:
        with bounded():
            return ranges.fetch(fs, path, starts, stops)
    except Exception as exc:  # noqa: BLE001
        raise translate_error(exc, url) from exc


def fetch_object_ranges(urls: list[str], storage_options: dict | None, starts: list[int],
                        stops: list[int]) -> list[bytes]:
    """Bytes ``[starts[i], stops[i])`` of ``urls[i]`` (objects of one store), concurrently."""
    if not urls:
        return []
    fs, _ = filesystem(urls[0], storage_options)
    try:
        with bounded():
            return ranges.fetch_many(fs, [fs._strip_protocol(u) for u in urls], starts, stops)
    except Exception as exc:  # noqa: BLE001
        raise translate_error(exc, urls[0].rsplit("/", 1)[0]) from exc


def fetch_objects(urls: list[str], storage_options: dict | None, missing_ok: bool = False
                  ) -> list[bytes | None]:
    """Whole objects of one store, concurrently (``None`` for a missing one if ``missing_ok``)."""
    if not urls:
        return []
    fs, _ = filesystem(urls[0], storage_options)
    try:
        with bounded():
            return ranges.fetch_objects(fs, [fs._strip_protocol(u) for u in urls], missing_ok)
    except Exception as exc:  # noqa: BLE001
        raise translate_error(exc, urls[0].rsplit("/", 1)[0]) from exc
