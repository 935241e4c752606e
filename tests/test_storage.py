"""Storage options resolved once, filesystems per options, ranged reads, retries counted."""

from __future__ import annotations

import copy
import pickle

import pytest

from neuropixels_dask import config, storage
from neuropixels_dask.storage import StorageOptions


def test_options_are_resolved_once_and_carry_their_key():
    opts = storage.resolve("s3://bucket/x", {"client_kwargs": {"endpoint_url": "http://h:1"}})
    assert isinstance(opts, StorageOptions)
    assert storage.resolve("s3://bucket/x", opts) is opts  # nothing resolves twice
    assert opts["config_kwargs"]["retries"] == {
        "max_attempts": int(config.get("remote.retries")), "mode": "adaptive"}
    assert opts.key == storage.options_key(dict(opts))
    back = pickle.loads(pickle.dumps(opts))  # what a Dask task carries to a worker
    assert isinstance(back, StorageOptions) and back == opts and back.key == opts.key


def test_credentials_turn_anonymous_access_off():
    assert storage.resolve("s3://b/x")["anon"] is True  # the public bucket's default
    assert storage.resolve("s3://b/x", {"key": "k", "secret": "s"})["anon"] is False
    assert storage.resolve("s3://b/x", {"key": "k", "anon": True})["anon"] is True


def test_local_urls_get_no_s3_settings():
    assert dict(storage.resolve("/tmp/cache")) == {}
    assert dict(storage.resolve("file:///tmp/cache", {"auto_mkdir": True})) == {
        "auto_mkdir": True}


def test_filesystems_are_kept_per_options_and_botocore_cannot_change_the_options(s3_server):
    """botocore rewrites the retries dict it is given; the resolved options must not change
    under the per-process caches' keys (every cache would miss from then on)."""
    opts = storage.resolve(s3_server.url("x"), s3_server.storage_options())
    before = copy.deepcopy(dict(opts))
    fs1, path = storage.filesystem(s3_server.url("x/y"), opts)
    fs1.ls(s3_server.url(""))  # a real call: botocore builds its client from the options
    fs2, _ = storage.filesystem(s3_server.url("x/z"), opts)
    assert fs1 is fs2 and path.endswith("x/y")
    assert dict(opts) == before and opts.key == storage.options_key(before)


def test_ranged_reads_return_exactly_the_ranges(s3_server, tmp_path):
    blob = bytes(range(256)) * 64
    (tmp_path / "blob.bin").write_bytes(blob)
    s3_server.upload(str(tmp_path), "ranges")
    url = s3_server.url("ranges/blob.bin")
    starts, stops = [0, 100, 5000, 16000], [10, 4200, 5001, 16384]
    got = storage.fetch_ranges(url, s3_server.storage_options(), starts, stops)
    assert got == [blob[a:b] for a, b in zip(starts, stops, strict=True)]
    assert storage.fetch_ranges(url, s3_server.storage_options(), [], []) == []


def test_a_missing_object_is_named(s3_server):
    url = s3_server.url("nothing/here.nwb")
    assert storage.exists(url, s3_server.storage_options()) is False
    with pytest.raises(FileNotFoundError, match="nothing/here.nwb"):
        storage.fetch_ranges(url, s3_server.storage_options(), [0], [10])


def test_retry_log_counts_and_reports_a_retry(caplog):
    import logging

    storage.retries.install()
    before = storage.retry_counts()["total"]
    caplog.set_level(logging.INFO, logger="neuropixels_dask.storage")
    logging.getLogger("botocore.retries.standard").debug(
        "Retry needed, retrying request after delay of: 0.25")
    assert storage.retry_counts()["total"] == before + 1
    assert any("retrying an S3 request" in r.getMessage() and "after 0.25 s" in r.getMessage()
               for r in caplog.records)


# ---- coalescing (storage/ranges.py) ---------------------------------------------------------

@pytest.fixture
def blob_url(s3_server, tmp_path):
    blob = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "blob.bin").write_bytes(blob)
    s3_server.upload(str(tmp_path), "coalesce")
    return s3_server.url("coalesce/blob.bin"), blob


def _fetch(s3_server, url, starts, stops, **settings):
    import dask

    keys = {f"neuropixels_dask.remote.{k}": v for k, v in settings.items()}
    with dask.config.set(keys):
        s3_server.reset_stats()
        got = storage.fetch_ranges(url, s3_server.storage_options(), starts, stops)
    return got, s3_server.stats()


