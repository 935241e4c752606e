"""Opening remote files: fsspec filesystems tuned for HDF5, retries, and a per-process handle cache.

Why this module exists (see ``remote`` in ``neuropixels_dask.yaml`` for the knobs):

* HDF5 metadata is scattered in small pieces through the file. Reading it through a default
  fsspec file (5 MB read-ahead) downloads megabytes for a few kilobytes of headers; a *small block*
  LRU cache (``metadata_block_size``) keeps opening a 2 GB session file to a few hundred kB.
* Data chunks are fetched by exact byte ranges (``fetch_ranges``), all chunks of a task at once,
  concurrently, instead of one sequential h5py read per chunk: a task that needs 95 compressed
  chunks costs one round trip, not 95.
* Object stores fail transiently (500, 503 SlowDown, resets). botocore retries with adaptive
  backoff (``retries``), s3fs retries bodies cut short; errors that survive the retries become
  clear exceptions (``errors.py``). Every retry is counted and logged at INFO on this module's
  logger (``retry_counts()``, :class:`RetryLog`), so retries are visible, not silent.
* An endpoint that cannot be reached at all fails at first contact, in about a second
  (``check_reachable``), instead of after minutes of botocore's retries with backoff.
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
import socket
import sys
import threading
import time
import urllib.parse
from typing import Any

import fsspec
from fsspec.caching import BaseCache, register_cache

from . import config
from .errors import (
    AccessDeniedError,
    CacheNotFoundError,
    EndpointUnreachableError,
    NeuropixelsDaskError,
    StoreUnavailableError,
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


#: s3fs options that carry credentials
_CREDENTIAL_OPTIONS = ("key", "secret", "token", "profile")


def storage_options_for(url: str, storage_options: dict | None = None) -> dict[str, Any]:
    """Config defaults for ``url`` overlaid with the caller's options (caller wins)."""
    # deep copies: botocore rewrites nested dicts (config_kwargs["retries"]) in place, which would
    # change options_key() after first use and make every per-process cache miss
    opts = copy.deepcopy(config.storage_options_from_config(url))
    if storage_options:
        user = copy.deepcopy(dict(storage_options))
        if "anon" not in user and any(user.get(k) for k in _CREDENTIAL_OPTIONS):
            # credentials given: sign with them (the config's anon=True is for the public bucket;
            # s3fs would otherwise ignore them without a word)
            user["anon"] = False
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
    opts = storage_options_for(url, storage_options)
    if str(url).startswith(("s3://", "s3a://")):
        check_reachable(url, opts)
    return fsspec.core.url_to_fs(url, **opts)


# ---- fast failure for an endpoint that cannot be reached -----------------------------------
#: (host, port) of object-store endpoints this process has connected to once
_reachable: set[tuple[str, int]] = set()
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy")


def _endpoint_of(opts: dict) -> str:
    """The endpoint botocore will use for these s3fs options (an explicit one, else AWS's)."""
    ck = opts.get("client_kwargs") or {}
    explicit = ck.get("endpoint_url") or opts.get("endpoint_url") or \
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if explicit:
        return str(explicit)
    region = ck.get("region_name") or os.environ.get("AWS_REGION") or \
        os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return f"https://s3.{region}.amazonaws.com"


def check_reachable(url: str, opts: dict) -> None:
    """Raise ``EndpointUnreachableError`` at once if the S3 endpoint refuses connections or its
    name does not resolve.

    botocore retries connection errors like any transient error (``retries`` attempts, backoff
    up to 20 s each), so a mistyped endpoint or a missing network would otherwise surface only
    after a minute or more. The first contact of a process with an endpoint is therefore a plain
    TCP connect (three tries within about a second); once it has succeeded, later connection
    errors are transient ones and botocore's retries handle them as before. Skipped when an
    HTTP(S) proxy is configured (the endpoint is then reached through the proxy).
    """
    ck = opts.get("config_kwargs") or {}
    if ck.get("proxies") or any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return
    endpoint = _endpoint_of(opts)
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    host = parts.hostname
    if not host:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return  # botocore reports a malformed endpoint itself
    if (host, port) in _reachable:
        return
    timeout = min(5.0, float(ck.get("connect_timeout") or 5.0))
    last: OSError | None = None
    for pause in (0.0, 0.25, 0.75):
        time.sleep(pause)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except TimeoutError as exc:  # waited long enough already
            last = exc
            break
        except OSError as exc:  # refused, unresolvable, unreachable network
            last = exc
            continue
        _reachable.add((host, port))
        return
    raise EndpointUnreachableError(
        f"Could not reach the object store at {endpoint} for {url} "
        f"({type(last).__name__}: {last}). Check the endpoint "
        "(NEUROPIXELS_DASK__S3__ENDPOINT_URL or client_kwargs={'endpoint_url': ...}) and your "
        "network.")


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *[p.strip("/") for p in parts]])


#: what a transient failure looks like once botocore and s3fs have given up retrying it
_TRANSIENT_SIGNS = ("slowdown", "reduce your request rate", "internalerror",
                    "serviceunavailable", "internal error", "payload is not completed",
                    "clientpayloaderror", "incompleteread", "responsestreamingerror",
                    "connectionreseterror", "connection reset", "serverdisconnectederror")


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
    if any(sign in low for sign in _TRANSIENT_SIGNS):
        return StoreUnavailableError(
            f"The object store kept failing for {url} after every retry ({text}). It is "
            "overloaded or unstable: try again later, or with fewer Dask workers.")
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
        # on_error="raise": fsspec's default ("return") puts a failed range's exception in the
        # list where the bytes should be
        return fs.cat_ranges([path] * len(starts), starts, stops, on_error="raise")
    except Exception as exc:  # noqa: BLE001
        raise translate_error(exc, url) from exc


