"""The local S3 server: its own process, real S3 semantics through s3fs, clean stops, and the
latency / fault injection that the benchmarks and the reliability tests build on."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from neuropixels_dask.local.s3proxy import FaultConfig, _Plan
from neuropixels_dask.local.s3server import LocalS3Server

BUCKET = "npd-s3server-test"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _make_tree(root: Path) -> dict[str, bytes]:
    """A small nested folder: relative path -> content."""
    rng = random.Random(42)
    files = {
        "manifest.json": b'{"a": 1}',
        "sessions.csv": b"id,name\n1,x\n",
        "session_1/session_1.nwb": rng.randbytes(300_000),
        "session_1/probe_7_lfp.nwb": rng.randbytes(7 << 20),  # > one multipart part
        "deep/er/still.bin": b"",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("s3tree")
    return root, _make_tree(root)


@pytest.fixture(scope="module")
def s3(tree):
    """A plain server (no proxy) with the tree uploaded under ``up/``."""
    with LocalS3Server(bucket=BUCKET) as server:
        server.upload(tree[0], "up")
        yield server


@pytest.fixture(scope="module")
def proxied(tree):
    """A server behind the injecting proxy (thread mode: starts instantly); faults off."""
    with LocalS3Server(bucket=BUCKET, proxy=True, proxy_mode="thread") as server:
        server.upload(tree[0], "up")
        yield server


@pytest.fixture
def clean_proxy(proxied):
    """Each test starts with no latency, no faults and zeroed counters, and leaves it so."""
    proxied.configure(latency=0.0, error_rate=0.0, reset_rate=0.0, truncate_rate=0.0, seed=0)
    proxied.reset_stats()
    yield proxied
    proxied.configure(latency=0.0, error_rate=0.0, reset_rate=0.0, truncate_rate=0.0, seed=0)


def test_runs_in_its_own_live_process(s3):
    assert s3.pid != os.getpid()
    assert _alive(s3.pid)
    assert s3.running
    assert s3.endpoint_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(s3.endpoint_url + "/", timeout=5) as r:  # ListBuckets
        assert BUCKET.encode() in r.read()


def test_bucket_exists_and_urls(s3):
    fs = s3.filesystem()
    assert fs.exists(BUCKET)
    assert s3.url() == f"s3://{BUCKET}"
    assert s3.url("/a/b/") == f"s3://{BUCKET}/a/b"


def test_upload_lists_and_reads_back(s3, tree):
    _, files = tree
    fs = s3.filesystem()
    found = {p.split("/up/", 1)[1] for p in fs.find(f"{BUCKET}/up")}
    assert found == set(files)
    for rel, data in files.items():
        assert fs.cat_file(f"{BUCKET}/up/{rel}") == data
    assert fs.info(f"{BUCKET}/up/session_1/probe_7_lfp.nwb")["size"] == 7 << 20


def test_range_reads_are_exact(s3, tree):
    data = tree[1]["session_1/probe_7_lfp.nwb"]
    fs = s3.filesystem()
    path = f"{BUCKET}/up/session_1/probe_7_lfp.nwb"
    for start, end in [(0, 1), (12345, 12345 + 65536), (len(data) - 10, len(data)),
                       (5 << 20, (5 << 20) + 1)]:
        assert fs.cat_file(path, start=start, end=end) == data[start:end]
    with fs.open(path, "rb", block_size=4096, cache_type="none") as f:
        f.seek(1_000_000)
        assert f.read(100) == data[1_000_000:1_000_100]
    # raw HTTP with a suffix range and an open-ended range, as remfile / h5py-ros3 send them
    s3c = _boto3(s3)
    for rng, expect in [("bytes=-5", data[-5:]), (f"bytes={len(data) - 3}-", data[-3:])]:
        out = s3c.get_object(Bucket=BUCKET, Key="up/session_1/probe_7_lfp.nwb", Range=rng)
        assert out["Body"].read() == expect
        assert out["ResponseMetadata"]["HTTPStatusCode"] == 206


def _boto3(server, direct=False):
    import boto3

    so = server.storage_options(direct=direct)
    return boto3.client("s3", endpoint_url=so["client_kwargs"]["endpoint_url"],
                        aws_access_key_id=so["key"], aws_secret_access_key=so["secret"],
                        region_name=server.region)


def test_public_bucket_reads_anonymously_and_private_denies(s3):
    import s3fs

    so = s3.storage_options()
    anon = s3fs.S3FileSystem(anon=True, client_kwargs=so["client_kwargs"],
                             skip_instance_cache=True)
    assert anon.cat_file(f"{BUCKET}/up/manifest.json") == b'{"a": 1}'
    with LocalS3Server(bucket="private-test", public=False, proxy=True,
                       proxy_mode="thread", fault={"deny_access_keys": ["bad-key"]}) as private:
        private.filesystem(direct=True).pipe("private-test/k", b"secret")
        cko = private.storage_options()["client_kwargs"]
        anon = s3fs.S3FileSystem(anon=True, client_kwargs=cko, skip_instance_cache=True)
        with pytest.raises(PermissionError):
            anon.cat_file("private-test/k")
        assert private.filesystem(skip_instance_cache=True).cat_file("private-test/k") == \
            b"secret"
        denied = s3fs.S3FileSystem(key="bad-key", secret="x", client_kwargs=cko,
                                   skip_instance_cache=True)
        with pytest.raises(PermissionError):
            denied.cat_file("private-test/k")


def test_env_reaches_the_server_through_package_config(s3, monkeypatch):
    from neuropixels_dask import config, storage

    env = s3.env(cache_prefix="up")
    assert env["NEUROPIXELS_DASK__CACHE__URL"] == f"s3://{BUCKET}/up/"
    assert env["NEUROPIXELS_DASK__S3__ANON"] == "false"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    config.refresh()
    try:
        url = config.get("cache.url")
        assert url == f"s3://{BUCKET}/up/"
        fs, path = storage.filesystem(url)
        assert fs.cat_file(path.rstrip("/") + "/manifest.json") == b'{"a": 1}'
    finally:
        monkeypatch.undo()
        config.refresh()


def test_mounted_folder_is_served_in_place_and_never_written(tree):
    root, files = tree
    lfp = root / "session_1" / "probe_7_lfp.nwb"
    before = (hashlib.sha256(lfp.read_bytes()).hexdigest(), lfp.stat().st_mtime_ns)
    with LocalS3Server(bucket="mounted", mounts={"cache": root}) as server:
        fs = server.filesystem()
        assert {p.split("/cache/", 1)[1] for p in fs.find("mounted/cache")} == set(files)
        data = files["session_1/probe_7_lfp.nwb"]
        assert fs.cat_file("mounted/cache/session_1/probe_7_lfp.nwb",
                           start=777, end=777 + 4096) == data[777:777 + 4096]
        assert fs.cat_file("mounted/cache/sessions.csv") == files["sessions.csv"]
        assert fs.cat_file("mounted/cache/deep/er/still.bin") == b""
        # an overwrite replaces the object in the server, never the file on disk
        fs.pipe("mounted/cache/session_1/probe_7_lfp.nwb", b"new")
        assert fs.cat_file("mounted/cache/session_1/probe_7_lfp.nwb") == b"new"
    assert (hashlib.sha256(lfp.read_bytes()).hexdigest(), lfp.stat().st_mtime_ns) == before


def test_stop_leaves_no_process_and_is_idempotent():
    server = LocalS3Server(bucket="stop-test", proxy=True, proxy_mode="process").start()
    pid, proxy_pid = server.pid, server.proxy.pid
    assert proxy_pid not in (pid, os.getpid()) and _alive(proxy_pid)
    server.stop()
    server.stop()
    assert server.process.returncode is not None
    assert not _alive(pid) and not _alive(proxy_pid)
    with pytest.raises(RuntimeError, match="not running"):
        server.endpoint_url  # noqa: B018


def test_exception_inside_the_block_stops_the_server():
    with pytest.raises(ZeroDivisionError), LocalS3Server(bucket="boom-test") as server:
        pid = server.pid
        1 / 0  # noqa: B018
    assert not _alive(pid)


def test_server_dies_with_its_owner():
    """A SIGKILLed owner cannot clean up: the child notices its stdin closing and exits."""
    code = (
        "import os\n"
        "from neuropixels_dask.local import s3server as m\n"
        "s = m.LocalS3Server(bucket='orphan-test').start()\n"
        "print(s.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    owner = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60)
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    assert _wait_gone(int(owner.stdout.split()[0]))


def test_serve_forever_prints_how_to_connect_and_stops_on_ctrl_c(tree):
    root, files = tree
    code = ("from neuropixels_dask.local.s3server import serve_forever\n"
            f"serve_forever(cache_dir={str(root)!r}, prefix='ecephys-cache', port=0,"
            " bucket='serve-test')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "NEUROPIXELS_DASK__S3__ENDPOINT_URL=http://127.0.0.1:" in text, text
        assert "NEUROPIXELS_DASK__CACHE__URL=s3://serve-test/ecephys-cache/" in text
        assert '"endpoint_url": "http://127.0.0.1:' in text
        endpoint = text.split("NEUROPIXELS_DASK__S3__ENDPOINT_URL=", 1)[1].split()[0]
        import s3fs

        fs = s3fs.S3FileSystem(key="testing", secret="testing", skip_instance_cache=True,
                               client_kwargs={"endpoint_url": endpoint,
                                              "region_name": "us-east-1"})
        assert fs.cat_file("serve-test/ecephys-cache/manifest.json") == files["manifest.json"]
        server_pid = int(text.split("pid ", 1)[1].split(")", 1)[0])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert _wait_gone(server_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- latency, faults


def test_latency_is_added_per_request(clean_proxy):
    fs = clean_proxy.filesystem(skip_instance_cache=True)
    path = f"{BUCKET}/up/manifest.json"
    fs.cat_file(path)  # connection set up
    n, latency = 8, 0.05
    t = time.perf_counter()
    for _ in range(n):
        fs.cat_file(path, start=0, end=4)
    base = time.perf_counter() - t
    clean_proxy.configure(latency=latency)
    t = time.perf_counter()
    for _ in range(n):
        fs.cat_file(path, start=0, end=4)
    slow = time.perf_counter() - t
    assert slow >= n * latency
    assert slow < n * latency + base + 1.0
    # a range draws per request
    clean_proxy.configure(latency=(0.02, 0.03))
    t = time.perf_counter()
    for _ in range(n):
        fs.cat_file(path, start=0, end=4)
    assert n * 0.02 <= time.perf_counter() - t < n * 0.03 + base + 1.0


def test_fault_plan_rates_are_seeded_and_accurate():
    cfg = FaultConfig(error_rate=0.05, reset_rate=0.03, truncate_rate=0.02, seed=7)
    plan_a, plan_b = _Plan(cfg), _Plan(cfg)
    a = [plan_a.draw("GET", "get")[1] for _ in range(20000)]
    b = [plan_b.draw("GET", "get")[1] for _ in range(20000)]
    assert a == b
    for kind, rate in [("error", 0.05), ("reset", 0.03), ("truncate", 0.02)]:
        assert abs(a.count(kind) / len(a) - rate) < 0.006, kind
    # a HEAD has no body to cut: only errors apply
    heads = [plan_a.draw("HEAD", "head")[1] for _ in range(5000)]
    assert set(heads) <= {None, "error"}
    with pytest.raises(ValueError):
        FaultConfig(error_rate=0.7, reset_rate=0.5)


@pytest.mark.parametrize("kind", ["error_rate", "reset_rate", "truncate_rate"])
def test_faults_are_injected_and_s3fs_retries_to_the_right_bytes(clean_proxy, tree, kind):
    data = tree[1]["session_1/probe_7_lfp.nwb"]
    path = f"{BUCKET}/up/session_1/probe_7_lfp.nwb"
    clean_proxy.configure(**{kind: 0.2}, seed=11)
    fs = clean_proxy.filesystem(skip_instance_cache=True)
    rng = random.Random(0)
    for _ in range(12):
        start = rng.randrange(0, len(data) - 200_000)
        assert fs.cat_file(path, start=start, end=start + 200_000) == data[start:start + 200_000]
    stats = clean_proxy.stats()
    fault = kind.removesuffix("_rate")
    assert stats.faults.get(fault, 0) >= 1
    assert stats.faults_total == stats.faults[fault]
    # every fault cost exactly one retry (no other requests were made)
    assert stats.get_requests == 12 + stats.faults_total


def test_link_model_paces_bodies_per_connection_and_in_total(clean_proxy, tree):
    """The link model: one stream is capped per connection; concurrent streams share the total
    cap. Lower bounds only (pacing can only make a transfer slower than the cap allows)."""
    import concurrent.futures

    data = tree[1]["session_1/probe_7_lfp.nwb"]
    path = f"{BUCKET}/up/session_1/probe_7_lfp.nwb"
    n, rate = 1 << 20, 8e6  # 1 MiB at 8 MB/s: at least 0.13 s

    def get(fs, start: int) -> bytes:
        return fs.cat_file(path, start=start, end=start + n)

    fs = clean_proxy.filesystem(skip_instance_cache=True)
    try:
        clean_proxy.configure(bandwidth_per_connection=rate)
        t = time.perf_counter()
        assert get(fs, 0) == data[:n]
        assert time.perf_counter() - t >= n / rate
        clean_proxy.configure(bandwidth_per_connection=0, bandwidth_total=rate)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two connections at once
            t = time.perf_counter()
            got = list(pool.map(lambda s: get(clean_proxy.filesystem(skip_instance_cache=True),
                                              s), [0, n]))
            assert time.perf_counter() - t >= 2 * n / rate
        assert got == [data[:n], data[n:2 * n]]
        assert clean_proxy.stats().bytes == 3 * n
        with pytest.raises(ValueError, match="bandwidth_total"):
            FaultConfig(bandwidth_total=-1)
        with pytest.raises(ValueError, match="per_connection"):
            LocalS3Server(bandwidth={"per_conection": 1e6})
    finally:
        clean_proxy.configure(bandwidth_per_connection=0, bandwidth_total=0)
