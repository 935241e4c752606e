"""Row 4: the analysis's effective read throughput against the server's limit, same run.

* **Effective throughput** of row 3's whole-probe spectrum: bytes it pulled over the wire ÷ its
  wall time (session open, scheduling, decoding and the FFTs included).
* **Read + decode only**: the same Dask graph reduced by a trivial ``sum``: what reading and
  inflating the chunks alone achieves.
* **The ceiling**: raw parallel GETs of the same server by the same N worker processes, nothing
  decoded: (a) exactly the analysis's requests (the same byte ranges, coalesced by
  ``storage/ranges.py`` as the reader's are, / shard objects, one batch per task) and (b) the
  same file in large 8 MB ranged GETs, 8 at a time per task. The higher of the two is the limit
  the targets (≥ 70 % on Zarr, ≥ 50 % on NWB: issue 15) are measured against.
"""

from __future__ import annotations

import h5py
import numpy as np

from neuropixels_dask import storage

from .measure import MB, Meter, Result, RowReport, Sample, Target, clear_everywhere
from .report import ratio

ROW = 4
TITLE = "Throughput against the limit"
BIG_RANGE = 8 << 20
RANGES_PER_TASK = 8


# ---- tasks (run on the workers; module-level so that they pickle by reference) -------------

def fetch_ranges_task(url: str, options: dict, starts: list[int], stops: list[int]) -> int:
    """GET byte ranges of one object concurrently; return the byte count, decode nothing."""
    return sum(len(b) for b in storage.fetch_ranges(url, options, starts, stops))


def fetch_objects_task(urls: list[str], options: dict) -> int:
    """GET whole objects concurrently (Zarr shards), as the reader does (one GET each)."""
    return sum(len(b) for b in storage.fetch_objects(urls, options))


# ---- the request plans ---------------------------------------------------------------------

def nwb_chunk_batches(local_path, data_path: str) -> list[tuple[list[int], list[int]]]:
    """Byte ranges of every storage chunk, one batch per chunk row (what one task fetches)."""
    batches = []
    with h5py.File(local_path, "r") as f:
        ds = f[data_path]
        ct, cc = ds.chunks
        for r in range(0, ds.shape[0], ct):
            starts, stops = [], []
            for c in range(0, ds.shape[1], cc):
                info = ds.id.get_chunk_info_by_coord((r, c))
                if info.byte_offset is not None:
                    starts.append(int(info.byte_offset))
                    stops.append(int(info.byte_offset + info.size))
            batches.append((starts, stops))
    return batches


def big_range_batches(size: int) -> list[tuple[list[int], list[int]]]:
    edges = list(range(0, size, BIG_RANGE)) + [size]
    ranges = list(zip(edges[:-1], edges[1:], strict=True))
    return [([a for a, _ in ranges[i:i + RANGES_PER_TASK]],
             [b for _, b in ranges[i:i + RANGES_PER_TASK]])
            for i in range(0, len(ranges), RANGES_PER_TASK)]


def _run_fetch(bench, client, calls) -> Sample:
    clear_everywhere(client)
    meter = Meter(bench.server)
    futures = [client.submit(fn, *args, pure=False) for fn, args in calls]
    total = sum(client.gather(futures))
    sample = meter.split("fetch")
    if total > sample.bytes * 1.01 + 1:
        bench.log(f"    note: fetched {total} bytes but the proxy counted {sample.bytes}")
    return sample


def _read_only(bench, fmt: str, sid: int, pid: int, client) -> Sample:
    clear_everywhere(client)
    meter = Meter(bench.server)
    session = bench.cache(fmt).get_session_data(sid)
    session.get_lfp(pid).data.sum(dtype=np.float64).compute(scheduler=client)
    return meter.split("read")


def _throughputs(r: Result) -> list[float]:
    return [s.bytes / s.seconds for s in r.samples if s.seconds > 0]


