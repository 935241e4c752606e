"""How the benchmarks measure: wall time, bytes and requests on the wire, peak memory.

* **Time**: ``time.perf_counter`` around exactly the user-visible work (cluster start-up and the
  statistics calls themselves are outside).
* **Bytes and requests**: the counting proxy of :class:`~neuropixels_dask.local.s3server.LocalS3Server`
  (``stats()``): every HTTP request any client in any process made, and the response body bytes
  the server sent, retries included. The source of truth for s3fs, h5py-over-fsspec, remfile over
  presigned URLs and Dask workers alike.
* **Peak memory**: Linux's resident-set high-water mark (``VmHWM``), reset before the measured
  work by writing ``5`` to ``/proc/<pid>/clear_refs``; reported *above the resident size at the
  reset*, for this process and for each Dask worker process (``client.run``). This sees every
  allocation (numpy, HDF5's chunk cache, zlib buffers), unlike ``tracemalloc``, and costs nothing
  while the work runs. Where ``/proc`` is not available, memory is reported as ``n/a``.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

MB = 1e6


@dataclass
class Sample:
    """One repetition of one side of one case."""

    seconds: float
    bytes: int = 0
    requests: int = 0
    #: peak resident memory above the level at the start (bytes); ``None`` when not measured
    peak_bytes: int | None = None
    #: requests by kind (object GETs, HEADs, LISTs)
    get_requests: int = 0
    head_requests: int = 0
    list_requests: int = 0
    #: GETs and bytes of the compute phase alone (row 3: the session open excluded)
    compute_gets: int = 0
    compute_bytes: int = 0
    #: CPU-seconds spent meanwhile by the Dask workers, and by the S3 server + proxy processes
    #: (rows 3 and 7: where the cores went); ``None`` when not measured
    cpu_workers: float | None = None
    cpu_server: float | None = None

    def add(self, other: Sample) -> Sample:
        """The two phases as one (memory: the higher peak)."""
        peaks = [p for p in (self.peak_bytes, other.peak_bytes) if p is not None]
        return Sample(self.seconds + other.seconds, self.bytes + other.bytes,
                      self.requests + other.requests, max(peaks) if peaks else None,
                      self.get_requests + other.get_requests,
                      self.head_requests + other.head_requests,
                      self.list_requests + other.list_requests)

    @property
    def kinds(self) -> str:
        parts = [f"{n} {k}" for n, k in ((self.get_requests, "GET"), (self.head_requests, "HEAD"),
                                         (self.list_requests, "LIST")) if n]
        return ", ".join(parts) or "none"


@dataclass
class Result:
    """All repetitions of one side of one case, e.g. row 2 / "1 s window" / "h5py + fsspec"."""

    row: int
    case: str
    side: str
    samples: list[Sample] = field(default_factory=list)
    #: what this side does, in a few words (shown under the table)
    note: str = ""
    #: other values worth keeping (agreement with the reference, sizes …)
    info: dict[str, Any] = field(default_factory=dict)

    def median(self, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.samples if getattr(s, attr) is not None]
        return float(statistics.median(values)) if values else None

    def spread(self, attr: str) -> tuple[float, float] | None:
        values = [getattr(s, attr) for s in self.samples if getattr(s, attr) is not None]
        return (float(min(values)), float(max(values))) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "case": self.case, "side": self.side, "note": self.note,
                "info": self.info, "samples": [asdict(s) for s in self.samples],
                "median": {a: self.median(a) for a in ("seconds", "bytes", "requests",
                                                       "peak_bytes")}}


@dataclass
class Target:
    """A target of issue 3, 5 or 8 and whether this run met it (``None``: not measured)."""

    issue: int
    text: str
    measured: str
    met: bool | None


@dataclass
class RowReport:
    row: int
    title: str
    results: list[Result] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    #: Markdown tables and paragraphs, in order
    body: list[str] = field(default_factory=list)
    #: headline lines (label, value) for the summary at the top
    headlines: list[tuple[str, str]] = field(default_factory=list)


class Meter:
    """Times the phases of one repetition and counts what each cost on the wire.

    >>> meter = Meter(server)                                   # doctest: +SKIP
    >>> open_file(); meter.split("open"); read(); meter.split("read")
    >>> meter.phases["read"].bytes
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.phases: dict[str, Sample] = {}
        self._start()

    def _start(self) -> None:
        self._stats = self.server.stats()
        self._t = time.perf_counter()

    def split(self, name: str, peak_bytes: int | None = None) -> Sample:
        """Close the phase ``name`` (time and traffic since the previous split)."""
        seconds = time.perf_counter() - self._t
        delta = self.server.stats() - self._stats
        sample = Sample(seconds, int(delta.bytes), int(delta.requests), peak_bytes,
                        int(delta.get_requests), int(delta.head_requests),
                        int(delta.list_requests))
        self.phases[name] = sample
        self._start()  # the statistics call itself is not part of the next phase
        return sample


