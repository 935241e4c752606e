"""Row 3: a whole probe's LFP power spectrum (Welch, 1 s Hann segments, 50 % overlap).

Sides, each repetition cold:

* **this package** (NWB and Zarr) with N Dask worker processes: open the session, then
  ``lfp_spectra(session, probe, stimuli=[])`` — one task per storage-chunk row (NWB) or shard
  (Zarr), each reading its chunks by exact ranged GETs and reducing them to periodogram sums;
* **the AllenSDK way**: download the whole LFP file, load the probe (``get_lfp``: every sample
  in memory), then ``scipy.signal.welch`` channel by channel, in one process as a user would.

Both compute the spectrum of the whole recording with the same segments (this package's segments
do not straddle its ~37.6 s blocks, so it uses a fraction of a percent fewer); the agreement of
the two spectra is reported. Peak memory: busiest worker process (this package) and the process
itself (AllenSDK way), above their resident size at the start (``measure.py``).

**Link profiles** (``--profiles``): the same three sides again with the proxy's link model on top
of the latency, all in this run: "compute next to S3" (90 MB/s per connection, the usual
single-stream S3 rate) and "laptop" (25 MB/s in total, the seed's Wi-Fi case).

**Requests per storage-chunk row**: the NWB side's requests while computing (the session open
excluded; the chunk-index reads included) ÷ the file's rows of storage chunks, and its bytes ÷
the compressed bytes of every chunk; the chunk layout of the file (are the chunks of a row next
to each other?) is read from the local copy.
"""

from __future__ import annotations

import tempfile

import numpy as np

from neuropixels_dask import zarrstore as zs
from neuropixels_dask.analyses import lfp_spectra

from . import comparators as C
from .measure import (
    MB,
    CPUMeter,
    Meter,
    Result,
    RowReport,
    Sample,
    Target,
    WorkerPeak,
    clear_everywhere,
    peak_since,
    reset_peak,
)
from .report import costs, ratio, results_table

ROW = 3
TITLE = "Whole-probe LFP spectrum"
SECONDS_PER_SEGMENT = 1.0
OVERLAP = 0.5
BASE = "latency only"
#: link profiles (the proxy's settings on top of the run's latency), issue 15
PROFILES: dict[str, tuple[dict, str]] = {
    BASE: ({}, ""),
    "compute next to S3": ({"bandwidth_per_connection": 90e6}, "90 MB/s per connection"),
    "laptop": ({"bandwidth_total": 25e6}, "25 MB/s in total"),
}
NO_LINK = {"bandwidth_per_connection": 0.0, "bandwidth_total": 0.0}
#: the release's LFP files (ALLEN_LAYOUT.md: 0.9–2.7 GB per probe; 707 GB in all, issue 15)
RELEASE_LFP_BYTES = 707e9
PAPER_WORKERS = 200


def ours_once(bench, fmt: str, sid: int, pid: int, client) -> tuple[Sample, np.ndarray]:
    clear_everywhere(client)
    workers = WorkerPeak(client)
    base = reset_peak()
    meter = Meter(bench.server)
    cpu = CPUMeter(client, bench.server)
    session = bench.cache(fmt).get_session_data(sid)
    psd = lfp_spectra(session, pid, stimuli=[], include_all=True,
                      seconds_per_segment=SECONDS_PER_SEGMENT, overlap=OVERLAP)
    opened = meter.split("open")
    values = psd.compute(scheduler=client).values[0]
    computed = meter.split("compute")
    sample = opened.add(computed)
    sample.peak_bytes = workers.peak()
    sample.compute_gets, sample.compute_bytes = computed.get_requests, computed.bytes
    sample.cpu_workers, sample.cpu_server = cpu.stop()
    sample_client = peak_since(base)
    bench.log(f"    {fmt}: {sample.seconds:.1f} s, {sample.bytes / MB:.0f} MB, "
              f"{sample.requests} requests, worker peak {(sample.peak_bytes or 0) / MB:.0f} MB, "
              f"client peak {(sample_client or 0) / MB:.0f} MB")
    return sample, values


