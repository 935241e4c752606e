"""Inflate many deflate streams at once: the compressed chunks of HDF5's deflate filter, fast.

Why: the published LFP files are gzip-9 (HDF5 filter 1, a zlib stream per chunk), and one task
inflates a storage-chunk row: ~70–95 chunks of ~90 kB that become 188 kB each. stdlib ``zlib``
does that at ~190 MB/s of output here. Measured on exactly those chunks
(``benchmarks/inflate_codecs.py``, ``benchmarks/results/2026-12-01-inflate-codecs.md``):

* **isal** (Intel ISA-L, ``isal.isal_zlib``) — already a runtime dependency: ~380 MB/s on one
  thread, 1.9× stdlib zlib and 1.17× zlib-ng;
* **zlib-ng** (``zlib_ng.zlib_ng``) — 1.6× stdlib zlib; optional (not a dependency: isal is
  faster and has wheels wherever we run), used if installed and isal is not;
* **zlib** — stdlib, the fallback that is always there.

The first importable of :data:`PREFERENCE` is chosen once, at import (:data:`BACKEND`); the
``neuropixels_dask.inflate.backend`` config key (env ``NEUROPIXELS_DASK__INFLATE__BACKEND``)
names one instead. Because the libraries release the GIL, a batch is inflated by a small
per-process thread pool (:data:`THREADS`, config ``neuropixels_dask.inflate.threads``), so a task
uses the cores its worker has while other threads of the process wait on the network.

Only the deflate step lives here; the reader keeps HDF5's other filters (shuffle, fletcher32).
"""

from __future__ import annotations

import importlib
import os
import threading
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from . import config

#: Backends, fastest first on our chunks (gzip-9 float32 LFP, ~90 kB compressed → 188 kB).
#: Name → (module, decompress function name).
PREFERENCE: dict[str, tuple[str, str]] = {
    "isal": ("isal.isal_zlib", "decompress"),
    "zlib-ng": ("zlib_ng.zlib_ng", "decompress"),
    "zlib": ("zlib", "decompress"),
}
#: Threads of the per-process inflate pool. 2: on the 2-core machine measured, a pool of 2 gave
#: 1.5× one thread with isal (1.9 CPU-seconds per second: the GIL is released) and 4 gave no
#: more; a pool of 1 costs the same as inflating inline, so a worker with a single core loses
#: nothing. Set ``neuropixels_dask.inflate.threads`` to the cores one worker process can use.
DEFAULT_THREADS = 2
#: Below this many blobs a batch is inflated in the calling thread: handing one chunk to the pool
#: costs more than the parallelism saves.
MIN_BATCH_FOR_POOL = 2

Decompress = Callable[..., bytes]


def _load(name: str) -> Decompress | None:
    module, attr = PREFERENCE[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError:
        return None


def available() -> list[str]:
    """Backends importable here, in order of preference."""
    return [name for name in PREFERENCE if _load(name) is not None]


def _choose(requested: str | None) -> tuple[str, Decompress]:
    if requested in (None, "", "auto"):
        for name in PREFERENCE:
            fn = _load(name)
            if fn is not None:
                return name, fn
        raise AssertionError("stdlib zlib is always importable")
    if requested not in PREFERENCE:
        raise ValueError(f"unknown inflate backend {requested!r}; valid: 'auto', "
                         + ", ".join(repr(n) for n in PREFERENCE))
    fn = _load(requested)
    if fn is None:
        raise ImportError(f"inflate backend {requested!r} is configured but its module "
                          f"{PREFERENCE[requested][0]!r} is not installed; available: "
                          f"{available()}")
    return requested, fn


#: The backend every call uses unless told otherwise (chosen once, at import).
BACKEND, _DECOMPRESS = _choose(config.get("inflate.backend", "auto"))
#: Threads of the inflate pool (config ``neuropixels_dask.inflate.threads``).
THREADS = max(1, int(config.get("inflate.threads", None) or DEFAULT_THREADS))


class InflateError(zlib.error):
    """A chunk is not a valid zlib stream (whatever the backend; subclasses ``zlib.error``)."""


_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (-1, 0)  # (pid, threads) the pool was made for
_pool_lock = threading.Lock()


def _executor(threads: int) -> ThreadPoolExecutor:
    """The per-process pool, made again after a fork (a child has none of the parent's threads)
    or when another thread count is asked for."""
    global _pool, _pool_key, _pool_lock
    if _pool_key[0] != os.getpid():
        _pool, _pool_lock = None, threading.Lock()  # the parent's lock may have been held
    with _pool_lock:
        if _pool is None or _pool_key != (os.getpid(), threads):
            old = _pool
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="npd-inflate")
            _pool_key = (os.getpid(), threads)
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _resolve(backend: str | None) -> tuple[str, Decompress]:
    return (BACKEND, _DECOMPRESS) if backend is None or backend == BACKEND else _choose(backend)


def _one(fn: Decompress, blob: bytes, out_size: int | None) -> bytes:
    try:
        if out_size:  # one exact allocation instead of growing from 16 kB
            return fn(blob, 15, out_size)
        return fn(blob)
    except Exception as exc:  # each backend has its own error type
        raise InflateError(f"chunk of {len(blob)} bytes is not a valid zlib stream: "
                           f"{exc}") from exc


def inflate(blob: bytes, out_size: int | None = None, *, backend: str | None = None) -> bytes:
    """Inflate one zlib stream (HDF5 deflate filter output).

    ``out_size``: the expected inflated size (a chunk's bytes), a hint that saves re-allocation.
    """
    return _one(_resolve(backend)[1], blob, out_size)


def inflate_many(blobs: Sequence[bytes], out_size: int | None = None, *,
                 backend: str | None = None, threads: int | None = None) -> list[bytes]:
    """Inflate a batch of zlib streams, in order, on the per-process pool of ``threads``
    (default :data:`THREADS`); ``out_size`` as in :func:`inflate`."""
    fn = _resolve(backend)[1]
    threads = THREADS if threads is None else max(1, int(threads))
    if threads == 1 or len(blobs) < MIN_BATCH_FOR_POOL:
        return [_one(fn, b, out_size) for b in blobs]
    return list(_executor(threads).map(lambda b: _one(fn, b, out_size), blobs))


def submit(blob: bytes, out_size: int | None = None, *, backend: str | None = None,
           then: Callable[[bytes], None] | None = None) -> Future:
    """Inflate one stream on the pool: for a reader that inflates chunks as their bytes arrive,
    while it still waits for others.

    ``then``: called on the pool thread with the inflated bytes (the future's result is then
    ``None``), so a reader can put each chunk where it belongs as soon as it is inflated and
    let it go, instead of holding every inflated chunk until it gets round to them.
    """
    fn = _resolve(backend)[1]
    if then is None:
        return _executor(THREADS).submit(_one, fn, blob, out_size)

    def inflate_then() -> None:
        then(_one(fn, blob, out_size))

    return _executor(THREADS).submit(inflate_then)