# ---- memory ---------------------------------------------------------------------------------

def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak() -> int | None:
    """Reset this process's resident high-water mark; the resident size now (``None``: cannot)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status_bytes("VmRSS")


def peak_since(baseline: int | None) -> int | None:
    """Peak resident memory above ``baseline`` since :func:`reset_peak` returned it."""
    if baseline is None:
        return None
    hwm = _status_bytes("VmHWM")
    return None if hwm is None else max(0, hwm - baseline)


def _worker_peak() -> int | None:
    return _status_bytes("VmHWM")


class WorkerPeak:
    """Peak memory of the busiest Dask worker process above its level at the start."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._base = client.run(reset_peak)

    def peak(self) -> int | None:
        hwm = self.client.run(_worker_peak)
        peaks = [h - self._base[w] for w, h in hwm.items()
                 if h is not None and self._base.get(w) is not None]
        return max(peaks) if peaks else None


def usable_cores() -> int:
    """Cores this process may run on (what the workers, the server and the proxy share)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU-seconds of process ``pid`` (default: this one) so far."""
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


class CPUMeter:
    """CPU-seconds the Dask workers and the S3 server + its proxy (if given) spend between
    start and :meth:`stop`: on a machine that runs all of them, this says where the cores
    went."""

    def __init__(self, client: Any, server: Any = None) -> None:
        self.client = client
        proxy = getattr(server, "proxy", None)
        pids = [] if server is None else [server.pid, getattr(proxy, "pid", None)]
        self._pids = [p for p in pids if p is not None and p != os.getpid()]
        self._server0 = self._server()
        self._workers0 = client.run(_cpu_seconds)

    def _server(self) -> float | None:
        values = [_cpu_seconds(p) for p in self._pids]
        return None if any(v is None for v in values) else sum(values)

    def stop(self) -> tuple[float | None, float | None]:
        """``(workers, server + proxy)`` CPU-seconds since the start."""
        now = self.client.run(_cpu_seconds)
        deltas = [now[w] - self._workers0[w] for w in now
                  if now[w] is not None and self._workers0.get(w) is not None]
        workers = float(sum(deltas)) if deltas else None
        server = self._server()
        return workers, (server - self._server0 if None not in (server, self._server0)
                         else None)


# ---- caches ---------------------------------------------------------------------------------

def warm_imports() -> None:
    """Import what the measured work imports, so that no import lands in a memory peak."""
    import h5py  # noqa: F401
    import scipy.signal  # noqa: F401
    import zarr  # noqa: F401

    import neuropixels_dask.analyses  # noqa: F401
    import neuropixels_dask.readers.nwb  # noqa: F401
    import neuropixels_dask.readers.zarr  # noqa: F401


def clear_caches() -> None:
    """Forget open files and cached metadata in this process, so the next read starts cold."""
    import s3fs

    from neuropixels_dask import caching

    caching.clear_all()
    for fs in list(s3fs.S3FileSystem._cache.values()):
        fs.invalidate_cache()
    gc.collect()


def clear_everywhere(client: Any | None) -> None:
    clear_caches()
    if client is not None:
        client.run(clear_caches)


# ---- the machine ----------------------------------------------------------------------------

PACKAGES = ("neuropixels-dask", "numpy", "scipy", "pandas", "xarray", "dask", "distributed",
            "h5py", "hdmf", "pynwb", "zarr", "numcodecs", "fsspec", "s3fs", "remfile", "moto")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "memory_gb": round(mem / 1e9, 1) if mem else None,
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
