"""Row 7: the machine limit: row 3's spectrum from bytes already in memory, on the same workers.

The ceiling of this box for this analysis is the same decode + FFT with no I/O at all. Here the
files row 3 reads (cache tables, the session file and the probe's LFP file; for Zarr the
session's store without the other probes' LFP) are copied into fsspec's ``memory://``
filesystem of every worker process and of this one, and the very same call runs on a cache
opened at ``memory://…``: the same readers, the same chunk lookups, inflate, the same kernels and
the same Dask graph on the same cluster, only without a network or a server. Row 3's time ÷ this
time is how far the analysis is from the machine's limit (target: ≤ 1.3×).

The spectra are checked to be identical to row 3's (bit for bit: same code, same blocks).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import fsspec
import numpy as np

from neuropixels_dask import zarrstore as zs
from neuropixels_dask.analyses import lfp_spectra

from .measure import MB, CPUMeter, Result, RowReport, Sample, Target, WorkerPeak, clear_everywhere
from .report import ratio

ROW = 7
TITLE = "Machine limit: the spectrum from memory"
MEMORY_ROOT = "/npd-bench-limit"
TABLE_FILES = ("manifest.json", "sessions.csv", "probes.csv", "channels.csv", "units.csv")


# ---- on every process (module-level: pickled by reference) ----------------------------------

def load_into_memory(files: dict[str, str]) -> int:
    """Copy local files into this process's ``memory://`` filesystem ({memory path: local})."""
    fs = fsspec.filesystem("memory")
    total = 0
    for dst, src in files.items():
        with open(src, "rb") as f:
            data = f.read()
        fs.pipe_file(dst, data)
        total += len(data)
    return total


def drop_memory(root: str = MEMORY_ROOT) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    for key in [k for k in MemoryFileSystem.store if k.startswith(root)]:
        del MemoryFileSystem.store[key]
    for key in [k for k in MemoryFileSystem.pseudo_dirs if k.startswith(root)]:
        MemoryFileSystem.pseudo_dirs.remove(key)


# ---- the files of one (format, session, probe) ------------------------------------------------

def files_for(bench, fmt: str, sid: int, pid: int) -> dict[str, str]:
    root = bench.nwb_dir if fmt == "nwb" else bench.zarr_dir
    out = {f"{MEMORY_ROOT}/{fmt}/{name}": str(root / name) for name in TABLE_FILES
           if (root / name).exists()}
    session = Path(root) / f"session_{sid}"
    if fmt == "nwb":
        for name in (f"session_{sid}.nwb", f"probe_{pid}_lfp.nwb"):
            out[f"{MEMORY_ROOT}/nwb/session_{sid}/{name}"] = str(session / name)
        return out
    other_lfp = [f"{zs.store_name(sid)}/{zs.lfp_group_path(p)}/" for p in bench.lfp_probes[sid]
                 if p != pid]
    for dirpath, _dirs, names in os.walk(session):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), session).replace(os.sep, "/")
            if any(rel.startswith(o) for o in other_lfp):
                continue
            out[f"{MEMORY_ROOT}/zarr/session_{sid}/{rel}"] = os.path.join(dirpath, name)
    return out


def _once(fmt: str, sid: int, pid: int, client, row3) -> tuple[Sample, np.ndarray]:
    from neuropixels_dask import open_cache

    clear_everywhere(client)
    cache = open_cache(f"memory://{MEMORY_ROOT}/{fmt}")
    cache.get_session_table()  # the tables are outside row 3's timing too
    workers = WorkerPeak(client)
    t = time.perf_counter()
    cpu = CPUMeter(client)
    session = cache.get_session_data(sid)
    psd = lfp_spectra(session, pid, stimuli=[], include_all=True,
                      seconds_per_segment=row3.SECONDS_PER_SEGMENT, overlap=row3.OVERLAP)
    values = psd.compute(scheduler=client).values[0]
    sample = Sample(time.perf_counter() - t, peak_bytes=workers.peak())
    sample.cpu_workers = cpu.stop()[0]
    return sample, values



