"""Byte ranges and whole objects, in concurrent batches: the one place that fetches data.

HDF5 chunks and B-tree nodes, spike slices, Zarr shards and Zarr spike chunks all arrive here,
so how ranges become requests is decided once, for every format:

* **Coalescing.** Ranges of one object that lie at most :data:`MAX_GAP` bytes apart are fetched
  as one request (the gap is fetched and discarded), as long as the merged request stays within
  :data:`MAX_REQUEST` bytes; the bytes are split back into the caller's ranges afterwards.
  Overlapping and repeated ranges are fetched once. A single range larger than the cap is one
  request of its own (never split: that only adds requests).
* **Bounded concurrency.** At most :data:`CONCURRENCY` requests are in flight per process (one
  semaphore per I/O event loop, shared by every call and thread of the process), however many
  ranges a call asks for.
* **As they arrive.** :func:`fetch_iter` yields each range as soon as its request is in, so a
  reader can decode the first chunks while the rest are still on the wire.

The three numbers are config keys (``neuropixels_dask.remote.coalesce_gap``,
``remote.max_request``, ``remote.concurrency``; env ``NEUROPIXELS_DASK__REMOTE__COALESCE_GAP``
…), read on every call so that a ``dask.config.set`` applies at once.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import fsspec
from fsspec.asyn import AsyncFileSystem

from .. import config

# Why these values: measured with ``benchmarks/coalesce_sweep.py`` on the bench preset (a 1.34 h,
# 70-channel LFP file in the published layout), 2 workers, 20–50 ms added per request
# (benchmarks/results/2026-12-01-coalesce-sweep.md and -coalesce-sweep-split.md). Coalescing
# itself took the whole-probe read from 9,280 GETs and 64 s to ~380–510 GETs and 15–20 s.
#
#: Ranges of one object at most this many bytes apart become one request. 64 KiB: the chunks of a
#: storage row are adjacent in the file except where the chunk B-tree's nodes were written
#: between them (2.6 kB each, up to three together: 7.8 kB), so 0 left 530 GETs for 129 rows and
#: 4 KiB 386, 64 KiB 377; 1 MiB (object_store's and zarr-python ≥ 3.3's value) saved nothing
#: more and fetched 0.6 MB more. The anchors: hidefix 32 KiB, fsspec's ReferenceFileSystem
#: 64 kB, uproot 32 KiB.
MAX_GAP = 64 << 10
#: A merged request carries at most this many bytes; a longer run is cut into equal parts. 5 MiB:
#: a storage row of the published files (70–96 chunks of ~90 kB, 6.3–8.6 MB) is two requests of
#: 3–4.3 MB fetched side by side. Over a link that caps each connection at 90 MB/s (one S3
#: stream) that beat one 8 MiB request per row by 14 % (17.0 vs 19.8 s) and 16 MiB by 19 %;
#: with latency alone the sizes from 2 to 16 MiB were within the run's noise (14.7–16.5 s).
#: 1–2 MiB made 3–4× the requests for no gain. hidefix uses 8 MiB, zarr-python 16 MiB.
MAX_REQUEST = 5 << 20
#: Requests in flight per worker process. 10: botocore's connection pool
#: (``max_pool_connections``) holds 10, so more only queue inside aiobotocore; 2, 4, 10 and 16
#: (with a pool of 32) measured the same whole-probe read within noise, since a task has only
#: a few requests once they are coalesced. object_store and zarr-python use 10, hidefix 16.
CONCURRENCY = 10


@dataclass(frozen=True)
class Settings:
    """How ranges become requests (see the module docstring)."""

    max_gap: int = MAX_GAP
    max_request: int = MAX_REQUEST
    concurrency: int = CONCURRENCY


def settings() -> Settings:
    """The current settings from config (``neuropixels_dask.remote.*``), defaults above."""
    remote = config.get("remote") or {}

    def number(key: str, default: int, low: int) -> int:
        value = remote.get(key)
        if value is None:
            return default
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"neuropixels_dask.remote.{key}={remote.get(key)!r} must be a whole "
                             f"number ≥ {low} (env NEUROPIXELS_DASK__REMOTE__{key.upper()})"
                             ) from None
        if value < low:
            raise ValueError(f"neuropixels_dask.remote.{key}={value} must be ≥ {low} (env "
                             f"NEUROPIXELS_DASK__REMOTE__{key.upper()})")
        return value

    return Settings(number("coalesce_gap", MAX_GAP, -1), number("max_request", MAX_REQUEST, 1),
                    number("concurrency", CONCURRENCY, 1))


@dataclass(frozen=True)
class Request:
    """One GET: bytes ``[start, stop)`` of ``path``, and where each caller range lies in it:
    ``(index of the range, start, stop relative to the request)``."""

    path: str
    start: int
    stop: int
    parts: tuple[tuple[int, int, int], ...]


def plan(paths: Sequence[str], starts: Sequence[int], stops: Sequence[int],
         max_gap: int = MAX_GAP, max_request: int = MAX_REQUEST) -> list[Request]:
    """Merge the ranges ``[starts[i], stops[i])`` of ``paths[i]`` into requests.

    Ranges of one path whose gap is ≤ ``max_gap`` (``0``: adjacent ones, ``-1``: only
    overlapping ones) form a run. A run longer than ``max_request`` is cut, at range boundaries,
    into the fewest requests of at most ``max_request`` bytes each, of about equal length: a
    storage-chunk row of 6.3 MB with a 5 MiB cap is two requests of ~3.2 MB, which arrive in
    about half the time of one over a link that caps each connection, instead of 5.2 + 1.1 MB.
    A range longer than the cap is one request of its own (splitting it only adds requests).
    Requests come out sorted by path and offset; every range lies inside exactly one of them.
    """
    if not len(paths) == len(starts) == len(stops):
        raise ValueError(f"{len(paths)} paths, {len(starts)} starts and {len(stops)} stops: "
                         "give one start and one stop per path")
    order = sorted(range(len(paths)), key=lambda i: (paths[i], int(starts[i]), int(stops[i])))
    runs: list[tuple[str, int, list[int]]] = []  # path, stop so far, member indexes
    for i in order:
        p, a, b = paths[i], int(starts[i]), int(stops[i])
        if b < a:
            raise ValueError(f"range [{a}, {b}) of {p} ends before it starts")
        if runs and runs[-1][0] == p and a - runs[-1][1] <= max_gap:
            path, stop, members = runs[-1]
            runs[-1] = (path, max(stop, b), [*members, i])
        else:
            runs.append((p, b, [i]))
    out: list[Request] = []
    for path, stop, members in runs:
        begin = int(starts[members[0]])
        parts = -(-(stop - begin) // max(1, max_request))  # ceil: the fewest within the cap
        target = (stop - begin) / parts
        cur: list[int] = []
        lo = hi = 0
        for i in members:
            a, b = int(starts[i]), int(stops[i])
            if cur and (a < hi or (hi - lo < target and max(b, hi) - lo <= max_request)):
                cur.append(i)  # overlaps the request, or it is short of its share: join it
                hi = max(hi, b)
                continue
            if cur:
                out.append(_request(path, lo, hi, cur, starts, stops))
            cur, lo, hi = [i], a, b
        out.append(_request(path, lo, hi, cur, starts, stops))
    return out


def _request(path: str, lo: int, hi: int, members: list[int], starts: Sequence[int],
             stops: Sequence[int]) -> Request:
    return Request(path, lo, hi, tuple((i, int(starts[i]) - lo, int(stops[i]) - lo)
                                       for i in members))


# ---- running requests ----------------------------------------------------------------------

#: one semaphore per (event loop, concurrency): the per-process bound on requests in flight
_semaphores: dict[tuple[int, int], asyncio.Semaphore] = {}
_semaphores_lock = threading.Lock()


def _semaphore(loop: asyncio.AbstractEventLoop, n: int) -> asyncio.Semaphore:
    with _semaphores_lock:
        key = (id(loop), n)
        sem = _semaphores.get(key)
        if sem is None:
            sem = _semaphores[key] = asyncio.Semaphore(n)
        return sem


#: how often a waiting caller wakes to let KeyboardInterrupt through (s), as fsspec's sync does
_POLL = 1.0
_END = object()


def _run_async(fs: AsyncFileSystem, requests: list[Request | str], concurrency: int,
               missing_ok: bool) -> Iterator[tuple[int, bytes | None]]:
    """Run ``requests`` on ``fs``'s loop; yield ``(position in requests, bytes)`` as each
    completes. A ``str`` request is a whole object (``None`` if missing and ``missing_ok``).
    The first failure cancels the requests still in flight and is raised here."""
    loop = fs.loop
    done: queue.SimpleQueue = queue.SimpleQueue()

    whole = _whole_object_kwargs(fs)

    async def one(k: int, req: Request | str) -> None:
        async with _semaphore(loop, concurrency):
            if isinstance(req, str):
                try:
                    data = await fs._cat_file(req, **whole)
                except FileNotFoundError:
                    if not missing_ok:
                        raise
                    data = None
            else:
                data = await fs._cat_file(req.path, start=req.start, end=req.stop)
        done.put((k, data))

    async def run_all() -> None:
        tasks = [asyncio.ensure_future(one(k, r)) for k, r in enumerate(requests)]
        try:
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in finished:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()
        finally:
            for t in tasks:
                t.cancel()
            done.put(_END)

    future = asyncio.run_coroutine_threadsafe(run_all(), loop)
    received = 0
    try:
        while True:
            try:
                item = done.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is _END:
                future.result()  # the first request's error, if one failed
                break
            received += 1
            yield item
        if received != len(requests):
            raise RuntimeError(f"{len(requests) - received} of {len(requests)} requests "
                               "ended without a result")
    finally:
        if not future.done():  # the caller stopped early or failed: cancel what is in flight
            future.cancel()


def _whole_object_kwargs(fs: AsyncFileSystem) -> dict:
    """s3fs sizes an object with a HEAD before it GETs it whole, to split a large one over
    several connections (``max_concurrency``); our whole objects (CSV tables, Zarr shards,
    manifests) are MBs, where that costs a round trip and gains nothing: one GET each."""
    try:
        params = inspect.signature(fs._cat_file).parameters
    except (TypeError, ValueError):
        return {}
    return {"max_concurrency": 1} if "max_concurrency" in params else {}


def _run_sync(fs: fsspec.AbstractFileSystem, requests: list[Request | str], missing_ok: bool
              ) -> Iterator[tuple[int, bytes | None]]:
    """The same, one request after another (local and memory filesystems: no latency)."""
    for k, req in enumerate(requests):
        if isinstance(req, str):
            try:
                yield k, fs.cat_file(req)
            except FileNotFoundError:
                if not missing_ok:
                    raise
                yield k, None
        else:
            yield k, fs.cat_file(req.path, start=req.start, end=req.stop)


def _is_async(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, AsyncFileSystem) and getattr(fs, "async_impl", False) \
        and getattr(fs, "loop", None) is not None


def _run(fs: fsspec.AbstractFileSystem, requests: list, concurrency: int,
         missing_ok: bool = False) -> Iterator[tuple[int, bytes | None]]:
    if _is_async(fs):
        return _run_async(fs, requests, concurrency, missing_ok)
    return _run_sync(fs, requests, missing_ok)


# ---- the API -------------------------------------------------------------------------------

def fetch_iter(fs: fsspec.AbstractFileSystem, paths: Sequence[str], starts: Sequence[int],
               stops: Sequence[int], *, max_gap: int | None = None,
               max_request: int | None = None, concurrency: int | None = None
               ) -> Iterator[tuple[int, bytes]]:
    """``(i, bytes [starts[i], stops[i]) of paths[i])`` for every ``i``, in the order the
    coalesced requests complete (a range past the end of its object comes back short, as a
    ranged GET does). Settings default to :func:`settings`."""
    if not len(paths):
        return iter(())
    cfg = settings()
    requests = plan(paths, starts, stops, cfg.max_gap if max_gap is None else max_gap,
                    cfg.max_request if max_request is None else max_request)

    def split() -> Iterator[tuple[int, bytes]]:
        for k, data in _run(fs, requests, cfg.concurrency if concurrency is None
                            else concurrency):
            req = requests[k]
            if len(req.parts) == 1 and req.parts[0][1] == 0 and req.parts[0][2] >= len(data):
                yield req.parts[0][0], data
                continue
            view = memoryview(data)
            for i, a, b in req.parts:
                yield i, bytes(view[a:b])

    return split()


def fetch(fs: fsspec.AbstractFileSystem, path: str, starts: list[int], stops: list[int]
          ) -> list[bytes]:
    """Bytes ``[start, stop)`` of one object for every pair (coalesced, concurrent)."""
    return fetch_many(fs, [path] * len(starts), starts, stops)


def fetch_many(fs: fsspec.AbstractFileSystem, paths: list[str], starts: list[int],
               stops: list[int]) -> list[bytes]:
    """Bytes ``[start, stop)`` of ``paths[i]`` for every ``i`` (objects of one store),
    coalesced per object and fetched concurrently."""
    out: list[bytes | None] = [None] * len(paths)
    for i, data in fetch_iter(fs, paths, starts, stops):
        out[i] = data
    return out  # type: ignore[return-value]


def fetch_objects(fs: fsspec.AbstractFileSystem, paths: list[str], missing_ok: bool = False
                  ) -> list[bytes | None]:
    """Whole objects, concurrently (at most :func:`settings` ``.concurrency`` in flight); a
    missing one is ``None`` when ``missing_ok``, else ``FileNotFoundError`` naming it."""
    if not paths:
        return []
    out: list[bytes | None] = [None] * len(paths)
    for k, data in _run(fs, list(paths), settings().concurrency, missing_ok):
        out[k] = data
    return out


# a forked child runs its own event loop: the parent's semaphores mean nothing there
os.register_at_fork(after_in_child=_semaphores.clear)
