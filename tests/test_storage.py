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
