"""Peak memory of one Dask worker at the chart's default size computing the whole-probe LFP
spectrum of a real-size probe (92 channels, ~2.7 h: the published files' long recordings).

    python -m benchmarks.memory_spectrum [--hours 2.7] [--format nwb,zarr] [--data-dir DIR]

1. **Data.** A synthetic cache of one session with one probe of that length (the ``bench``
   preset's proportions, stretched; LFP on every 3rd channel: 92), generated once into
   ``--data-dir`` (``benchmarks/data/``, git-ignored) and reused; its Zarr copy beside it with
   ``convert`` when ``zarr`` is asked for. Served in place by the local S3 server.
2. **The worker.** A ``LocalCluster`` of one worker process with the chart's defaults
   (``dask.worker.memory.default`` GiB, ``dask.worker.cores.default`` ×
   ``dask.worker.threadsPerCore`` threads; read from the chart's ``values.yaml``) under a nanny that kills it above 95 % of that, as on the hub.
3. **The measurement.** The worker's resident high-water mark (``VmHWM``, reset at the start,
   exact) while ``lfp_spectra(session, probe)`` computes, plus its resident size sampled every
   50 ms (the same peak, seen from outside, and a check that the reset worked).

Results: ``benchmarks/results/<date>-memory-spectrum.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from . import measure

HERE = Path(__file__).resolve().parent
#: the published files' long recordings: ~9,700 s (e.g. 12,028,993 samples at ~1250 Hz)
HOURS = 2.7
#: the ``bench`` preset's recording length (s), whose proportions are stretched to ``--hours``
BENCH_SECONDS = 4800.0
#: LFP on every 3rd channel: the generator keeps LFP below the brain surface, which gives 92
#: channels (every 4th gives 70); the published probes have 70–96, the brief's real size 95
LFP_STRIDE = 3
#: how often the worker's resident size is sampled from outside (s)
SAMPLE_EVERY = 0.05
GIB = 2**30


def chart_worker() -> tuple[float, int]:
    """``(memory GiB, threads)`` a worker gets on the hub when the user does not choose (the
    chart's gateway config: threads = cores × threadsPerCore, at least 1)."""
    import math

    from neuropixels_dask.local.resources import chart_dir

    values = yaml.safe_load((chart_dir() / "values.yaml").read_text())
    worker = values["dask"]["worker"]
    threads = max(1, math.ceil(float(worker["cores"]["default"])
                               * float(worker.get("threadsPerCore", 1))))
    return float(worker["memory"]["default"]), threads


def make_cache(data_dir: Path, hours: float) -> Path:
    """One session, one probe with LFP of ``hours`` (generated once, then reused)."""
    from neuropixels_dask.local.synth import generate_cache
    from neuropixels_dask.local.synth.presets import PRESETS

    bench = PRESETS["bench"]
    k = hours * 3600.0 / BENCH_SECONDS
    path = data_dir / f"memory-{hours:g}h"
    generate_cache(str(path), "bench", n_sessions=1, n_probes=1, probe_without_lfp=False,
                   lfp_channel_stride=LFP_STRIDE,
                   spontaneous_s=bench.spontaneous_s * k,
                   n_drifting_gratings=round(bench.n_drifting_gratings * k),
                   n_flashes=round(bench.n_flashes * k),
                   n_static_gratings=round(bench.n_static_gratings * k),
                   n_natural_scenes=round(bench.n_natural_scenes * k), progress=True)
    return path


def zarr_copy(nwb: Path) -> Path:
    from neuropixels_dask.convert import convert

    dst = nwb.with_name(nwb.name + "-zarr")
    convert(str(nwb), str(dst), progress=True)
    return dst


class RSSSampler(threading.Thread):
    """The largest resident size of process ``pid`` seen every ``SAMPLE_EVERY`` seconds."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return


def _hwm() -> int | None:
    return measure._status_bytes("VmHWM")


def measure_one(server: Any, prefix: str, memory_gib: float, threads: int) -> dict[str, Any]:
    """One cold whole-probe spectrum on a fresh one-worker cluster."""
    import os

    from distributed import Client, LocalCluster

    import neuropixels_dask as npd
    from neuropixels_dask.analyses import lfp_spectra

    so = server.storage_options()
    with LocalCluster(n_workers=1, threads_per_worker=threads, processes=True,
                      memory_limit=int(memory_gib * GIB), dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        client.run(measure.warm_imports)
        session_id = int(npd.open_cache(server.url(prefix), **so).get_session_table().index[0])
        session = npd.open_cache(server.url(prefix), **so).get_session_data(session_id)
        probe = int(session.probes.index[session.probes["has_lfp_data"].astype(bool)][0])
        src = session.lfp_source(probe)
        psd = lfp_spectra(session, probe)
        (pid,) = client.run(os.getpid).values()
        base = next(iter(client.run(measure.reset_peak).values()))
        sampler = RSSSampler(pid)
        sampler.start()
        t0 = time.perf_counter()
        result = psd.compute()
        seconds = time.perf_counter() - t0
        sampler.stopping.set()
        sampler.join()
        hwm = next(iter(client.run(_hwm).values()))
        restarted = list(client.run(os.getpid).values()) != [pid]
    return {"format": session.reader.__class__.__name__.removesuffix("SessionReader").lower(),
            "shape": list(src.shape), "block_samples": int(src.chunks[0]),
            "lfp_float32_gb": src.shape[0] * src.shape[1] * 4 / 1e9,
            "hours": (src.t_last - src.t_first) / 3600.0,
            "tasks": len(psd.data.__dask_graph__()), "seconds": seconds,
            "worker_memory_gib": memory_gib, "worker_threads": threads,
            "rss_start_mb": base / 1e6 if base else None,
            "peak_rss_mb": hwm / 1e6 if hwm else None,
            "peak_rss_sampled_mb": sampler.peak / 1e6,
            "peak_share_of_limit": (hwm / (memory_gib * GIB)) if hwm else None,
            "finite": bool(result.sel(stimulus="all").notnull().all()),
            "worker_restarted": restarted}


def write(results: list[dict], machine: dict, out: Path, hours: float) -> Path:
    day = _dt.date.today().isoformat()
    path = out / f"{day}-memory-spectrum.md"
    lines = [f"# Worker memory, whole-probe spectrum of a real-size probe ({day})", "",
             "`python -m benchmarks.memory_spectrum` (benchmarks/memory_spectrum.py): one "
             "worker at the chart's default size computes `lfp_spectra(session, probe)` of a "
             f"synthetic probe of {hours:g} h; peak = the worker's resident high-water mark "
             "(VmHWM, reset at the start), cross-checked by sampling every 50 ms.", "",
             f"Machine: {machine['cpu']}, {machine['usable_cores']} usable cores, "
             f"{machine['memory_gb']} GB RAM, load {machine['load_average']}.", "",
             "| format | probe (samples x channels) | LFP as float32 | block | tasks | worker "
             "limit | resident at start | peak resident | peak / limit | headroom | time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['format']} | {r['shape'][0]:,} x {r['shape'][1]} ({r['hours']:.2f} h) | "
            f"{r['lfp_float32_gb']:.2f} GB | {r['block_samples']:,} samples | {r['tasks']} | "
            f"{r['worker_memory_gib']:g} GiB, {r['worker_threads']} thread{'s' if r['worker_threads'] > 1 else ''} | "
            f"{r['rss_start_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB "
            f"(sampled {r['peak_rss_sampled_mb']:.0f}) | {100 * r['peak_share_of_limit']:.1f} % | "
            f"{1 / r['peak_share_of_limit']:.1f}x | {r['seconds']:.0f} s |")
    lines += ["", "Headroom = the worker's memory limit / its peak. The nanny kills a worker "
              "above 95 % of the limit; a task holds one block (a storage-chunk row of the NWB "
              "file or one Zarr shard) and its periodogram sums, never the probe."]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"machine": machine, "results": results},
                                                    indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    from neuropixels_dask.local.s3server import LocalS3Server

    p = argparse.ArgumentParser(prog="python -m benchmarks.memory_spectrum",
                                description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=HOURS)
    p.add_argument("--format", default="nwb", help="nwb, zarr or nwb,zarr")
    p.add_argument("--data-dir", type=Path, default=HERE / "data")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    memory_gib, threads = chart_worker()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    nwb = make_cache(args.data_dir, args.hours)
    mounts = {"nwb": str(nwb)}
    if "zarr" in formats:
        mounts["zarr"] = str(zarr_copy(nwb))
    results = []
    with LocalS3Server(bucket="npd-memory", mounts=mounts) as server:
        for fmt in formats:
            r = measure_one(server, fmt, memory_gib, threads)
            print(json.dumps(r))
            results.append(r)
    path = write(results, measure.machine(), args.out, args.hours)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