def run(bench) -> RowReport:
    shared = bench.row3(ROW)
    sid, pid = shared["sid"], shared["pid"]
    n = bench.max_workers
    client = bench.client(n)
    src = bench.lfp_source(sid, pid)
    url = storage.join(bench.nwb_url, f"session_{sid}", f"probe_{pid}_lfp.nwb")
    so = bench.storage_options
    plans = {"nwb": {
        "same requests": [(fetch_ranges_task, (url, so, a, b))
                          for a, b in nwb_chunk_batches(bench.local_lfp_path(sid, pid),
                                                        src.data_path)],
        "8 MB ranges": [(fetch_ranges_task, (url, so, a, b))
                        for a, b in big_range_batches(bench.lfp_file_size(sid, pid))]}}
    if bench.has_zarr:
        shards = bench.zarr_lfp_objects(sid, pid)
        plans["zarr"] = {"same requests": [(fetch_objects_task, ([u], so)) for u in shards],
                         "8 MB ranges": [(fetch_objects_task, (shards[i:i + RANGES_PER_TASK],
                                                                so))
                                         for i in range(0, len(shards), RANGES_PER_TASK)]}
    rows = []  # (format, what, Result)
    for fmt, plan in plans.items():
        label = "NWB" if fmt == "nwb" else "Zarr"
        analysis = shared["results"][[k for k in shared["results"] if label in k][0]]
        rows.append((label, "analysis (row 3 spectrum)", analysis))
        read = Result(ROW, label, "read + decode only")
        ceilings = {what: Result(ROW, label, f"raw GETs, {what}") for what in plan}
        for _rep in range(bench.reps):
            read.samples.append(_read_only(bench, fmt, sid, pid, client))
            for what, calls in plan.items():
                ceilings[what].samples.append(_run_fetch(bench, client, calls))
        rows.append((label, "read + decode only", read))
        rows += [(label, r.side, r) for r in ceilings.values()]
    rep = RowReport(ROW, TITLE, results=[r for _, _, r in rows])
    lines = ["| format | what | MB/s, median | MB | requests | time s | % of ceiling |",
             "|---|---|---|---|---|---|---|"]
    ceiling_of = {}
    for label, what, r in rows:
        if what.startswith("raw GETs"):
            ceiling_of[label] = max(ceiling_of.get(label, 0.0), float(np.median(_throughputs(r))))
    for label, what, r in rows:
        tp = float(np.median(_throughputs(r)))
        r.info["throughput_bytes_per_s"] = tp
        lines.append(f"| {label} | {what} | {tp / MB:,.0f} | {r.median('bytes') / MB:,.0f} | "
                     f"{r.median('requests'):,.0f} | {r.median('seconds'):.2f} | "
                     f"{100 * tp / ceiling_of[label]:.0f} % |")
    rep.body.append(
        f"Session {sid}, probe {pid}, {n} worker process{'es' if n > 1 else ''} "
        f"({bench.per_worker}). The server (moto) and the proxy run on the same machine as the workers, so "
        "on a small machine they compete for the same cores.")
    rep.body.append("\n".join(lines))
    for label in ceiling_of:
        analysis = next(r for lab, what, r in rows if lab == label and what.startswith("analysis"))
        read = next(r for lab, what, r in rows if lab == label and what.startswith("read"))
        share = analysis.info["throughput_bytes_per_s"] / ceiling_of[label]
        goal = 0.5 if label == "NWB" else 0.7
        rep.targets.append(Target(
            15, f"effective read throughput of the spectrum ≥ {100 * goal:.0f} % of the raw "
            f"parallel GET throughput ({label})",
            f"{100 * share:.0f} % ({analysis.info['throughput_bytes_per_s'] / MB:,.0f} of "
            f"{ceiling_of[label] / MB:,.0f} MB/s; read + decode alone "
            f"{100 * read.info['throughput_bytes_per_s'] / ceiling_of[label]:.0f} %)",
            share >= goal))
        below = ratio(ceiling_of[label], analysis.info["throughput_bytes_per_s"])
        rep.headlines.append((f"Spectrum read throughput vs raw GET ceiling ({label})",
                              f"{100 * share:.0f} % of the ceiling ({below} below it)"))
    return rep
