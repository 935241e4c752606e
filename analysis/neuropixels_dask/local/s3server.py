"""A real S3 server on 127.0.0.1, in its own process: tests, the demo and benchmarks run on it.

Why moto's server, in a child process: it speaks the S3 REST API well enough that s3fs, boto3,
h5py-through-fsspec and remfile reach it exactly as they reach AWS (endpoint URL aside), it installs
from PyPI with no binaries, and a separate process means its request handling never competes with
the code under test for the GIL (and a crash or hang of either side is contained).

Two things moto does not do well out of the box are fixed *inside the server process*:

* **Ranged reads of large objects.** moto materialises the whole object for every GET and then
  slices it, so 100 reads of 64 KB from a 2 GB file copy 200 GB. The child patches the GET path so
  that a ``Range`` request reads only those bytes (``os.pread`` on the object's backing file).
* **Loading multi-GB caches.** Uploading through moto's multipart path holds the object in memory
  twice. ``mounts={prefix: local_dir}`` instead registers the files of a local folder as objects
  that moto serves *in place* (opened read-only, never copied, never modified). ``upload()`` is
  the real-S3 path (PUT / multipart over HTTP) for small data and for testing writes.

Latency and fault injection (issues 8 and 9) and request/byte counting live in a reverse proxy
(:mod:`neuropixels_dask.local.s3proxy`); with ``latency=``, ``fault=`` or ``proxy=True`` the server's
``endpoint_url`` is the proxy's and ``direct_endpoint_url`` bypasses it (setup, uploads).

Moto keeps objects in memory / temporary files: nothing persists after ``stop()`` (mounted files
are only read).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import s3proxy as _proxy

DEFAULT_BUCKET = "allen-brain-observatory"
DEFAULT_REGION = "us-east-1"
# moto accepts any credentials; these are the conventional dummies (never real secrets).
ACCESS_KEY = "testing"
SECRET_KEY = "testing"

__all__ = ["DEFAULT_BUCKET", "LocalS3Server", "serve_forever"]


class LocalS3Server:
    """An S3-compatible server (moto) in a child process on 127.0.0.1, with one bucket.

    >>> with LocalS3Server(bucket="test-bucket") as s3:              # doctest: +SKIP
    ...     s3.upload("/tmp/cache", "ecephys-cache")
    ...     fs = s3.filesystem()
    ...     fs.ls(s3.url("ecephys-cache"))

    Parameters
    ----------
    bucket: created at start.
    port: port of ``endpoint_url`` (the proxy's when there is one); 0 picks a free one.
    latency: seconds added per request by the proxy; ``(low, high)`` draws uniformly.
    fault: injected faults: a total rate (split evenly over 503/500 errors, connection resets
        and truncated bodies) or a mapping of :class:`~neuropixels_dask.s3proxy.FaultConfig`
        fields (``error_rate``, ``reset_rate``, ``truncate_rate``, ``seed``, ``fault_methods``).
    bandwidth: the link model of the proxy, bytes/s: ``{"per_connection": 90e6}`` (one S3
        stream seen from a compute node), ``{"total": 25e6}`` (a laptop's Wi-Fi), or both;
        ``configure(bandwidth_per_connection=…, bandwidth_total=…)`` changes it while running.
    proxy: put the counting proxy in front even without latency/faults (for ``stats()``).
        ``None`` means: only when ``latency`` or ``fault`` is given.
    proxy_mode: ``"process"`` (own process: no GIL sharing, for benchmarks) or ``"thread"``.
    mounts: ``{key_prefix: local_dir}`` served in place, read-only, without copying.
    cache_prefix: key prefix of the ecephys cache; ``env()`` then also sets the cache URL.
    public: give the bucket a public-read policy, like the Allen bucket, so anonymous clients
        (``anon=True``, the package default) can read it too. ``False``: unsigned reads get 403.
    """

    def __init__(self, bucket: str = DEFAULT_BUCKET, *, port: int = 0, host: str = "127.0.0.1",
                 region: str = DEFAULT_REGION, latency: float | tuple[float, float] = 0.0,
                 fault: float | Mapping[str, Any] | None = None, seed: int = 0,
                 proxy: bool | None = None, proxy_mode: str = "process",
                 mounts: Mapping[str, str | os.PathLike] | None = None,
                 cache_prefix: str | None = None, public: bool = True,
                 bandwidth: Mapping[str, float] | None = None,
                 startup_timeout: float = 60.0) -> None:
        self.bucket = bucket
        self.public = public
        self.host = host
        self.region = region
        self.cache_prefix = cache_prefix
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._fault_kwargs = {**_fault_kwargs(latency, fault, seed), **_bandwidth_kwargs(bandwidth)}
        wants_proxy = bool(self._fault_kwargs.get("latency")) or any(
            self._fault_kwargs.get(k)
            for k in ("error_rate", "reset_rate", "truncate_rate", "deny_access_keys",
                      "bandwidth_per_connection", "bandwidth_total"))
        self._use_proxy = wants_proxy if proxy is None else bool(proxy)
        if wants_proxy and proxy is False:
            raise ValueError("latency/fault injection needs the proxy (proxy=False given)")
        self.proxy_mode = proxy_mode
        self.mounts = {k.strip("/"): os.fspath(v) for k, v in (mounts or {}).items()}
        for d in self.mounts.values():
            if not os.path.isdir(d):
                raise NotADirectoryError(f"cannot mount {d!r}: not a directory")
        self.proxy: _proxy.FaultyS3Proxy | None = None
        self._proc: Any = None
        self._port: int | None = None
        self._finalizer: weakref.finalize | None = None

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> LocalS3Server:
        """Start the server process (and proxy), wait until S3 answers, create the bucket."""
        if self._port is not None:
            return self
        cfg = {"host": self.host, "port": 0 if self._use_proxy else self._requested_port,
               "bucket": self.bucket, "region": self.region, "mounts": self.mounts,
               "public": self.public}
        proc, port = _proxy._spawn_child(__name__, "_server_child_main", cfg,
                                         self.startup_timeout, "S3 server")
        self._proc, self._port = proc, port
        self._finalizer = weakref.finalize(self, _proxy._stop_process, proc)
        try:
            _wait_http(self.direct_endpoint_url, self.startup_timeout)
            if self._use_proxy:
                self.proxy = _proxy.FaultyS3Proxy(
                    self.direct_endpoint_url, host=self.host, port=self._requested_port,
                    mode=self.proxy_mode, startup_timeout=self.startup_timeout,
                    **self._fault_kwargs).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop proxy and server (idempotent): terminate, wait, kill as a last resort."""
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._port = None  # self._proc stays: its returncode tells how it ended

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._port is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """Process id of the S3 server (not this process)."""
        self._require()
        return self._proc.pid

    @property
    def process(self) -> Any:
        """The ``subprocess.Popen`` of the server (kept after ``stop()``: ``poll()``, ``pid``)."""
        return self._proc

    def _require(self) -> None:
        if self._port is None:
            raise RuntimeError("the S3 server is not running; call start() or use it as a "
                               "context manager")

    # ------------------------------------------------------------------------------- addresses
    @property
    def direct_endpoint_url(self) -> str:
        """moto itself, bypassing the proxy: no latency, no faults, not counted."""
        self._require()
        return f"http://{self.host}:{self._port}"

    @property
    def endpoint_url(self) -> str:
        """What clients should use: the proxy when there is one, else moto."""
        if self.proxy is not None:
            return self.proxy.endpoint_url
        return self.direct_endpoint_url

    def url(self, prefix: str = "") -> str:
        """``s3://bucket/prefix`` (no trailing slash; ``s3://bucket`` for an empty prefix)."""
        prefix = prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def storage_options(self, direct: bool = False) -> dict[str, Any]:
        """fsspec/s3fs ``storage_options`` that reach this server (as with AWS, endpoint aside)."""
        endpoint = self.direct_endpoint_url if direct else self.endpoint_url
        return {"key": ACCESS_KEY, "secret": SECRET_KEY, "anon": False,
                "client_kwargs": {"endpoint_url": endpoint, "region_name": self.region}}

    def env(self, cache_prefix: str | None = None) -> dict[str, str]:
        """Environment variables that point this package (and plain boto3/s3fs) at the server.

        ``NEUROPIXELS_DASK__CACHE__URL`` is included when a cache prefix is given here or to the
        constructor. Pass the dict to subprocesses / Dask workers (``env=``) or
        ``monkeypatch.setenv`` it, then ``dask.config.refresh()``.
        """
        env = {
            "NEUROPIXELS_DASK__S3__ENDPOINT_URL": self.endpoint_url,
            "NEUROPIXELS_DASK__S3__ANON": "false",
            "NEUROPIXELS_DASK__S3__REGION": self.region,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": self.region,
            # botocore >= 1.31 honours this for every S3 client, also ones we do not configure
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }
        prefix = cache_prefix if cache_prefix is not None else self.cache_prefix
        if prefix is not None:
            env["NEUROPIXELS_DASK__CACHE__URL"] = self.url(prefix) + "/"
        return env

    def filesystem(self, direct: bool = False, **kwargs: Any) -> Any:
        """An ``s3fs.S3FileSystem`` on this server (extra kwargs go to s3fs, e.g. ``retries``)."""
        import s3fs

        return s3fs.S3FileSystem(**{**self.storage_options(direct=direct), **kwargs})

    # ------------------------------------------------------------------------------------ data
    def upload(self, local_dir: str | os.PathLike, prefix: str = "", *,
               direct: bool = True) -> list[str]:
        """Upload a local folder recursively under ``prefix`` (relative paths kept); keys back.

        Goes straight to moto (``direct=True``: setup is neither delayed, faulted nor counted).
        Big files go up as concurrent multipart uploads (s3fs ``put``). For multi-GB caches
        prefer ``mounts=`` (served in place, no copy).
        """
        root = Path(local_dir)
        if not root.is_dir():
            raise NotADirectoryError(f"cannot upload {root}: not a directory")
        fs = self.filesystem(direct=direct, skip_instance_cache=True)
        base = f"{self.bucket}/{prefix.strip('/')}".rstrip("/")
        lpaths, rpaths = [], []
        for p in sorted(root.rglob("*")):
            if p.is_file():
                lpaths.append(str(p))
                rpaths.append(f"{base}/{p.relative_to(root).as_posix()}")
        if lpaths:
            fs.put(lpaths, rpaths)
        return rpaths

    # ------------------------------------------------------------------------ proxy passthrough
    def _require_proxy(self) -> _proxy.FaultyS3Proxy:
        if self.proxy is None:
            raise RuntimeError("request counting and fault settings need the proxy: start the "
                               "server with proxy=True (or latency=/fault=)")
        return self.proxy

    def stats(self) -> _proxy.RequestStats:
        """Requests and bytes seen by the proxy since start / the last ``reset_stats()``."""
        return self._require_proxy().stats()

    def reset_stats(self) -> None:
        self._require_proxy().reset()

    def configure(self, **changes: Any) -> _proxy.FaultConfig:
        """Change latency / fault rates while running (see ``FaultyS3Proxy.configure``)."""
        return self._require_proxy().configure(**changes)


def _fault_kwargs(latency: Any, fault: float | Mapping[str, Any] | None,
                  seed: int) -> dict[str, Any]:
    kw: dict[str, Any] = {"latency": latency, "seed": seed}
    if fault is None:
        return kw
    if isinstance(fault, int | float):
        share = float(fault) / 3
        kw.update(error_rate=share, reset_rate=share, truncate_rate=share)
        return kw
    allowed = {"outage", "outage_seconds",
               "error_rate", "reset_rate", "truncate_rate", "seed", "fault_methods", "latency",
               "deny_access_keys"}
    unknown = set(fault) - allowed
    if unknown:
        raise ValueError(f"unknown fault settings {sorted(unknown)}; use {sorted(allowed)}")
    kw.update(fault)
    return kw


def _bandwidth_kwargs(bandwidth: Mapping[str, float] | None) -> dict[str, float]:
    """``{"per_connection": b, "total": b}`` → the proxy's ``bandwidth_*`` settings."""
    if not bandwidth:
        return {}
    unknown = set(bandwidth) - {"per_connection", "total"}
    if unknown:
        raise ValueError(f"unknown bandwidth setting(s) {sorted(unknown)}; use 'per_connection' "
                         "and/or 'total' (bytes per second)")
    return {f"bandwidth_{k}": float(v) for k, v in bandwidth.items()}


def _wait_http(endpoint: str, timeout: float) -> None:
    """Bounded wait until the server answers an HTTP request (any status counts as up)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(endpoint + "/", timeout=2):  # noqa: S310 - localhost
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"S3 server at {endpoint} did not answer within {timeout:.0f} s: {last}")


# ------------------------------------------------------------------------------ CLI: s3 serve


def serve_forever(cache_dir: str | os.PathLike | None = None, prefix: str = "ecephys-cache",
                  port: int = 0, bucket: str = DEFAULT_BUCKET, *, copy: bool = False,
                  latency: float = 0.0, host: str = "127.0.0.1") -> None:
    """``neuropixels-dask s3 serve``: serve (a cache folder) until Ctrl-C, then stop cleanly.

    The cache folder is served in place (``copy=False``: instant, no memory or disk cost, the
    files must not change while served) or uploaded through the S3 API (``copy=True``).
    Prints the endpoint, the environment variables and the ``storage_options`` a user needs.
    """
    mounts = {}
    if cache_dir is not None and not copy:
        mounts[prefix] = os.fspath(cache_dir)
    server = LocalS3Server(bucket=bucket, port=port, host=host, latency=latency, mounts=mounts,
                           cache_prefix=prefix if cache_dir is not None else None)
    with server:
        if cache_dir is not None and copy:
            n = len(server.upload(cache_dir, prefix))
            what = f"uploaded {n} files from {cache_dir}"
        elif cache_dir is not None:
            what = f"serving {cache_dir} in place"
        else:
            what = "empty bucket"
        env = server.env()
        lines = [
            f"S3 server (moto, pid {server.pid}) at {server.endpoint_url}: {what}",
            f"bucket: {server.url()}" + (f"   cache: {server.url(prefix)}/" if cache_dir else ""),
            "",
            "environment (shell):",
            *[f"  export {k}={v}" for k, v in env.items()],
            "",
            "storage_options (Python / fsspec):",
            "  " + json.dumps(server.storage_options()),
            "",
            "Ctrl-C stops the server (objects live in memory; nothing is kept).",
        ]
        print("\n".join(lines), flush=True)
        try:
            while server.running:
                time.sleep(0.5)
            print("the S3 server process exited", file=sys.stderr)
        except KeyboardInterrupt:
            print("\nstopping the S3 server", flush=True)


# ------------------------------------------------------------------- inside the server process


def _patch_moto_ranged_get() -> None:
    """Make moto serve ``Range`` GETs by reading only the range from the object's backing file.

    moto's GET builds ``key.value`` (the whole object) and ``_handle_range_header`` slices it.
    During a ranged GET we hand out a lazy stand-in that knows the length and reads a slice on
    demand; anything that would need the full bytes (a leaked stand-in) is materialised.
    """
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    tls = threading.local()
    orig_value = FakeKey.value

    class _LazyValue:
        __slots__ = ("key", "size")

        def __init__(self, key: Any) -> None:
            self.key = key
            self.size = int(key.contentsize)

        def __len__(self) -> int:
            return self.size

        def __bool__(self) -> bool:
            return self.size > 0

        def __getitem__(self, s: slice) -> bytes:
            if not isinstance(s, slice):
                raise TypeError("lazy S3 value supports slices only")
            start, stop, step = s.indices(self.size)
            if step != 1:
                return self.materialise()[s]
            return _read_range(self.key, start, stop)

        def materialise(self) -> bytes:
            return orig_value.fget(self.key)

    def value(self: Any) -> Any:
        if getattr(tls, "lazy", False):
            return _LazyValue(self)
        return orig_value.fget(self)

    FakeKey.value = property(value, orig_value.fset)  # type: ignore[method-assign]
    orig_key_response = S3Response.key_response
    passive = ("versionid", "x-id", "x-amz-", "response-", "awsaccesskeyid", "signature",
               "expires")

    def key_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        query = full_url.split("?", 1)[1] if "?" in full_url else ""
        names = [p.split("=", 1)[0].lower() for p in query.split("&") if p]
        lazy = (request.method == "GET" and bool(request.headers.get("range"))
                and all(n.startswith(passive) for n in names))
        if not lazy:
            return orig_key_response(self, request, full_url, headers)
        tls.lazy = True
        try:
            status, hdrs, body = orig_key_response(self, request, full_url, headers)
        finally:
            tls.lazy = False
        if isinstance(body, _LazyValue):
            body = body.materialise()
        return status, hdrs, body

    S3Response.key_response = key_response  # type: ignore[method-assign]


def _read_range(key: Any, start: int, stop: int) -> bytes:
    """Bytes ``[start, stop)`` of a moto key without reading the rest of it."""
    n = stop - start
    if n <= 0:
        return b""
    buf = key._value_buffer
    f = getattr(buf, "_file", buf)  # SpooledTemporaryFile: BytesIO, or a real file once rolled
    if isinstance(f, io.BytesIO):
        with key.lock, f.getbuffer() as mv, mv[start:stop] as part:
            return bytes(part)
    with key.lock:
        if f.writable():
            f.flush()  # moto wrote the value through a buffered file
        fd = f.fileno()
    out = bytearray()
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), start + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _mount(backend: Any, bucket: str, prefix: str, local_dir: str) -> int:
    """Register every file under ``local_dir`` as ``prefix/relpath``, served from the file."""
    n = 0
    root = os.path.abspath(local_dir)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path):
                continue
            st = os.stat(path)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            key_name = f"{prefix}/{rel}" if prefix else rel
            # A content hash would read GBs at start-up; like a multipart ETag, this one only
            # promises to change when the file does.
            etag = hashlib.md5(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode(),
                               usedforsecurity=False).hexdigest() + "-1"
            key = backend.put_object(bucket, key_name, b"", etag=etag, disable_notification=True)
            key._value_buffer.close()
            key._value_buffer = open(path, "rb")  # noqa: SIM115 - owned by the key (dispose)
            key.contentsize = st.st_size
            n += 1
    return n


def _server_child_main(cfg_json: str) -> None:
    """Entry point of the server process (see ``_proxy._spawn_child``)."""
    import logging

    cfg = json.loads(cfg_json)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request log lines
    _patch_moto_ranged_get()

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.s3.models import s3_backends
    from werkzeug.serving import make_server

    class S3Only(DomainDispatcherApplication):
        """Route every request to S3: no per-request service sniffing, and unsigned requests
        (anonymous reads, presigned URLs) land in S3 too."""

        def get_application(self, environ: dict[str, Any]) -> Any:
            with self.lock:
                app = self.app_instances.get("s3")
                if app is None:
                    app = self.app_instances["s3"] = self.create_app("s3")
                return app

    srv = make_server(cfg["host"], int(cfg["port"]), S3Only(create_backend_app), threaded=True,
                      request_handler=MotoRequestHandler)
    port = srv.server_port
    os.environ["MOTO_PORT"] = str(port)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(cfg["bucket"], cfg["region"])
    if cfg.get("public"):
        policy = {"Version": "2012-10-17", "Statement": [{
            "Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
            # moto checks HEAD against "s3:HeadObject" (AWS: covered by s3:GetObject)
            "Action": ["s3:GetObject", "s3:HeadObject"],
            "Resource": [f"arn:aws:s3:::{cfg['bucket']}/*"]}]}
        backend.put_bucket_policy(cfg["bucket"], json.dumps(policy).encode())
    for prefix, local_dir in cfg["mounts"].items():
        _mount(backend, cfg["bucket"], prefix, local_dir)

    _proxy._child_announce(port)
    srv.serve_forever()
