"""The per-process cache primitive that every cache of open files and parsed metadata uses."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from neuropixels_dask import caching
from neuropixels_dask.caching import LRU, ProcessCache


class Resource:
    """Stands for an open file: knows whether it was closed, and how often."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def make_cache(maxsize=2) -> ProcessCache[str, Resource]:
    return ProcessCache("test resources", maxsize=maxsize, on_evict=Resource.close)


def test_lru_keeps_the_most_recently_used():
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    assert lru.put("c", 3) == [("b", 2)]
    assert "a" in lru and "b" not in lru and len(lru) == 2


def test_evicted_entries_are_closed_only_when_released():
    cache = make_cache(maxsize=1)
    with cache.acquire("a", lambda: Resource("a")) as a:
        b = cache.get("b", lambda: Resource("b"))  # pushes a out while it is in use
        assert a.closed == 0 and cache.retired == 1
        with cache.acquire("a", lambda: Resource("a2")) as a2:  # a new one for new users
            assert a2 is not a
    assert a.closed == 1 and cache.retired == 0  # closed at its last release, exactly once
    assert b.closed == 1 and a2.closed == 0  # b made room for a2 and was not in use


def test_two_users_of_one_entry_keep_it_open():
    cache = make_cache(maxsize=1)
    with cache.acquire("a", lambda: Resource("a")) as a1, \
            cache.acquire("a", lambda: Resource("other")) as a2:
        assert a1 is a2 and cache.in_use() == 1
        cache.forget("a")
        assert a1.closed == 0
    assert a1.closed == 1


def test_one_make_however_many_threads_ask():
    cache = make_cache(maxsize=4)
    made: list[int] = []
    barrier = threading.Barrier(8)

    def slow_open() -> Resource:
        made.append(1)
        time.sleep(0.2)
        return Resource("shared")

    def ask(out: list) -> None:
        barrier.wait()
        with cache.acquire("key", slow_open) as r:
            out.append(r)

    got: list[Resource] = []
    threads = [threading.Thread(target=ask, args=(got,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len({id(r) for r in got}) == 1 and len(got) == 8


def test_a_failed_make_is_not_cached():
    cache = make_cache()
    with pytest.raises(OSError, match="boom"):
        cache.get("k", lambda: (_ for _ in ()).throw(OSError("boom")))
    assert cache.get("k", lambda: Resource("k")).name == "k"


def test_none_is_a_value():
    """A chunk index that cannot be parsed is cached as None, not made again each time."""
    cache: ProcessCache[str, None] = ProcessCache("nones", maxsize=4)
    calls: list[int] = []
    for _ in range(3):
        assert cache.get("k", lambda: calls.append(1)) is None
    assert calls == [1]


def test_maxsize_can_follow_config():
    size = {"n": 3}
    cache = ProcessCache("sized", maxsize=lambda: size["n"], on_evict=Resource.close)
    for k in "abc":
        cache.get(k, lambda k=k: Resource(k))
    assert len(cache) == 3
    size["n"] = 1
    cache.get("d", lambda: Resource("d"))
    assert len(cache) == 1


def test_clear_all_closes_every_cache():
    one, two = make_cache(), make_cache()
    a, b = one.get("a", lambda: Resource("a")), two.get("b", lambda: Resource("b"))
    caching.clear_all()
    assert a.closed == b.closed == 1 and len(one) == len(two) == 0


def _child_view(cache: ProcessCache, parent_value: Resource, out) -> None:
    fresh = cache.get("a", lambda: Resource("child"))
    out.put((len(cache), fresh.name, parent_value.closed))


def test_a_forked_child_starts_afresh_and_closes_nothing_of_the_parent():
    cache = make_cache()
    a = cache.get("a", lambda: Resource("parent"))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=_child_view, args=(cache, a, out))
    p.start()
    n, name, closed_in_child = out.get(timeout=30)
    p.join(30)
    assert (n, name, closed_in_child) == (1, "child", 0)
    assert cache.get("a", lambda: Resource("again")) is a and a.closed == 0