def run(bench) -> RowReport:
    from . import row3_spectrum as row3

    shared = bench.row3(ROW)
    sid, pid = shared["sid"], shared["pid"]
    n = bench.max_workers
    client = bench.client(n)
    formats = ["nwb"] + (["zarr"] if bench.has_zarr else [])
    rep = RowReport(ROW, TITLE)
    lines = ["| format | analysis (row 3), s | machine limit (from memory), s | analysis ÷ "
             "limit | decoded LFP MB/s at the limit | peak worker memory MB (limit) |",
             "|---|---|---|---|---|---|"]
    cpu_lines = ["| format | CPU-s there: cores × time | workers, analysis | S3 server + "
                 "proxy, analysis | workers, limit | cores busy during the analysis |",
                 "|---|---|---|---|---|---|"]
    src = bench.lfp_source(sid, pid)
    decoded = src.shape[0] * src.shape[1] * np.dtype(src.dtype).itemsize
    identical = True
    for fmt in formats:
        label = "NWB" if fmt == "nwb" else "Zarr"
        analysis = next(r for side, r in shared["results"].items() if f"({label})" in side)
        limit = Result(ROW, label, f"machine limit ({label}, from memory), {n} workers",
                       note="row 3's call on a cache at memory:// (every file row 3 reads, "
                            "copied into each worker's and this process's memory "
                            "beforehand); no network, no server")
        files = files_for(bench, fmt, sid, pid)
        try:
            loaded = client.run(load_into_memory, files)
            load_into_memory(files)
            bench.log(f"    {label}: {next(iter(loaded.values())) / MB:,.0f} MB in memory per "
                      "process")
            for _rep in range(bench.reps):
                sample, values = _once(fmt, sid, pid, client, row3)
                limit.samples.append(sample)
                bench.log(f"    {label} from memory: {sample.seconds:.1f} s")
                identical &= bool(np.array_equal(values, shared["values"][fmt]))
        finally:
            client.run(drop_memory)
            drop_memory()
        rep.results += [analysis, limit]
        a, m = analysis.median("seconds"), limit.median("seconds")
        lines.append(f"| {label} | {a:.1f} | {m:.1f} | {ratio(a, m)} | {decoded / m / MB:,.0f} | "
                     f"{(limit.median('peak_bytes') or 0) / MB:.0f} |")
        w, srv, wl = (analysis.median("cpu_workers"), analysis.median("cpu_server"),
                      limit.median("cpu_workers"))
        if None not in (w, srv, wl):
            cpu_lines.append(f"| {label} | {bench.cores * a:.1f} | {w:.1f} | {srv:.1f} | "
                             f"{wl:.1f} | {(w + srv) / (bench.cores * a):.0%} |")
        rep.targets.append(Target(15, f"the spectrum is within 1.3× of the machine limit "
                                      f"({label})", f"{ratio(a, m)} ({a:.1f} s vs {m:.1f} s)",
                                  a <= 1.3 * m))
        rep.headlines.append((f"Whole-probe spectrum ({label}) vs the machine limit",
                              f"{ratio(a, m)} of the no-I/O time ({a:.1f} s vs {m:.1f} s)"))
        shared.setdefault("limit", {})[fmt] = limit
    rep.body.append(
        f"Session {sid}, probe {pid}, {n} worker process{'es' if n > 1 else ''} ({bench.per_worker}), "
        f"{decoded / MB:,.0f} MB of decoded LFP. Spectra identical to row 3's: "
        f"{'yes' if identical else '**NO**'}.")
    rep.body.append("\n".join(lines))
    if len(cpu_lines) > 2:
        rep.body.append(
            f"Where the {bench.cores} cores went (CPU-seconds, medians; the client process and "
            "the operating system take the rest). The limit runs without a server; in the "
            "analysis the S3 server and its proxy share the workers' cores, so their CPU-seconds "
            "are time the workers could not compute in:")
        rep.body.append("\n".join(cpu_lines))
    return rep