def task_peak(src, rows: list[int], nperseg: int, step: int) -> int:
    """On a worker: the most memory one task of the spectrum allocates (``tracemalloc``'s
    peak above its start: numpy, bytes and the inflate pool's threads alike), over ``rows``:
    read the block, then its spectral partial, as the task does. Unlike a worker's resident
    peak this excludes the allocator's retained pages and the other tasks in flight."""
    import tracemalloc

    from neuropixels_dask.kernels import segment_psd as sp
    from neuropixels_dask.readers import read_lfp_block

    cols = np.arange(src.shape[1])
    ct = src.chunks[0]
    seg = sp.Segmenting(nperseg, step, (np.array([[0, src.shape[0]]]),))
    read_lfp_block(src, 0, min(ct, src.shape[0]), cols)  # the file open and index root: once
    tracemalloc.start()
    try:
        peak = 0
        for r in rows:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            i0, i1 = r * ct, min(src.shape[0], (r + 1) * ct)
            block = read_lfp_block(src, i0, i1, cols)
            sp.block_partial(block, i0, seg)
            del block
            peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
        return peak
    finally:
        tracemalloc.stop()


def task_peaks(bench, sides, sid: int, pid: int, client) -> dict[str, int]:
    """``{format: peak bytes of one task}`` (:func:`task_peak` on one idle worker, 3 rows)."""
    out = {}
    worker = next(iter(client.scheduler_info()["workers"]))
    for fmt, _side in sides:
        src = bench.cache(fmt).get_session_data(sid).lfp_source(pid)
        rows = max(1, -(-src.shape[0] // src.chunks[0]))
        nperseg = int(round(SECONDS_PER_SEGMENT * src.rate))
        step = nperseg - int(round(OVERLAP * nperseg))
        out[fmt] = client.submit(task_peak, src, [r % rows for r in (3, 4, 5)], nperseg, step,
                                 workers=[worker], pure=False).result()
    return out


def chunk_layout(local_path, data_path: str) -> dict:
    """Where the storage chunks of each row lie in the file: their compressed bytes, and the
    span from a row's first to its last byte ÷ those bytes (1.00: next to each other)."""
    import h5py

    with h5py.File(local_path, "r") as f:
        ds = f[data_path]
        ct, cc = ds.chunks
        rows: dict[int, list[tuple[int, int]]] = {}
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            rows.setdefault(info.chunk_offset[0] // ct, []).append(
                (int(info.byte_offset), int(info.size)))
    from neuropixels_dask.storage import ranges

    cfg = ranges.settings()
    spans, gaps, total, planned = [], [], 0, 0
    for chunks in rows.values():
        chunks.sort()
        planned += len(ranges.plan(["f"] * len(chunks), [a for a, _ in chunks],
                                   [a + n for a, n in chunks], cfg.max_gap, cfg.max_request))
        size = sum(n for _, n in chunks)
        total += size
        spans.append((chunks[-1][0] + chunks[-1][1] - chunks[0][0]) / size)
        gaps += [b[0] - (a[0] + a[1]) for a, b in zip(chunks[:-1], chunks[1:], strict=True)]
    gaps_arr = np.array(gaps or [0])
    return {"rows": len(rows), "compressed_bytes": total, "span_ratio": float(np.median(spans)),
            "span_ratio_max": float(np.max(spans)), "gaps": int((gaps_arr > 0).sum()),
            "max_gap": int(gaps_arr.max()), "row_bytes": total / max(1, len(rows)),
            "data_requests": planned}


def allensdk_once(bench, sid: int, pid: int) -> tuple[Sample, dict, np.ndarray]:
    with tempfile.TemporaryDirectory(dir=bench.scratch) as folder:
        base = reset_peak()
        meter = Meter(bench.server)
        local = C.download(bench.server, bench.lfp_key(sid, pid), folder)
        meter.split("download")
        data, ts = C.allensdk_get_lfp(local, pid)
        meter.split("load")
        fs = (len(ts) - 1) / (ts[-1] - ts[0])
        nperseg = int(round(SECONDS_PER_SEGMENT * fs))
        step = max(1, int(round(nperseg * (1 - OVERLAP))))
        _, psd = C.welch_per_channel(data, fs, nperseg, step)
        meter.split("compute")
        peak = peak_since(base)
        del data, ts
    phases = {k: v.seconds for k, v in meter.phases.items()}
    total = Sample(sum(phases.values()), sum(v.bytes for v in meter.phases.values()),
                   sum(v.requests for v in meter.phases.values()), peak)
    split = ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
    bench.log(f"    AllenSDK way: {total.seconds:.1f} s ({split}), peak {(peak or 0) / MB:.0f} MB")
    return total, phases, psd


def lfp_storage(bench) -> tuple[int, int]:
    """Bytes of every probe's LFP: the NWB LFP files and the Zarr copy's LFP groups."""
    nwb = zarr = 0
    for sid in bench.sessions:
        store = bench.zarr_dir / f"session_{sid}" / zs.store_name(sid)
        for pid in bench.lfp_probes[sid]:
            nwb += bench.lfp_file_size(sid, pid)
            zarr += sum(p.stat().st_size for p in (store / zs.lfp_group_path(pid)).rglob("*")
                        if p.is_file())
    return nwb, zarr


def _profile_case(name: str) -> str:
    settings, text = PROFILES[name]
    return "whole-probe spectrum" if not settings else f"whole-probe spectrum, {name} ({text})"


def run(bench) -> RowReport:
    sid, pid = bench.sessions[0], bench.lfp_probes[bench.sessions[0]][0]
    n = bench.max_workers
    client = bench.client(n)
    w = f"{n} worker{'s' if n > 1 else ''}"
    ours = f"this package (NWB), {w}"
    sides = [("nwb", ours)]
    if bench.has_zarr:
        sides.append(("zarr", f"this package (Zarr), {w}"))
    allen_side = "AllenSDK way (download, load probe, welch)"
    profiles = [p for p in PROFILES if p in bench.profiles]
    results: dict[tuple[str, str], Result] = {}
    for prof in profiles:
        case = _profile_case(prof)
        for _, side in sides:
            results[(prof, side)] = Result(ROW, case, side)
        results[(prof, allen_side)] = Result(
            ROW, case, allen_side,
            note="download the whole LFP file (one GET), pynwb `data[:]` + `timestamps[:]` "
                 "(AllenSDK `get_lfp`), `scipy.signal.welch` per channel; one process; peak "
                 "memory = that process")
    results[(BASE, ours)].note = ("`lfp_spectra(session, probe)` on a LocalCluster of "
                                  f"processes ({bench.per_worker}); peak memory = the busiest "
                                  "worker")
    phases: list[dict] = []
    agreement = []
    formats: list[float] = []
    last_values: dict[str, np.ndarray] = {}
    try:
        for prof in profiles:
            settings, _ = PROFILES[prof]
            bench.server.configure(**{**NO_LINK, **settings})
            bench.log(f"  profile: {prof}")
            for _rep in range(bench.reps):
                spectra = {}
                for fmt, side in sides:
                    sample, spectra[fmt] = ours_once(bench, fmt, sid, pid, client)
                    results[(prof, side)].samples.append(sample)
                sample, ph, psd = allensdk_once(bench, sid, pid)
                results[(prof, allen_side)].samples.append(sample)
                if prof != BASE:
                    continue
                last_values = spectra
                phases.append(ph)
                ref = psd[1:-1]
                agreement.append(float(np.median(np.abs(spectra["nwb"][1:-1] - ref) / ref)))
                if "zarr" in spectra:  # blocks differ (37.6 s chunks vs 64 s shards): segments too
                    formats.append(float(np.median(
                        np.abs(spectra["zarr"][1:-1] - spectra["nwb"][1:-1])
                        / spectra["nwb"][1:-1])))
    finally:
        bench.server.configure(**NO_LINK)
    peaks = task_peaks(bench, sides, sid, pid, client)
    rep = RowReport(ROW, TITLE, results=list(results.values()))
    src = bench.lfp_source(sid, pid)
    itemsize = np.dtype(src.dtype).itemsize
    decoded = src.shape[0] * src.shape[1] * itemsize
    block = src.chunks[0] * src.shape[1] * itemsize
    size = bench.lfp_file_size(sid, pid)
    layout = chunk_layout(bench.local_lfp_path(sid, pid), src.data_path)
    ph = {k: float(np.median([p[k] for p in phases])) for k in phases[0]}
    rep.body.append(
        f"Session {sid}, probe {pid}: {src.shape[0] / src.rate / 3600:.2f} h × {src.shape[1]} "
        f"channels = {decoded / MB:,.0f} MB decoded, {size / MB:,.0f} MB on S3 (gzip-9). "
        f"The AllenSDK way's median time splits into download {ph['download']:.1f} s, "
        f"load {ph['load']:.1f} s, Welch {ph['compute']:.1f} s. Spectra agree with "
        f"`scipy.signal.welch`: median relative difference {max(agreement):.2g} "
        "(worst repetition)"
        + (f"; NWB vs Zarr spectra (their blocks, so their segments, differ slightly): "
           f"{max(formats):.2g}." if formats else "."))
    rep.body.append(results_table(rep.results, ref_side=ours, memory=True,
                                  ref_label="this package (NWB)"))
    o, a = results[(BASE, ours)], results[(BASE, allen_side)]
    bench.shared["row3"] = {"sid": sid, "pid": pid, "ours": ours, "values": last_values,
                            "results": {side: results[(BASE, side)] for _, side in sides}}
    rep.headlines.append((
        f"Whole-probe spectrum, {w}, vs the AllenSDK way",
        f"{costs(a, o, ('seconds', 'peak_bytes'))} "
        f"({(o.median('peak_bytes') or 0) / MB:.0f} MB per worker vs "
        f"{(a.median('peak_bytes') or 0) / MB:,.0f} MB)"))
    # ---- requests per storage-chunk row, bytes against the compressed chunks
    gets = float(np.median([s.compute_gets for s in o.samples]))
    got = float(np.median([s.compute_bytes for s in o.samples]))
    per_row = gets / layout["rows"]
    data_per_row = layout["data_requests"] / layout["rows"]
    index_gets = gets - layout["data_requests"]
    rep.body.append(
        f"Chunk layout of the LFP file ({layout['rows']} rows of {src.shape[1]} storage chunks, "
        f"{layout['row_bytes'] / MB:.1f} MB compressed per row): the chunks of a row "
        + ("lie next to each other" if layout["span_ratio_max"] < 1.05 else
           "do **not** lie next to each other")
        + f" (a row spans {layout['span_ratio']:.3f}× its bytes, at most "
        f"{layout['span_ratio_max']:.3f}×; {layout['gaps']:,} gaps between chunks in the whole "
        f"file, the largest {layout['max_gap']:,} bytes: the chunk B-tree nodes written between "
        f"them). While computing, the NWB side made {gets:,.0f} GETs for {layout['rows']} rows: "
        f"**{data_per_row:.2f} data GETs per row** ({layout['data_requests']} coalesced "
        f"requests: `storage/ranges.py` planned on the file's chunk table) and {index_gets:,.0f} "
        f"for the chunk index ({index_gets / layout['rows']:.2f} per row: every worker reads "
        f"the B-tree leaves of its rows, {n} workers here) = {per_row:.2f} per row in all; it "
        f"fetched {got / MB:,.0f} MB = **{got / layout['compressed_bytes']:.3f}×** the "
        "compressed chunks.")
    rep.targets.append(Target(
        15, "whole-probe NWB pass: ≤ 2 GETs per storage-chunk row",
        f"{data_per_row:.2f} data GETs per row; {per_row:.2f} with the chunk index's "
        f"({gets:,.0f} GETs for {layout['rows']} rows)", data_per_row <= 2))
    rep.targets.append(Target(
        15, "whole-probe NWB pass: bytes ≤ 1.05× the compressed chunks",
        f"{got / layout['compressed_bytes']:.3f}× ({got / MB:,.0f} of "
        f"{layout['compressed_bytes'] / MB:,.0f} MB)", got <= 1.05 * layout["compressed_bytes"]))
    wp = o.median("peak_bytes")
    rep.targets.append(Target(
        3, "peak memory of a worker over a whole probe is bounded by its chunks, not the file",
        f"{(wp or 0) / MB:.0f} MB per worker; probe decoded {decoded / MB:,.0f} MB; AllenSDK "
        f"way {(a.median('peak_bytes') or 0) / MB:,.0f} MB",
        None if wp is None or decoded < 500 * MB else wp < 0.25 * decoded))
    if wp is not None:
        tp = peaks["nwb"]
        zp = (results[(BASE, sides[1][1])].median("peak_bytes") or 0) if bench.has_zarr else 0
        zarr_peak = (f"; Zarr: worker {zp / MB:.0f} MB, one task {peaks['zarr'] / MB:.0f} MB"
                     if bench.has_zarr else "")
        rep.targets.append(Target(
            15, "peak worker memory stays bounded by a block or two (one decoded block: "
                f"{block / MB:.0f} MB)",
            f"worker (resident, {bench.per_worker}): {wp / MB:.0f} MB = {wp / block:.1f} blocks; "
            f"one task (allocated): {tp / MB:.1f} MB = {tp / block:.1f} blocks (NWB)"
            + zarr_peak, wp <= 2 * block))
        rep.body.append(
            f"Memory: the busiest NWB worker's resident peak rose {wp / MB:.0f} MB "
            f"({wp / block:.1f} decoded blocks of {block / MB:.1f} MB) with "
            f"{bench.per_worker}, each thread running a task. One task alone allocates at most "
            f"{tp / MB:.1f} MB = {tp / block:.1f} blocks (measured with `tracemalloc` on an idle "
            "worker: the block, the compressed row as it arrives, the FFT's batch); the rest of "
            "the resident peak is the other thread's task and pages the allocator keeps."
            + (f" Zarr: one task {peaks['zarr'] / MB:.1f} MB." if bench.has_zarr else ""))
    t_ratio = a.median("seconds") / o.median("seconds")
    rep.targets.append(Target(15, "whole-probe spectrum, NWB, ≥ 3× faster than the AllenSDK way",
                              f"{ratio(a.median('seconds'), o.median('seconds'))} "
                              f"({o.median('seconds'):.1f} s vs {a.median('seconds'):.1f} s)",
                              t_ratio >= 3))
    if bench.has_zarr:
        z = results[(BASE, sides[1][1])]
        rep.targets.append(Target(
            15, "whole-probe spectrum, Zarr, ≥ 6× faster than the AllenSDK way",
            f"{ratio(a.median('seconds'), z.median('seconds'))} ({z.median('seconds'):.1f} s vs "
            f"{a.median('seconds'):.1f} s)", a.median("seconds") >= 6 * z.median("seconds")))
        rep.targets.append(Target(
            5, "a whole-probe spectrum runs ≥ 2× faster on Zarr than on NWB",
            f"{ratio(o.median('seconds'), z.median('seconds'))} "
            f"({z.median('seconds'):.1f} s vs {o.median('seconds'):.1f} s)",
            2 * z.median("seconds") <= o.median("seconds")))
        rep.headlines.append((f"Whole-probe spectrum, {w}, Zarr vs the AllenSDK way",
                              costs(a, z, ("seconds",))))
        rep.headlines.append(("Whole-probe spectrum, Zarr vs NWB (this package)",
                              costs(o, z, ("seconds", "bytes"))))
        nwb_size, zarr_size = lfp_storage(bench)
        rep.targets.append(Target(
            5, "Zarr storage within 1.2× of the gzip-9 original, or smaller (all probes' LFP)",
            f"{zarr_size / 1e9:.2f} GB vs {nwb_size / 1e9:.2f} GB "
            f"({zarr_size / nwb_size:.2f}×)", zarr_size <= 1.2 * nwb_size))
    # ---- on paper: the whole release's LFP on 200 workers, from the measured per-worker rate
    per_worker = o.median("bytes") / (o.median("seconds") * n)  # compressed bytes/s
    release_s = RELEASE_LFP_BYTES / (PAPER_WORKERS * per_worker)
    rep.body.append(
        f"On paper: this run's NWB side moved {per_worker / MB:.1f} MB/s of compressed LFP per "
        f"worker (analysis included). At that rate the release's {RELEASE_LFP_BYTES / 1e9:.0f} "
        f"GB of LFP files take {release_s / 60:.1f} min on {PAPER_WORKERS} workers (if the "
        "store delivers 200 × that, "
        f"{PAPER_WORKERS * per_worker / 1e9:.1f} GB/s, spread over the release's ~300 files; "
        "workers here share 2 cores with the S3 server, so a worker with a core of its own does "
        "better).")
    rep.targets.append(Target(
        15, f"on paper, from the measured per-worker rate: the whole release's LFP "
            f"({RELEASE_LFP_BYTES / 1e9:.0f} GB) spectra on {PAPER_WORKERS} workers ≤ 3 min",
        f"{release_s / 60:.1f} min ({per_worker / MB:.1f} MB/s per worker)", release_s <= 180))
    for prof in profiles[1:]:
        settings, text = PROFILES[prof]
        pa = results[(prof, allen_side)]
        parts = [f"NWB {costs(pa, results[(prof, ours)], ('seconds',))}"]
        if bench.has_zarr:
            parts.append(f"Zarr {costs(pa, results[(prof, sides[1][1])], ('seconds',))}")
        rep.headlines.append((f"Whole-probe spectrum vs the AllenSDK way, {prof} ({text})",
                              ", ".join(parts)))
    return rep
