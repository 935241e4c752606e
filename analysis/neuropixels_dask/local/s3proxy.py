"""A latency- and fault-injecting HTTP reverse proxy in front of the local S3 server.

Why a proxy and not hooks in moto: a proxy sees exactly what goes over the wire, for *any* client
(s3fs, boto3, h5py through fsspec, remfile over presigned URLs, pynwb), so it is both

* the **fault injector** of the reliability tests (issue 9): a chosen fraction of requests answered
  ``503 SlowDown`` / ``500 InternalError``, connections reset mid-body, bodies truncated (the
  ``Content-Length`` promises more than is sent), and
* the **latency injector** of the benchmarks (issue 8): 20-50 ms per request, like an object store
  seen from a compute node, so that request counts matter as they do in the cloud,
* the **link model** of the benchmarks (issue 15): response bodies paced to a bandwidth per
  connection (one S3 stream: ~90 MB/s) and/or in total (a laptop's Wi-Fi: ~25 MB/s), and
* the **source of truth for request/byte counts** (:class:`RequestStats`): every HTTP request and
  the body bytes it returned, by kind (object GET, HEAD, LIST, other), and
* the **outage** of the reliability tests (issue 16): the store stops, for a while or until told
  (``outage="refuse"``: nothing listens, connections are refused; ``outage="blackhole"``:
  requests are taken and never answered, as behind a dead network path).

Requests are forwarded faithfully (method, raw path and query, headers including ``Host`` and
``Range``, body). SigV4 signs the ``Host`` header; moto does not verify signatures, so forwarding
signed requests unchanged is fine.

The proxy runs either in a background thread of this process (``mode="thread"``: starts instantly,
good for tests) or in its own process (``mode="process"``: it does not compete for this process's
GIL, good for benchmarks). Both expose the same control endpoint (``/_npd_proxy/...``; bucket
names cannot start with ``_`` so it never collides with S3 paths), which is how counters and
settings cross the process boundary.

This module only depends on the standard library and aiohttp (present through aiobotocore/s3fs),
so that it can be loaded by file path in a fresh interpreter without importing the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_npd_proxy"
FAULT_KINDS = ("error", "reset", "truncate")
#: ``FaultConfig.outage``: none, nothing listening (connections refused), nothing answering
OUTAGE_MODES = ("", "refuse", "blackhole")
#: how soon after answering a control request a "refuse" outage stops listening (s): the
#: answer must leave first
REFUSE_AFTER = 0.05

# Headers that describe one hop of the connection, never forwarded (RFC 9110 section 7.6.1).
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "proxy-connection",
})

_ERRORS = (
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
)


# --------------------------------------------------------------------------------------- counters


@dataclass(frozen=True)
class RequestStats:
    """What clients asked of the object store and what it sent back.

    ``get_requests`` counts GETs of *objects* (whole or ranged reads: the data path);
    ``list_requests`` counts GETs of a bucket or the service (ListObjects, ListBuckets);
    ``bytes`` counts response body bytes actually sent to clients (ranged reads count only the
    range). ``faults`` counts injected faults by kind (``error``, ``reset``, ``truncate``);
    a faulted request is still counted as a request, so retries show up as extra requests.
    """

    requests: int = 0
    get_requests: int = 0
    head_requests: int = 0
    list_requests: int = 0
    other_requests: int = 0
    bytes: int = 0
    bytes_in: int = 0
    faults: Mapping[str, int] = field(default_factory=dict)

    @property
    def faults_total(self) -> int:
        return sum(self.faults.values())

    def __sub__(self, other: RequestStats) -> RequestStats:
        """The delta between two snapshots (what happened in between)."""
        kinds = set(self.faults) | set(other.faults)
        return RequestStats(
            **{f.name: getattr(self, f.name) - getattr(other, f.name)
               for f in dataclasses.fields(self) if f.name != "faults"},
            faults={k: self.faults.get(k, 0) - other.faults.get(k, 0) for k in sorted(kinds)},
        )

    def __add__(self, other: RequestStats) -> RequestStats:
        kinds = set(self.faults) | set(other.faults)
        return RequestStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name)
               for f in dataclasses.fields(self) if f.name != "faults"},
            faults={k: self.faults.get(k, 0) + other.faults.get(k, 0) for k in sorted(kinds)},
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["faults"] = dict(self.faults)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RequestStats:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (dict(v) if k == "faults" else int(v)) for k, v in d.items()
                      if k in names})


_CATEGORY_FIELD = {"get": "get_requests", "head": "head_requests", "list": "list_requests",
                   "other": "other_requests"}


class RequestCounter:
    """Thread-safe accumulator of :class:`RequestStats` (one per proxy or per wrapped fs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._n = dict.fromkeys(("requests", *_CATEGORY_FIELD.values(), "bytes", "bytes_in"), 0)
        self._faults: dict[str, int] = {}

    def record(self, category: str, nbytes: int = 0, *, bytes_in: int = 0,
               fault: str | None = None) -> None:
        """Count one request of ``category`` (get/head/list/other) that returned ``nbytes``."""
        self.begin(category, bytes_in)
        self.add(nbytes, fault=fault)

    def begin(self, category: str, bytes_in: int = 0) -> None:
        """Count a request as soon as it arrives (its bytes follow with :meth:`add`), so that a
        client never sees its response before the request is counted."""
        with self._lock:
            self._n["requests"] += 1
            self._n[_CATEGORY_FIELD.get(category, "other_requests")] += 1
            self._n["bytes_in"] += int(bytes_in)

    def add(self, nbytes: int = 0, *, fault: str | None = None) -> None:
        """Count response bytes (before they are written) and an injected fault (before it
        happens) of a request already counted by :meth:`begin`."""
        with self._lock:
            self._n["bytes"] += int(nbytes)
            if fault:
                self._faults[fault] = self._faults.get(fault, 0) + 1

    def snapshot(self) -> RequestStats:
        with self._lock:
            return RequestStats(**self._n, faults=dict(self._faults))

    def reset(self) -> None:
        with self._lock:
            self._reset_locked()


def classify(method: str, path: str) -> str:
    """``get`` / ``head`` / ``list`` / ``other`` for an S3 request (path-style addressing)."""
    method = method.upper()
    if method == "HEAD":
        return "head"
    if method != "GET":
        return "other"
    parts = path.split("?", 1)[0].strip("/").split("/", 1)
    if len(parts) < 2 or not parts[1]:
        return "list"  # GET / (ListBuckets) or GET /bucket (ListObjects)
    return "get"


# ------------------------------------------------------------------------------------ fault plan


@dataclass
class FaultConfig:
    """What the proxy injects. Rates are fractions of requests (0..1), drawn from a seeded RNG.

    ``latency`` is seconds added before each request is forwarded: a number, or ``(low, high)``
    for a uniform draw per request. ``error_rate`` applies to every request whose method is in
    ``fault_methods`` (all when empty); ``reset_rate`` / ``truncate_rate`` apply to object GETs
    that return a body (a HEAD has nothing to truncate), which is where clients must be robust.
    ``deny_access_keys``: requests signed with these access key ids get ``403
    InvalidAccessKeyId`` (moto itself accepts any credentials, so "denied credentials" is
    simulated here). ``bandwidth_per_connection`` / ``bandwidth_total`` (bytes per second, 0:
    no cap) pace response bodies per client connection and across all of them (:class:`_Link`).
    """

    latency: float | tuple[float, float] = 0.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    truncate_rate: float = 0.0
    seed: int = 0
    fault_methods: tuple[str, ...] = ()
    deny_access_keys: tuple[str, ...] = ()
    bandwidth_per_connection: float = 0.0
    bandwidth_total: float = 0.0
    #: "" | "refuse" | "blackhole" (see OUTAGE_MODES); a "refuse" outage also stops the control
    #: endpoint of a process-mode proxy, so give it outage_seconds there
    outage: str = ""
    #: the outage ends by itself after this many seconds (0: when configured off)
    outage_seconds: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.latency, list | tuple):
            lo, hi = (float(x) for x in self.latency)
            if not 0 <= lo <= hi:
                raise ValueError(f"latency range must be 0 <= low <= high, got {self.latency}")
            self.latency = (lo, hi)
        elif float(self.latency) < 0:
            raise ValueError(f"latency must be >= 0, got {self.latency}")
        total = self.error_rate + self.reset_rate + self.truncate_rate
        for name in ("error_rate", "reset_rate", "truncate_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if total > 1:
            raise ValueError(f"fault rates add up to {total} > 1")
        self.fault_methods = tuple(m.upper() for m in self.fault_methods)
        self.deny_access_keys = tuple(self.deny_access_keys)
        for name in ("bandwidth_per_connection", "bandwidth_total"):
            value = float(getattr(self, name) or 0.0)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 bytes/s (0: no cap), got "
                                 f"{getattr(self, name)!r}")
            setattr(self, name, value)
        if self.outage not in OUTAGE_MODES:
            raise ValueError(f"outage must be one of {OUTAGE_MODES}, got {self.outage!r}")
        self.outage_seconds = float(self.outage_seconds or 0.0)
        if not self.outage_seconds >= 0:
            raise ValueError(f"outage_seconds must be >= 0, got {self.outage_seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["latency"] = list(self.latency) if isinstance(self.latency, tuple) else self.latency
        d["fault_methods"] = list(self.fault_methods)
        d["deny_access_keys"] = list(self.deny_access_keys)
        return d


class _Plan:
    """Seeded draws of latency and fault per request (deterministic for a given request order)."""

    def __init__(self, cfg: FaultConfig) -> None:
        self.set(cfg)

    def set(self, cfg: FaultConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)

    def draw(self, method: str, category: str) -> tuple[float, str | None]:
        cfg = self.cfg
        lat = cfg.latency
        delay = self.rng.uniform(*lat) if isinstance(lat, tuple) else float(lat)
        u = self.rng.random()
        if cfg.fault_methods and method.upper() not in cfg.fault_methods:
            return delay, None
        if u < cfg.error_rate:
            return delay, "error"
        u -= cfg.error_rate
        if category == "get":
            if u < cfg.reset_rate:
                return delay, "reset"
            u -= cfg.reset_rate
            if u < cfg.truncate_rate:
                return delay, "truncate"
        return delay, None


# ------------------------------------------------------------------------------------ link model


class _Pace:
    """A virtual clock for one link: bytes go out back to back at ``rate`` bytes/s."""

    __slots__ = ("free_at",)

    def __init__(self) -> None:
        self.free_at = 0.0

    def reserve(self, nbytes: int, rate: float, now: float) -> float:
        """Seconds to wait until ``nbytes`` sent from ``now`` on have left the link."""
        start = max(now, self.free_at)
        self.free_at = start + nbytes / rate
        return self.free_at - now


class _Link:
    """Paces response bodies: per client connection and across all of them.

    Why pacing here and not ``tc``: it needs no privileges, applies only to S3 responses (not to
    the control endpoint or the upstream hop), and the per-connection cap is what one S3 stream
    gives a compute node (~90 MB/s), which no loopback interface models. A connection carries one
    request at a time (HTTP/1.1, no pipelining by these clients), so requests on one keep-alive
    connection share its clock; each chunk waits for both clocks before it is written.
    """

    def __init__(self) -> None:
        self.total = _Pace()
        self.connections: weakref.WeakKeyDictionary[Any, _Pace] = weakref.WeakKeyDictionary()

    async def send(self, nbytes: int, transport: Any, cfg: FaultConfig) -> None:
        if nbytes <= 0 or not (cfg.bandwidth_per_connection or cfg.bandwidth_total):
            return
        loop = asyncio.get_running_loop()
        if cfg.bandwidth_per_connection:
            try:
                pace = self.connections.setdefault(transport, _Pace())
            except TypeError:  # no transport (closed): pace this chunk on its own
                pace = _Pace()
            wait = pace.reserve(nbytes, cfg.bandwidth_per_connection, loop.time())
            if wait > 0:
                await asyncio.sleep(wait)
        if cfg.bandwidth_total:
            wait = self.total.reserve(nbytes, cfg.bandwidth_total, loop.time())
            if wait > 0:
                await asyncio.sleep(wait)


# ---------------------------------------------------------------------------------- aiohttp core


def _error_body(code: str, message: str, path: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><Resource>{path.split('?', 1)[0]}</Resource>"
            f"<RequestId>npd-proxy-fault</RequestId></Error>").encode()


def _access_key(request: Any) -> str | None:
    """The access key id a request is signed with (header or presigned query), if any."""
    auth = request.headers.get("Authorization", "")
    if "Credential=" in auth:
        return auth.split("Credential=", 1)[1].split("/", 1)[0]
    cred = request.query.get("X-Amz-Credential") or request.query.get("AWSAccessKeyId")
    return cred.split("/", 1)[0] if cred else None


def _hard_close(transport: Any, reset: bool) -> None:
    """Close the client connection: an RST (``reset``) or a clean FIN after a short body."""
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


class _ProxyCore:
    """The aiohttp application: forwarding, injection and counting. Runs on one event loop."""

    def __init__(self, upstream: str, cfg: FaultConfig, chunk_size: int = 1 << 18) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = _Plan(cfg)
        self.counter = RequestCounter()
        self.link = _Link()
        self.chunk_size = chunk_size
        self._session: Any = None
        self._runner: Any = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, TCPConnector, web

        # quiet: injected resets make aiohttp log "connection lost" at INFO/ERROR level
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        logging.getLogger("aiohttp.access").setLevel(logging.CRITICAL)
        self._session = ClientSession(
            connector=TCPConnector(limit=512, ttl_dns_cache=None),
            auto_decompress=False, cookie_jar=DummyCookieJar(),
            timeout=ClientTimeout(total=None, sock_connect=10, sock_read=300))
        app = web.Application(client_max_size=1 << 40)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        # a stopping proxy drops in-flight requests at once (clients retry; tests stop quickly)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.25)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._host, self._site = host, site
        self._answering = asyncio.Event()
        self._answering.set()
        self._outage_end: asyncio.TimerHandle | None = None
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _control(self, request: Any) -> Any:
        from aiohttp import web

        what = request.path[len(CONTROL_PREFIX):].strip("/")
        if what == "stats":
            return web.json_response(self.counter.snapshot().to_dict())
        if what == "reset" and request.method == "POST":
            self.counter.reset()
            return web.json_response({"ok": True})
        if what == "config":
            if request.method == "POST":
                new = {**self.plan.cfg.to_dict(), **(await request.json())}
                self.plan.set(FaultConfig(**new))
                # after this answer has left: a "refuse" outage closes this connection too
                asyncio.get_running_loop().call_later(
                    REFUSE_AFTER, lambda: asyncio.ensure_future(self.apply_outage()))
            return web.json_response(self.plan.cfg.to_dict())
        if what == "ping":
            return web.json_response({"ok": True, "pid": os.getpid()})
        return web.json_response({"error": f"unknown control {what!r}"}, status=404)

    # -- outages
    async def apply_outage(self) -> None:
        """Make the listener and held requests match ``plan.cfg.outage`` (on the proxy's loop)."""
        from aiohttp import web

        cfg = self.plan.cfg
        if self._outage_end is not None:
            self._outage_end.cancel()
            self._outage_end = None
        if cfg.outage == "blackhole":
            self._answering.clear()
        else:
            self._answering.set()  # held requests: their connections are dropped now
        if cfg.outage == "refuse" and self._site is not None:
            site, self._site = self._site, None
            await site.stop()  # nothing listens: new connections are refused
            for handler in self._runner.server.connections:  # and open ones are gone
                handler.force_close()
        elif cfg.outage != "refuse" and self._site is None:
            site = web.TCPSite(self._runner, self._host, self.port, backlog=1024,
                               reuse_address=True)
            await site.start()
            self._site = site
        if cfg.outage and cfg.outage_seconds > 0:
            self._outage_end = asyncio.get_running_loop().call_later(
                cfg.outage_seconds, lambda: asyncio.ensure_future(self._end_outage()))

    async def _end_outage(self) -> None:
        # not plan.set(): the fault RNG goes on where it was
        self.plan.cfg = dataclasses.replace(self.plan.cfg, outage="", outage_seconds=0.0)
        await self.apply_outage()

    async def _blackhole(self, request: Any) -> Any:
        """Take the request and never answer; when the outage ends, drop the connection (the
        client then retries on a new one, as after a network path heals)."""
        from aiohttp import web

        self.counter.begin(classify(request.method, request.raw_path))
        self.counter.add(0, fault="outage")
        await self._answering.wait()
        _hard_close(request.transport, reset=True)
        return web.Response(status=503)  # never sent: the connection is gone

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        raw_path = request.raw_path
        if raw_path.startswith(CONTROL_PREFIX):
            return await self._control(request)
        if self.plan.cfg.outage == "blackhole":
            return await self._blackhole(request)
        method = request.method
        category = classify(method, raw_path)
        delay, fault = self.plan.draw(method, category)
        body = await request.read()
        count = self.counter
        # counted before anything is sent back: a client that has its answer sees it counted
        count.begin(category, len(body))
        if delay > 0:
            await asyncio.sleep(delay)
        if self.plan.cfg.deny_access_keys and \
                _access_key(request) in self.plan.cfg.deny_access_keys:
            payload = _error_body("InvalidAccessKeyId", "The AWS Access Key Id you provided "
                                  "does not exist in our records.", raw_path)
            count.add(len(payload))
            return web.Response(status=403, body=payload,
                                headers={"Content-Type": "application/xml"})
        if fault == "error":
            status, code, msg = _ERRORS[self.plan.rng.random() < 0.5]
            payload = _error_body(code, msg, raw_path)
            count.add(len(payload), fault="error")
            return web.Response(status=status, body=payload,
                                headers={"Content-Type": "application/xml", "Retry-After": "0"})
        headers = [(k, v) for k, v in request.headers.items()
                   if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"]
        async with self._session.request(
                method, self.upstream + raw_path, headers=headers,
                data=body if body else None, allow_redirects=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type")) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                lk = k.lower()
                if lk in _HOP_BY_HOP or lk == "content-length":
                    continue
                resp.headers.add(k, v)
            length = up.content_length
            if method == "HEAD" or up.status in (204, 304):
                if length is not None:
                    resp.headers["Content-Length"] = str(length)
                await resp.prepare(request)
                return resp
            if length is not None:
                resp.content_length = length
            cut = None
            if fault in ("reset", "truncate") and up.status in (200, 206) and \
                    length is not None and length >= 2:
                cut = length // 2
            await resp.prepare(request)
            sent = 0
            link, transport = self.link, request.transport
            async for chunk in up.content.iter_chunked(self.chunk_size):
                if cut is not None and sent + len(chunk) >= cut:
                    chunk = chunk[:cut - sent]
                    count.add(len(chunk), fault=fault)
                    if chunk:
                        await link.send(len(chunk), transport, self.plan.cfg)
                        await resp.write(chunk)
                    _hard_close(request.transport, reset=fault == "reset")
                    return resp
                count.add(len(chunk))
                await link.send(len(chunk), transport, self.plan.cfg)
                await resp.write(chunk)
                sent += len(chunk)
            await resp.write_eof()
            return resp


# ------------------------------------------------------------------------------------ public API


def _http_json(url: str, data: Any = None, timeout: float = 10.0) -> Any:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method="GET" if data is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - localhost only
        return json.loads(r.read())


class FaultyS3Proxy:
    """Reverse proxy on 127.0.0.1 in front of ``upstream_endpoint`` with latency, faults, counters.

    >>> with FaultyS3Proxy("http://127.0.0.1:5000", latency=0.02, error_rate=0.05) as p:
    ...     fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": p.endpoint_url}, ...)
    ...     fs.cat("bucket/key"); p.stats().requests          # doctest: +SKIP

    Counters and settings are reachable the same way in both modes (``stats()``, ``reset()``,
    ``configure()``), also from other processes through the control endpoint
    (``GET {endpoint_url}/_npd_proxy/stats``).
    """

    def __init__(self, upstream_endpoint: str, latency: float | tuple[float, float] = 0.0,
                 error_rate: float = 0.0, reset_rate: float = 0.0, truncate_rate: float = 0.0,
                 seed: int = 0, *, fault_methods: Collection[str] = (),
                 deny_access_keys: Collection[str] = (), bandwidth_per_connection: float = 0.0,
                 bandwidth_total: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0, mode: str = "thread", startup_timeout: float = 30.0) -> None:
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
        self.upstream_endpoint = upstream_endpoint.rstrip("/")
        self.config = FaultConfig(latency=latency, error_rate=error_rate, reset_rate=reset_rate,
                                  truncate_rate=truncate_rate, seed=seed,
                                  fault_methods=tuple(fault_methods),
                                  deny_access_keys=tuple(deny_access_keys),
                                  bandwidth_per_connection=bandwidth_per_connection,
                                  bandwidth_total=bandwidth_total)
        self.host, self.mode, self.startup_timeout = host, mode, startup_timeout
        self._requested_port = port
        self.port: int | None = None
        self._core: _ProxyCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle
    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the proxy is not running; call start() or use it as a context "
                               "manager")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The process the proxy runs in (this one in thread mode)."""
        return self._proc.pid if self._proc is not None else os.getpid()

    def start(self) -> FaultyS3Proxy:
        if self.port is not None:
            return self
        if self.mode == "thread":
            self._start_thread()
        else:
            self._start_process()
        return self

    def _start_thread(self) -> None:
        loop = asyncio.new_event_loop()
        core = _ProxyCore(self.upstream_endpoint, self.config)
        ready: dict[str, Any] = {}
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                ready["port"] = loop.run_until_complete(core.start(self.host,
                                                                   self._requested_port))
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                ready["error"] = exc
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(core.stop())
            loop.close()

        t = threading.Thread(target=run, name="npd-s3-proxy", daemon=True)
        t.start()
        if not started.wait(self.startup_timeout):
            raise TimeoutError("the S3 proxy did not start in time")
        if "error" in ready:
            raise RuntimeError(f"the S3 proxy failed to start: {ready['error']!r}")
        self._core, self._loop, self._thread, self.port = core, loop, t, ready["port"]
        self._finalizer = weakref.finalize(self, _stop_thread, loop, t)

    def _start_process(self) -> None:
        cfg = {"upstream": self.upstream_endpoint, "host": self.host,
               "port": self._requested_port, "config": self.config.to_dict()}
        self._proc, self.port = _spawn_child(__name__, "_proxy_child_main", cfg,
                                             self.startup_timeout, "S3 proxy")
        self._finalizer = weakref.finalize(self, _stop_process, self._proc)

    def stop(self) -> None:
        """Stop the proxy (idempotent). Open client connections are closed."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._core = self._loop = self._thread = self._proc = None
        self.port = None

    def __enter__(self) -> FaultyS3Proxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- counters and settings
    def stats(self) -> RequestStats:
        """A snapshot of the counters since start or the last :meth:`reset`."""
        if self._core is not None:
            return self._core.counter.snapshot()
        return RequestStats.from_dict(_http_json(f"{self.endpoint_url}{CONTROL_PREFIX}/stats"))

    def reset(self) -> None:
        """Zero the counters (the fault RNG is not re-seeded; see :meth:`configure`)."""
        if self._core is not None:
            self._core.counter.reset()
        else:
            _http_json(f"{self.endpoint_url}{CONTROL_PREFIX}/reset", {})

    def configure(self, **changes: Any) -> FaultConfig:
        """Change latency/fault settings while running (re-seeds the RNG): e.g. faults on only
        after the test data is in place, or the same server for a fault-free and a faulty run."""
        new = FaultConfig(**{**self.config.to_dict(), **changes})
        if self._core is not None and self._loop is not None:
            core = self._core

            async def apply() -> None:  # on the proxy's loop, done before we return
                core.plan.set(new)
                await core.apply_outage()

            asyncio.run_coroutine_threadsafe(apply(), self._loop).result(10)
        elif self.port is not None:
            _http_json(f"{self.endpoint_url}{CONTROL_PREFIX}/config", new.to_dict())
        self.config = new
        return new


def _stop_thread(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


# --------------------------------------------------------------------- child process plumbing
# Shared by s3server.py: a fresh interpreter runs ``python -m neuropixels_dask.local.child
# MODULE ENTRY CONFIG``, which imports only that module (the package's __init__ registers its
# Dask config defaults and nothing else), so a server starts in well under a second.

_READY = "NPD_CHILD_READY"


def _spawn_child(module: str, entry: str, cfg: dict, timeout: float,
                 what: str) -> tuple[subprocess.Popen, int]:
    """Start ``module.entry(json)`` in a fresh interpreter; wait for its port.

    The child watches its stdin: when this process dies (even by SIGKILL) the pipe closes and the
    child exits, so no server outlives its owner.
    """
    import tempfile

    with tempfile.TemporaryFile() as errlog:  # the child's stderr, shown if start-up fails
        proc = subprocess.Popen(
            # -P: the working directory is not put on sys.path (nothing there shadows a module)
            [sys.executable, "-P", "-m", "neuropixels_dask.local.child", module, entry,
             json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, close_fds=True)
        try:
            port = _read_port(proc, timeout, what)
            if port is None:
                proc.wait(5)
                errlog.seek(0)
                tail = errlog.read()[-3000:].decode(errors="replace")
                raise RuntimeError(f"the {what} exited during start-up (code "
                                   f"{proc.returncode}):\n{tail}")
        except BaseException:
            _stop_process(proc)
            raise
    return proc, port


def _read_port(proc: subprocess.Popen, timeout: float, what: str) -> int | None:
    """The port in the child's ready line; None if it exited first (bounded by ``timeout``)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the {what} did not start within {timeout:.0f} s")
            if not sel.select(min(left, 0.5)):
                if proc.poll() is not None:
                    return None
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return None
            buf += chunk
            *lines, buf = buf.split(b"\n")  # only complete lines
            for line in lines:
                if line.startswith(_READY.encode()):
                    return int(line.split()[1])


def _stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate, wait, kill as a last resort; close our ends of its pipes."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait(timeout)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _child_announce(port: int) -> None:
    """Tell the parent our port; exit at once on SIGTERM/SIGINT or when the parent goes away.

    Exiting immediately (no graceful shutdown) is right for these servers: their state is in
    memory and meant to vanish, temporary files are already unlinked, mounted files are only
    read; a graceful werkzeug/aiohttp shutdown would only add its poll interval and connection
    draining (seconds) to every test that stops a server.
    """
    import signal

    sys.stdout.write(f"{_READY} {port}\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing else may block on a pipe nobody reads

    def watch_parent() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.buffer.read(1):
                pass
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))


def _proxy_child_main(cfg_json: str) -> None:
    cfg = json.loads(cfg_json)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    core = _ProxyCore(cfg["upstream"], FaultConfig(**cfg["config"]))
    port = loop.run_until_complete(core.start(cfg["host"], cfg["port"]))
    _child_announce(port)
    loop.run_forever()
