"""Count the requests and bytes a reader costs: the numbers behind "opening a session is cheap".

Two ways to count, one result type (:class:`RequestStats`):

* **At the server** (the source of truth): the proxy of :class:`~.s3server.LocalS3Server` (or a
  :class:`~.s3proxy.FaultyS3Proxy`) counts every HTTP request and the body bytes it returned.
  This works for any client in any process (s3fs, h5py through fsspec, remfile over presigned
  URLs, Dask workers) and includes retries. ``count_requests(server)`` takes the difference of two
  snapshots, so concurrent counting windows do not disturb each other.
* **At the filesystem** (no proxy needed, this process only): ``count_requests(fs)`` instruments
  one fsspec filesystem instance while the block runs. For s3fs every S3 API call
  (``_call_s3``: GetObject, HeadObject, ListObjectsV2...) is counted with the object bytes it
  returned (``ContentLength``); botocore's internal retries of one call are *not* visible here.
  For other filesystems (local, memory, http) ``open``/``cat_file``/``info``/``ls`` are counted
  as logical operations, reads with the bytes they returned (outermost call only, so a
  ``cat_file`` that opens and reads counts once).

>>> with count_requests(server) as meter:                       # doctest: +SKIP
...     session.units
>>> meter.stats.get_requests, meter.stats.bytes                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .s3proxy import RequestCounter, RequestStats

__all__ = ["RequestCounter", "RequestMeter", "RequestStats", "count_requests"]

_S3_CATEGORY = {
    "get_object": "get",
    "head_object": "head", "head_bucket": "head",
    "list_objects_v2": "list", "list_objects": "list", "list_buckets": "list",
    "list_object_versions": "list",
}


class RequestMeter:
    """What :func:`count_requests` yields: ``stats`` is final after the block, ``current()`` live.
    """

    def __init__(self, snapshot: Callable[[], RequestStats], reset: Callable[[], None] | None
                 ) -> None:
        self._snapshot = snapshot
        self._reset = reset
        self._start = snapshot()
        self.stats: RequestStats = RequestStats()

    def current(self) -> RequestStats:
        """Requests and bytes since the block started (or since :meth:`reset`)."""
        return self._snapshot() - self._start

    def reset(self) -> None:
        """Start counting again from now (only this meter; other meters are unaffected)."""
        self._start = self._snapshot()

    def _finish(self) -> None:
        self.stats = self.current()


@contextlib.contextmanager
def count_requests(source: Any) -> Iterator[RequestMeter]:
    """Count requests/bytes during the block.

    ``source`` is a :class:`~.s3server.LocalS3Server` started with a proxy, a
    :class:`~.s3proxy.FaultyS3Proxy` (anything with a ``stats() -> RequestStats`` method; counts
    every client and process), or an fsspec filesystem instance (counts this process's calls on
    that instance only).
    """
    stats_fn = getattr(source, "stats", None)
    if callable(stats_fn):
        meter = RequestMeter(stats_fn, None)
        try:
            yield meter
        finally:
            meter._finish()
        return
    counter = RequestCounter()
    with _instrument(source, counter):
        meter = RequestMeter(counter.snapshot, counter.reset)
        try:
            yield meter
        finally:
            meter._finish()


@contextlib.contextmanager
def _instrument(fs: Any, counter: RequestCounter) -> Iterator[None]:
    try:
        from s3fs import S3FileSystem
    except ImportError:  # pragma: no cover
        S3FileSystem = ()  # type: ignore[assignment,misc]
    if isinstance(fs, S3FileSystem):
        with _instrument_s3fs(fs, counter):
            yield
        return
    from fsspec import AbstractFileSystem

    if not isinstance(fs, AbstractFileSystem):
        raise TypeError(f"cannot count requests of {type(fs).__name__}: pass a LocalS3Server "
                        "with a proxy, a FaultyS3Proxy or an fsspec filesystem")
    with _instrument_generic(fs, counter):
        yield


@contextlib.contextmanager
def _instrument_s3fs(fs: Any, counter: RequestCounter) -> Iterator[None]:
    """Wrap ``fs._call_s3`` (every S3 API call of s3fs goes through it) on this instance."""
    had_own = "_call_s3" in vars(fs)
    orig = fs._call_s3

    async def _call_s3(method: Any, *args: Any, **kwargs: Any) -> Any:
        name = method if isinstance(method, str) else getattr(method, "__name__", str(method))
        nbytes = 0
        try:
            out = await orig(method, *args, **kwargs)
            if name == "get_object" and isinstance(out, dict):
                nbytes = int(out.get("ContentLength") or 0)
            return out
        finally:
            counter.record(_S3_CATEGORY.get(name, "other"), nbytes)

    fs._call_s3 = _call_s3
    try:
        yield
    finally:
        if had_own:
            fs._call_s3 = orig
        else:
            with contextlib.suppress(AttributeError):
                del fs._call_s3


class _CountingFile:
    """File proxy that counts ``read``/``readinto`` calls and the bytes they return."""

    def __init__(self, f: Any, counter: RequestCounter, depth: threading.local) -> None:
        self._f, self._counter, self._depth = f, counter, depth

    def read(self, *args: Any) -> Any:
        out = self._f.read(*args)
        if not getattr(self._depth, "n", 0):
            self._counter.record("get", len(out))
        return out

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b)
        if not getattr(self._depth, "n", 0):
            self._counter.record("get", n or 0)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _CountingFile:
        self._f.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._f.__exit__(*exc)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._f)


@contextlib.contextmanager
def _instrument_generic(fs: Any, counter: RequestCounter) -> Iterator[None]:
    """Count logical operations on any fsspec filesystem instance (outermost calls only)."""
    depth = threading.local()
    saved: dict[str, Any] = {}

    def wrap(name: str, category: str, size_of: Callable[[Any], int]) -> None:
        orig = getattr(fs, name)
        saved[name] = (name in vars(fs), orig)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            outer = not getattr(depth, "n", 0)
            depth.n = getattr(depth, "n", 0) + 1
            nbytes = 0
            try:
                out = orig(*args, **kwargs)
                nbytes = size_of(out)
                return out
            finally:
                depth.n -= 1
                if outer:
                    counter.record(category, nbytes)

        setattr(fs, name, wrapper)

    def open_wrapper_factory() -> None:
        orig = fs.open
        saved["open"] = ("open" in vars(fs), orig)

        def open_(*args: Any, **kwargs: Any) -> Any:
            f = orig(*args, **kwargs)
            mode = args[1] if len(args) > 1 else kwargs.get("mode", "rb")
            if "r" in mode and not getattr(depth, "n", 0):
                return _CountingFile(f, counter, depth)
            return f

        fs.open = open_

    open_wrapper_factory()
    wrap("cat_file", "get", lambda out: len(out) if isinstance(out, bytes | bytearray) else 0)
    wrap("info", "head", lambda out: 0)
    wrap("ls", "list", lambda out: 0)
    try:
        yield
    finally:
        for name, (own, orig) in saved.items():
            if own:
                setattr(fs, name, orig)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(fs, name)
