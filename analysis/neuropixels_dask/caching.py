"""The one per-process cache primitive: a bounded LRU with explicit reference counts.

Workers keep things between tasks that are expensive to make: open HDF5 files, parsed chunk
indexes, opened Zarr arrays. Three rules make that safe, and every such cache follows them by
being a :class:`ProcessCache`:

* **Closing waits for the last user.** ``with cache.acquire(key, make) as value:`` holds a
  reference while the block runs. An entry pushed out of the LRU while in use is closed
  (``on_evict``) when its last user releases it, never under a running read. The count is
  explicit (as in xarray's ``backends/file_manager.py``), not inferred from CPython's
  ``sys.getrefcount``.
* **Fork starts afresh.** In a child process (Dask's process pools, multiprocessing), the
  parent's entries are dropped without being closed: HDF5 handles and their locks are not
  fork-safe. They stay referenced so that no destructor runs on them in the child.
* **Closing at exit is declared.** The first entry of a cache with ``on_evict`` registers one
  ``atexit`` hook that closes every cache while the interpreter is intact (left to module
  teardown, h5py would call back into half-destroyed file objects). Nothing happens at import.

:class:`LRU` is the plain bounded mapping underneath, also used where no process-level rules
apply (the metadata blocks of one remote file).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Size = int | Callable[[], int]
#: "no entry" (None is a value some caches keep: "this file's chunk index cannot be parsed")
_MISSING: object = object()


class LRU(Generic[K, V]):
    """A thread-safe mapping that keeps the ``maxsize`` most recently used items."""

    def __init__(self, maxsize: Size) -> None:
        self._maxsize = maxsize
        self._items: collections.OrderedDict[K, V] = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def maxsize(self) -> int:
        return int(self._maxsize() if callable(self._maxsize) else self._maxsize)

    def get(self, key: K, default: object = None) -> V | object:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """Insert ``value``; return the items pushed out to make room (oldest first)."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            out = []
            while len(self._items) > max(1, self.maxsize):
                out.append(self._items.popitem(last=False))
            return out

    def pop(self, key: K, default: object = None) -> V | object:
        with self._lock:
            return self._items.pop(key, default)

    def clear(self) -> list[tuple[K, V]]:
        with self._lock:
            out = list(self._items.items())
            self._items.clear()
            return out

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


#: every ProcessCache of this process, for :func:`clear_all` and the exit hook
_registry: weakref.WeakSet[ProcessCache] = weakref.WeakSet()
_exit_hook_installed = False
_exit_lock = threading.Lock()


class ProcessCache(Generic[K, V]):
    """Per-process LRU of resources with reference counts, fork handling and closing at exit.

    >>> files = ProcessCache("h5 files", maxsize=32, on_evict=lambda f: f.close())  # doctest: +SKIP
    >>> with files.acquire(key, lambda: h5py.File(...)) as f:                       # doctest: +SKIP
    ...     f["units/id"][()]

    ``get`` is for values that need no closing (nothing waits for a release then).
    """

    def __init__(self, name: str, maxsize: Size, on_evict: Callable[[V], None] | None = None
                 ) -> None:
        self.name = name
        self._maxsize = maxsize
        self._on_evict = on_evict
        self._reset()
        _registry.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._lru: LRU[K, V] = LRU(self._maxsize)
        self._refs: collections.Counter[int] = collections.Counter()
        #: keys being made right now, and the event their waiters wait for
        self._pending: dict[K, threading.Event] = {}
        #: evicted while in use: closed at the last release ({id(value): value})
        self._retired: dict[int, V] = {}
        #: the parent's values after a fork: never used or closed here, only kept referenced
        self._inherited: list[V] = []

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            inherited = [v for _, v in self._lru.clear()] + list(self._retired.values())
            old = self._inherited
            self._reset()
            self._inherited = old + inherited

    # ---- use -------------------------------------------------------------------------------
    def get(self, key: K, make: Callable[[], V]) -> V:
        """The cached value for ``key``, made when missing (once, however many threads ask)."""
        return self._get_or_make(key, make, hold=False)

    @contextlib.contextmanager
    def acquire(self, key: K, make: Callable[[], V]) -> Iterator[V]:
        """Yield the value for ``key``; it is not closed before the block ends."""
        value = self._get_or_make(key, make, hold=True)
        try:
            yield value
        finally:
            self._release(value)

    def _get_or_make(self, key: K, make: Callable[[], V], hold: bool) -> V:
        """Single flight: the first thread to miss ``key`` makes it (outside the lock, so other
        keys are not held up); threads asking meanwhile wait for that value instead of making
        their own (a second open of the same file would cost its metadata reads again)."""
        self._check_fork()
        while True:
            with self._lock:
                value = self._lru.get(key, _MISSING)
                if value is not _MISSING:
                    if hold:
                        self._refs[id(value)] += 1
                    return value  # type: ignore[return-value]
                pending = self._pending.get(key)
                mine = pending is None
                if mine:
                    pending = self._pending[key] = threading.Event()
            if not mine:
                pending.wait()
                continue  # made (or failed: then this thread tries itself)
            try:
                value = make()
            except BaseException:
                with self._lock:
                    self._pending.pop(key, None)
                pending.set()
                raise
            try:
                return self._insert(key, value, hold)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
                pending.set()

    def _insert(self, key: K, value: V, hold: bool) -> V:
        closing: list[V] = []
        with self._lock:
            for _, old in self._lru.put(key, value):
                if self._refs[id(old)]:
                    self._retired[id(old)] = old
                else:
                    closing.append(old)
            if hold:
                self._refs[id(value)] += 1
        if self._on_evict is not None:
            _install_exit_hook()
        self._close(closing)
        return value

    def _release(self, value: V) -> None:
        closing = []
        with self._lock:
            self._refs[id(value)] -= 1
            if self._refs[id(value)] <= 0:
                del self._refs[id(value)]
                if id(value) in self._retired:
                    closing.append(self._retired.pop(id(value)))
        self._close(closing)

    def _close(self, values: list[V]) -> None:
        if self._on_evict is None:
            return
        for v in values:
            with contextlib.suppress(Exception):  # closing a dead handle must not mask the work
                self._on_evict(v)

    # ---- maintenance -------------------------------------------------------------------------
    def forget(self, key: K) -> None:
        """Drop ``key`` (closed now, or at its last release if in use)."""
        self._check_fork()
        with self._lock:
            value = self._lru.pop(key, _MISSING)
            if value is _MISSING:
                return
            if self._refs[id(value)]:
                self._retired[id(value)] = value
                return
        self._close([value])

    def clear(self) -> None:
        """Close every entry, those in use too: at exit, or to start afresh in tests."""
        self._check_fork()
        with self._lock:
            values = [v for _, v in self._lru.clear()] + list(self._retired.values())
            self._retired.clear()
            self._refs.clear()
        self._close(values)

    def __len__(self) -> int:
        self._check_fork()
        return len(self._lru)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` holds a value now (not counting one being made)."""
        self._check_fork()
        with self._lock:
            return key in self._lru

    @property
    def retired(self) -> int:
        """Entries pushed out of the LRU but still in use (closed at their last release)."""
        return len(self._retired)

    def in_use(self) -> int:
        """Values currently acquired."""
        with self._lock:
            return len(self._refs)


def clear_all() -> None:
    """Close every per-process cache (``client.run(clear_all)`` does it on a cluster)."""
    for cache in list(_registry):
        cache.clear()


def _install_exit_hook() -> None:
    global _exit_hook_installed
    with _exit_lock:
        if not _exit_hook_installed:
            atexit.register(clear_all)
            _exit_hook_installed = True
