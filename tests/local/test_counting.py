"""Counting requests and bytes: exact at the proxy (any client, any process), and per
filesystem instance in this process. Benchmarks and "opening a session is cheap" tests rely on
these numbers being exact."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import urllib.request

import fsspec
import pytest

from neuropixels_dask.local.counting import RequestStats, count_requests
from neuropixels_dask.local.s3proxy import FaultyS3Proxy, classify
from neuropixels_dask.local.s3server import LocalS3Server

BUCKET = "npd-count-test"
KEY = "data/blob.bin"
DATA = random.Random(3).randbytes(3 << 20)


@pytest.fixture(scope="module")
def server():
    """Server behind the counting proxy in its own process (the default proxy mode)."""
    with LocalS3Server(bucket=BUCKET, proxy=True) as s:
        s.filesystem(direct=True).pipe(f"{BUCKET}/{KEY}", DATA)
        yield s


@pytest.fixture
def fs(server):
    return server.filesystem(skip_instance_cache=True)


def test_proxy_counts_a_ranged_read_exactly(server, fs):
    assert server.proxy.pid not in (os.getpid(), server.pid)
    with count_requests(server) as meter:
        assert fs.cat_file(f"{BUCKET}/{KEY}", start=1000, end=1000 + 12345) == \
            DATA[1000:1000 + 12345]
    s = meter.stats
    assert (s.requests, s.get_requests, s.head_requests, s.list_requests) == (1, 1, 0, 0)
    assert s.bytes == 12345
    assert s.faults_total == 0


def test_s3fs_instrumentation_agrees_with_the_proxy(server, fs):
    with count_requests(server) as wire, count_requests(fs) as calls:
        fs.info(f"{BUCKET}/{KEY}")
        fs.cat_file(f"{BUCKET}/{KEY}", start=0, end=100)
        fs.ls(f"{BUCKET}/data", refresh=True)
    for s in (wire.stats, calls.stats):
        assert (s.requests, s.get_requests, s.head_requests, s.list_requests) == (3, 1, 1, 1)
    assert calls.stats.bytes == 100  # object bytes only
    assert wire.stats.bytes > 100  # plus the ListObjects XML
    assert "_call_s3" not in vars(fs)  # instrumentation removed


def test_file_readahead_shows_in_the_bytes(server, fs):
    """A default-style buffered file reads a whole block for a few bytes: visible here."""
    with count_requests(server) as meter, \
            fs.open(f"{BUCKET}/{KEY}", "rb", block_size=1 << 20, cache_type="bytes") as f:
        f.seek(500_000)
        assert f.read(10) == DATA[500_000:500_010]
    assert (meter.stats.get_requests, meter.stats.head_requests) == (1, 1)  # HEAD: the size
    assert meter.stats.bytes >= 1 << 20


def test_presigned_http_range_reads_are_counted(server):
    """remfile-style access: plain HTTP GETs of a presigned URL, through the proxy."""
    import boto3

    so = server.storage_options()
    client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name=server.region,
                          aws_access_key_id=so["key"], aws_secret_access_key=so["secret"])
    url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": KEY})
    with count_requests(server) as meter:
        req = urllib.request.Request(url, headers={"Range": "bytes=100-199"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 206 and r.read() == DATA[100:200]
    assert (meter.stats.get_requests, meter.stats.bytes) == (1, 100)


def test_counts_requests_from_other_processes(server):
    """Dask workers are other processes: the proxy counts them too (an anonymous plain-HTTP
    read here: the bucket is public like the Allen one)."""
    code = ("import sys, urllib.request\n"
            "r = urllib.request.Request(sys.argv[1], headers={'Range': 'bytes=0-4095'})\n"
            "assert len(urllib.request.urlopen(r).read()) == 4096\n")
    with count_requests(server) as meter:
        subprocess.run([sys.executable, "-c", code, f"{server.endpoint_url}/{BUCKET}/{KEY}"],
                       check=True, timeout=60)
    assert (meter.stats.get_requests, meter.stats.bytes) == (1, 4096)


def test_meters_are_independent_and_reset(server, fs):
    path = f"{BUCKET}/{KEY}"
    with count_requests(server) as outer:
        fs.cat_file(path, start=0, end=10)
        with count_requests(server) as inner:
            fs.cat_file(path, start=0, end=20)
        assert outer.current().bytes == 30
        outer.reset()
        fs.cat_file(path, start=0, end=5)
    assert inner.stats.bytes == 20
    assert outer.stats.bytes == 5


def test_server_reset_stats(server, fs):
    fs.cat_file(f"{BUCKET}/{KEY}", start=0, end=10)
    server.reset_stats()
    assert server.stats() == RequestStats()


def test_standalone_proxy_in_a_thread(server):
    with FaultyS3Proxy(server.direct_endpoint_url) as proxy:
        assert proxy.pid == os.getpid()
        so = {**server.storage_options(), "skip_instance_cache": True}
        so["client_kwargs"] = {**so["client_kwargs"], "endpoint_url": proxy.endpoint_url}
        import s3fs

        pfs = s3fs.S3FileSystem(**so)
        with count_requests(proxy) as meter:
            assert pfs.cat_file(f"{BUCKET}/{KEY}", start=7, end=70) == DATA[7:70]
        assert (meter.stats.requests, meter.stats.bytes) == (1, 63)
        proxy.reset()
        assert proxy.stats().requests == 0


def test_local_filesystem_counting(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(DATA[:10_000])
    lfs = fsspec.filesystem("file")
    with count_requests(lfs) as meter:
        assert lfs.cat_file(str(p), start=10, end=110) == DATA[10:110]  # one op, not open+read
        with lfs.open(str(p), "rb") as f:
            f.seek(5)
            f.read(7)
            f.read(3)
        lfs.info(str(p))
        lfs.ls(str(tmp_path))
    s = meter.stats
    assert (s.requests, s.get_requests, s.head_requests, s.list_requests) == (5, 3, 1, 1)
    assert s.bytes == 110
    assert not {"open", "cat_file", "info", "ls"} & set(vars(lfs))


def test_request_stats_arithmetic_and_round_trip():
    a = RequestStats(requests=5, get_requests=3, head_requests=1, list_requests=1, bytes=100,
                     faults={"error": 2})
    b = RequestStats(requests=2, get_requests=2, bytes=40, faults={"reset": 1})
    assert (a - b).requests == 3 and (a - b).faults == {"error": 2, "reset": -1}
    assert (a + b).bytes == 140 and (a + b).faults_total == 3
    assert RequestStats.from_dict(a.to_dict()) == a


@pytest.mark.parametrize(("method", "path", "kind"), [
    ("GET", "/bucket/key/with/slashes?x-id=GetObject", "get"),
    ("GET", "/bucket?list-type=2&prefix=a", "list"),
    ("GET", "/bucket/", "list"),
    ("GET", "/", "list"),
    ("HEAD", "/bucket/key", "head"),
    ("PUT", "/bucket/key", "other"),
])
def test_classify(method, path, kind):
    assert classify(method, path) == kind


def test_count_requests_rejects_what_it_cannot_count():
    with pytest.raises(TypeError, match="cannot count"), count_requests(object()):
        pass
