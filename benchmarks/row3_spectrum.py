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
"""

from __future__ import annotations

import tempfile

import numpy as np

from neuropixels_dask import zarrstore as zs
from neuropixels_dask.analyses import lfp_spectra

from . import comparators as C
from .measure import (
    MB,
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


def ours_once(bench, fmt: str, sid: int, pid: int, client) -> tuple[Sample, np.ndarray]:
    clear_everywhere(client)
    workers = WorkerPeak(client)
    base = reset_peak()
    meter = Meter(bench.server)
    session = bench.cache(fmt).get_session_data(sid)
    psd = lfp_spectra(session, pid, stimuli=[], include_all=True,
                      seconds_per_segment=SECONDS_PER_SEGMENT, overlap=OVERLAP)
    values = psd.compute(scheduler=client).values[0]
    sample = meter.split("spectrum")
    sample.peak_bytes = workers.peak()
    sample_client = peak_since(base)
    bench.log(f"    {fmt}: {sample.seconds:.1f} s, {sample.bytes / MB:.0f} MB, "
              f"worker peak {(sample.peak_bytes or 0) / MB:.0f} MB, client peak "
              f"{(sample_client or 0) / MB:.0f} MB")
    return sample, values


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


def run(bench) -> RowReport:
    sid, pid = bench.sessions[0], bench.lfp_probes[bench.sessions[0]][0]
    n = bench.max_workers
    client = bench.client(n)
    ours = f"this package (NWB), {n} worker{'s' if n > 1 else ''}"
    sides = [("nwb", ours)]
    if bench.has_zarr:
        sides.append(("zarr", f"this package (Zarr), {n} worker{'s' if n > 1 else ''}"))
    case = "whole-probe spectrum"
    results = {side: Result(ROW, case, side) for _, side in sides}
    results[ours].note = ("`lfp_spectra(session, probe)` on a LocalCluster of processes "
                          "(1 thread each); peak memory = the busiest worker")
    allen = Result(ROW, case, "AllenSDK way (download, load probe, welch)",
                   note="download the whole LFP file (one GET), pynwb `data[:]` + "
                        "`timestamps[:]` (AllenSDK `get_lfp`), `scipy.signal.welch` per "
                        "channel; one process; peak memory = that process")
    phases: list[dict] = []
    agreement = []
    formats: list[float] = []
    for _rep in range(bench.reps):
        spectra = {}
        for fmt, side in sides:
            sample, spectra[fmt] = ours_once(bench, fmt, sid, pid, client)
            results[side].samples.append(sample)
        sample, ph, psd = allensdk_once(bench, sid, pid)
        allen.samples.append(sample)
        phases.append(ph)
        ref = psd[1:-1]
        agreement.append(float(np.median(np.abs(spectra["nwb"][1:-1] - ref) / ref)))
        if "zarr" in spectra:  # blocks differ (37.6 s chunks vs 64 s shards): so do segments
            formats.append(float(np.median(np.abs(spectra["zarr"][1:-1] - spectra["nwb"][1:-1])
                                           / spectra["nwb"][1:-1])))
    rep = RowReport(ROW, TITLE, results=[*results.values(), allen])
    src = bench.lfp_source(sid, pid)
    decoded = src.shape[0] * src.shape[1] * np.dtype(src.dtype).itemsize
    size = bench.lfp_file_size(sid, pid)
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
    o, a = results[ours], allen
    bench.shared["row3"] = {"sid": sid, "pid": pid, "results": results, "ours": ours}
    rep.headlines.append((
        f"Whole-probe spectrum, {n} worker{'s' if n > 1 else ''}, vs the AllenSDK way",
        f"{costs(a, o, ('seconds', 'peak_bytes'))} "
        f"({(o.median('peak_bytes') or 0) / MB:.0f} MB per worker vs "
        f"{(a.median('peak_bytes') or 0) / MB:,.0f} MB)"))
    wp = o.median("peak_bytes")
    rep.targets.append(Target(
        3, "peak memory of a worker over a whole probe is bounded by its chunks, not the file",
        f"{(wp or 0) / MB:.0f} MB per worker; probe decoded {decoded / MB:,.0f} MB; AllenSDK "
        f"way {(a.median('peak_bytes') or 0) / MB:,.0f} MB",
        None if wp is None or decoded < 500 * MB else wp < 0.25 * decoded))
    if bench.has_zarr:
        z = results[sides[1][1]]
        rep.targets.append(Target(
            5, "a whole-probe spectrum runs ≥ 2× faster on Zarr than on NWB",
            f"{ratio(o.median('seconds'), z.median('seconds'))} "
            f"({z.median('seconds'):.1f} s vs {o.median('seconds'):.1f} s)",
            2 * z.median("seconds") <= o.median("seconds")))
        rep.headlines.append(("Whole-probe spectrum, Zarr vs NWB (this package)",
                              costs(o, z, ("seconds", "bytes"))))
        nwb_size, zarr_size = lfp_storage(bench)
        rep.targets.append(Target(
            5, "Zarr storage within 1.2× of the gzip-9 original, or smaller (all probes' LFP)",
            f"{zarr_size / 1e9:.2f} GB vs {nwb_size / 1e9:.2f} GB "
            f"({zarr_size / nwb_size:.2f}×)", zarr_size <= 1.2 * nwb_size))
    return rep