class _HandleCache:
    """Per-process LRU of open ``h5py.File`` objects keyed by URL + options.

    A handle pushed out of the LRU is closed only once nothing else uses it: a session's reader
    keeps its file, and a task in another thread may be reading one right now. Until then it is
    *retired* (kept here, so it is still closed at exit) and closed as soon as its last user lets
    go. Closing it at once would break them with "no such group" errors on a closed file.
    """

    #: references to a handle while it is examined here: the list or local that holds it, the
    #: loop variable or parameter, and getrefcount's own argument
    _OWN_REFS = 3

    def __init__(self) -> None:
        self._files: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._retired: list[Any] = []
        #: callables run by clear(): readers register the per-process state they keep about
        #: files here, so that "start afresh" forgets it too
        self.on_clear: list[Any] = []
        self._lock = threading.RLock()
        self._pid = os.getpid()
        #: handles inherited through fork(): never used or closed in the child (HDF5's state is
        #: not fork-safe), only kept referenced so that no destructor runs on them here
        self._inherited: list[Any] = []

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._inherited.extend(self._files.values())
            self._inherited.extend(self._retired)
            self._files = collections.OrderedDict()
            self._retired = []
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
                self._retired.append(self._files.popitem(last=False)[1])
            self._close_unused()
            return obj

    def _close_unused(self) -> None:
        in_use = []
        for old in self._retired:
            if sys.getrefcount(old) > self._OWN_REFS:
                in_use.append(old)
            else:
                _close(old)
        self._retired = in_use

    def clear(self) -> None:
        """Close every handle (also those still in use: at exit, or to start afresh)."""
        self._check_fork()
        with self._lock:
            while self._files:
                _, old = self._files.popitem(last=False)
                _close(old)
            while self._retired:
                _close(self._retired.pop())
        for forget in self.on_clear:  # what readers derived from the files (chunk indexes)
            forget()

    def __len__(self) -> int:
        return len(self._files)

    @property
    def retired(self) -> int:
        """Handles pushed out of the LRU but still used somewhere (closed when released)."""
        return len(self._retired)


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


# ---- retries made visible ------------------------------------------------------------------
#: loggers on which botocore (standard/adaptive and legacy modes) and s3fs announce a retry
RETRY_LOGGERS = ("botocore.retries.standard", "botocore.retryhandler", "s3fs")
#: a level below DEBUG that marks "set by this module, not by the user" (see RetryLog.filter)
_OUR_LEVEL = logging.DEBUG - 1
#: s3fs retries a ClientError only when its text matches one of these (s3fs/core.py)
_S3FS_RETRIED_CLIENT_ERRORS = ("SlowDown", "reduce your request rate",
                               "XAmzContentSHA256Mismatch")


class RetryLog(logging.Filter):
    """Count every retry botocore and s3fs make in this process and report it on this module's
    logger at INFO: ``retrying an S3 request (retry N in this process, botocore, after 0.83 s)``.

    botocore and s3fs only announce retries at DEBUG, among every other request they log, so by
    default a run that survived a hundred 503s looks like one that saw none. This filter sits on
    their retry loggers (listed in ``RETRY_LOGGERS``). To see their DEBUG records, a logger
    nobody configured is set to a level just below DEBUG; records the user's configuration
    would not have shown are then dropped here, so their output is unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def _retry_kind(self, record: logging.LogRecord) -> tuple[str, str] | None:
        msg = record.getMessage()
        if record.name.startswith("botocore"):
            if msg.startswith("Retry needed, retrying request after delay of"):
                return "botocore", f"after {float(msg.rsplit(' ', 1)[1]):.2f} s"
            if msg.startswith("Retry needed, action of"):
                return "botocore", msg.rsplit(" ", 1)[1]
            return None
        if msg.startswith("Retryable error"):
            return "s3fs", msg.split(": ", 1)[-1][:200]
        if msg.startswith("Client error (maybe retryable)") and any(
                sign in msg for sign in _S3FS_RETRIED_CLIENT_ERRORS):
            return "s3fs", msg.split(": ", 1)[-1][:200]
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        kind = self._retry_kind(record)
        if kind is not None:
            with self._lock:
                self._counts[kind[0]] += 1
                n = sum(self._counts.values())
            log.info("retrying an S3 request (retry %d in this process, %s, %s)", n, *kind)
        logger = logging.getLogger(record.name)
        if logger.level == _OUR_LEVEL and logger.parent is not None:
            return record.levelno >= logger.parent.getEffectiveLevel()
        return True

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"total": sum(self._counts.values()), **self._counts}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


retry_log = RetryLog()


def install_retry_log() -> None:
    """Attach :data:`retry_log` to botocore's and s3fs' retry loggers (done at import)."""
    for name in RETRY_LOGGERS:
        logger = logging.getLogger(name)
        if retry_log not in logger.filters:
            logger.addFilter(retry_log)
        if logger.level == logging.NOTSET:
            logger.setLevel(_OUR_LEVEL)


def retry_counts() -> dict[str, int]:
    """Retries made in this process so far: ``{"total": n, "botocore": b, "s3fs": s}``
    (on a cluster: ``client.run(storage.retry_counts)``)."""
    return retry_log.counts()


install_retry_log()