def test_near_ranges_are_one_request_and_split_back(s3_server, blob_url):
    url, blob = blob_url
    # unsorted, adjacent, a 1 kB gap, an overlap and a repeat: one request of their span
    starts, stops = [5000, 0, 1000, 3000, 2500, 0], [6000, 1000, 2000, 4000, 3500, 1000]
    got, stats = _fetch(s3_server, url, starts, stops, coalesce_gap=1024)
    assert got == [blob[a:b] for a, b in zip(starts, stops, strict=True)]
    assert stats.get_requests == 1 and stats.bytes == 6000, stats
    # a gap larger than the setting: two requests, and no byte of the gap
    got, stats = _fetch(s3_server, url, [0, 10_000], [100, 10_100], coalesce_gap=1024)
    assert got == [blob[:100], blob[10_000:10_100]]
    assert stats.get_requests == 2 and stats.bytes == 200, stats
    # adjacent only (gap 0), and only overlapping (-1)
    _, stats = _fetch(s3_server, url, [0, 100, 201], [100, 200, 300], coalesce_gap=0)
    assert stats.get_requests == 2, stats
    got, stats = _fetch(s3_server, url, [0, 100, 50], [100, 200, 80], coalesce_gap=-1)
    assert got == [blob[:100], blob[100:200], blob[50:80]] and stats.get_requests == 2


def test_a_merged_request_is_capped(s3_server, blob_url):
    url, blob = blob_url
    starts = list(range(0, 1 << 20, 64 << 10))  # 16 adjacent ranges of 64 KiB
    stops = [a + (64 << 10) for a in starts]
    got, stats = _fetch(s3_server, url, starts, stops, max_request=256 << 10)
    assert b"".join(got) == blob
    assert stats.get_requests == 4 and stats.bytes == len(blob), stats
    # a range larger than the cap is one request of its own, never split
    got, stats = _fetch(s3_server, url, [0], [len(blob)], max_request=1000)
    assert got == [blob] and stats.get_requests == 1


def test_ranges_arrive_as_their_requests_complete(s3_server, blob_url):
    """``fetch_iter`` yields every range once; with one request in flight at a time they
    complete in offset order even when the store answers in random time (20–60 ms)."""
    import dask

    url, blob = blob_url
    fs, path = storage.filesystem(url, s3_server.storage_options())
    starts = [k * 100_000 for k in range(8)][::-1]
    stops = [a + 10 for a in starts]
    s3_server.configure(latency=(0.02, 0.06), seed=3)
    try:
        with dask.config.set({"neuropixels_dask.remote.concurrency": 1}):
            seen = list(storage.ranges.fetch_iter(fs, [path] * 8, starts, stops))
    finally:
        s3_server.configure(latency=0.0)
    assert sorted(i for i, _ in seen) == list(range(8))
    assert all(data == blob[starts[i]:stops[i]] for i, data in seen)
    assert [i for i, _ in seen] == list(range(8))[::-1]  # offsets ascending


def test_whole_objects_are_one_get_each(s3_server, blob_url):
    url, blob = blob_url
    missing = url.replace("blob.bin", "nothing.bin")
    s3_server.reset_stats()
    got = storage.fetch_objects([url, missing, url], s3_server.storage_options(),
                                missing_ok=True)
    stats = s3_server.stats()
    assert got == [blob, None, blob]
    assert stats.requests == stats.get_requests == 3, stats  # no HEAD before a GET
    with pytest.raises(FileNotFoundError, match="coalesce"):
        storage.fetch_objects([missing], s3_server.storage_options())


def test_settings_come_from_config_and_env(monkeypatch):
    import dask

    from neuropixels_dask.storage import ranges

    assert ranges.settings() == ranges.Settings(int(config.get("remote.coalesce_gap")),
                                                int(config.get("remote.max_request")),
                                                int(config.get("remote.concurrency")))
    monkeypatch.setenv("NEUROPIXELS_DASK__REMOTE__MAX_REQUEST", "1048576")
    config.refresh()
    try:
        assert ranges.settings().max_request == 1 << 20
    finally:
        monkeypatch.delenv("NEUROPIXELS_DASK__REMOTE__MAX_REQUEST")
        config.refresh()
    for key, bad in [("concurrency", 0), ("max_request", "big"), ("coalesce_gap", -2)]:
        with dask.config.set({f"neuropixels_dask.remote.{key}": bad}), \
                pytest.raises(ValueError, match=f"NEUROPIXELS_DASK__REMOTE__{key.upper()}"):
            ranges.settings()


def test_an_error_we_do_not_translate_still_reaches_the_client(s3_server, blob_url, local_client):
    """``raise translate_error(exc) from exc`` of an error it leaves alone (here a bad range,
    a ValueError) must not make the error its own cause: distributed's worker never finishes
    reporting such an error, and the computation would hang instead of failing."""
    url, _ = blob_url
    exc = ValueError("range ends before it starts")
    err = storage.translate_error(exc, url)
    assert err is not exc and type(err) is ValueError and str(err) == str(exc)

    future = local_client.submit(storage.fetch_ranges, url, s3_server.storage_options(),
                                 [10], [5], pure=False)
    with pytest.raises(ValueError, match="ends before it starts"):
        future.result(timeout=60)
