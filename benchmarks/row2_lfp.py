"""Row 2: one LFP window (1 s, all channels) and one channel over a long span.

Sides: this package on the NWB files and on the Zarr copy, h5py over an fsspec file with s3fs's
defaults, h5py over remfile. Per repetition, cold: open the probe's LFP (metadata), then read a
1 s all-channel window, then one channel over a long span, each phase counted on its own. Every
repetition reads other windows (the same ones on every side), and the values of all sides are
checked to be identical.
"""

from __future__ import annotations

import h5py
import numpy as np

from neuropixels_dask.tasks import lfp as lfp_mod

from . import comparators as C
from .measure import MB, Meter, Result, RowReport, Target, clear_caches
from .report import costs, ratio, results_table

ROW = 2
TITLE = "One LFP window and one channel, long span"
OURS = "this package (NWB)"
ZARR = "this package (Zarr)"
OPEN, WINDOW, SPAN = "open the LFP file", "1 s window, all channels", "1 channel, long span"


def windows(src, reps: int, window_s: float, span_s: float) -> list[dict]:
    """Per repetition: a window and a span (seconds), spread over the recording, off the grid."""
    t0, t1 = src.t_first, src.t_last
    dur = t1 - t0
    span_s = min(span_s, 0.4 * dur)
    out = []
    for k in range(reps):
        frac = (k + 0.5) / reps
        w = t0 + 0.1 * dur + 0.8 * dur * frac + 0.123
        s = t0 + 0.05 * dur + (0.9 * dur - span_s) * frac + 0.321
        out.append({"window": (w, w + window_s), "span": (s, s + span_s)})
    return out


def touched_chunk_bytes(local_path, data_path: str, i0: int, i1: int) -> int:
    """Compressed bytes of the storage chunks that rows ``[i0, i1)`` × all channels touch."""
    with h5py.File(local_path, "r") as f:
        ds = f[data_path]
        ct, cc = ds.chunks
        total = 0
        for r in range(i0 // ct, (i1 - 1) // ct + 1):
            for c in range(0, ds.shape[1], cc):
                info = ds.id.get_chunk_info_by_coord((r * ct, c))
                total += int(info.size or 0)
    return total


def _ours(bench, fmt: str, sid: int, pid: int, sel: dict, channel: int, meter: Meter):
    session = bench.cache(fmt).get_session_data(sid)
    _ = session.probes, session.channels
    meter.split("(session)")
    session.get_lfp(pid)
    meter.split(OPEN)
    win = session.get_lfp(pid, time_range=sel["window"]).data.compute(scheduler="threads")
    meter.split(WINDOW)
    span = session.get_lfp(pid, time_range=sel["span"], channel_ids=[channel]).data.compute(
        scheduler="threads")
    meter.split(SPAN)
    return win, span[:, 0]


def _h5py(kind: str, bench, sid: int, pid: int, src, sel: dict, col: int, meter: Meter):
    f = C.remote_file(kind, bench.server, bench.lfp_key(sid, pid))
    try:
        with h5py.File(f, "r") as h5:
            ds = h5[src.data_path]
            _ = ds.shape, ds.chunks
            meter.split(OPEN)
            i0, i1 = lfp_mod.sample_range(src, sel["window"])
            win = ds[i0:i1, :]
            meter.split(WINDOW)
            j0, j1 = lfp_mod.sample_range(src, sel["span"])
            span = ds[j0:j1, col]
            meter.split(SPAN)
    finally:
        f.close()
    return win, span


def run(bench) -> RowReport:
    sid, pid = bench.sessions[0], bench.lfp_probes[bench.sessions[0]][0]
    src = bench.lfp_source(sid, pid)
    col = src.shape[1] // 2
    channel = int(src.channel_ids[col])
    sels = windows(src, bench.reps, bench.args.window, bench.args.span)
    span_s = sels[0]["span"][1] - sels[0]["span"][0]
    sides = [(OURS, lambda s, m: _ours(bench, "nwb", sid, pid, s, channel, m),
              "`session.get_lfp(probe, time_range=…, channel_ids=…)`, computed with Dask "
              "threads: exact ranged reads of the touched chunks, one concurrent batch")]
    if bench.has_zarr:
        sides.append((ZARR, lambda s, m: _ours(bench, "zarr", sid, pid, s, channel, m),
                      "the same calls on the Zarr copy (sharded 1 s × all-channel chunks)"))
    sides += [
        ("h5py + fsspec defaults",
         lambda s, m: _h5py("fsspec", bench, sid, pid, src, s, col, m),
         "`h5py.File(s3fs.open(key))[data][i0:i1, :]` (s3fs defaults: 50 MB read-ahead)"),
        ("h5py + remfile", lambda s, m: _h5py("remfile", bench, sid, pid, src, s, col, m),
         "`h5py.File(remfile.File(presigned URL))[data][i0:i1, :]`"),
    ]
    results = {(phase, side): Result(ROW, phase, side, note=note)
               for phase in (OPEN, WINDOW, SPAN) for side, _, note in sides}
    identical = True
    touched = []
    for sel in sels:
        reference = None
        for side, fn, _note in sides:
            clear_caches()
            meter = Meter(bench.server)
            win, span = fn(sel, meter)
            for phase in (OPEN, WINDOW, SPAN):
                results[(phase, side)].samples.append(meter.phases[phase])
            if reference is None:
                reference = (win, span)
            else:
                identical &= bool(np.array_equal(win, reference[0])
                                  and np.array_equal(span, reference[1]))
        i0, i1 = lfp_mod.sample_range(src, sel["window"])
        touched.append(touched_chunk_bytes(bench.local_lfp_path(sid, pid), src.data_path, i0,
                                           i1))
    rep = RowReport(ROW, TITLE, results=list(results.values()))
    size = bench.lfp_file_size(sid, pid)
    rep.body.append(
        f"Session {sid}, probe {pid}: LFP file {size / MB:,.0f} MB, {src.shape[0]:,} samples × "
        f"{src.shape[1]} channels, storage chunks {src.chunks[0]:,} × {src.chunks[1]} "
        f"(gzip). Window {bench.args.window:g} s × all channels; span {span_s:.0f} s of channel "
        f"{channel}. Values identical on every side: {'yes' if identical else '**NO**'}.")
    rep.body.append(results_table(rep.results, ref_side=OURS))
    ours_w = results[(WINDOW, OURS)]
    med_touched = float(np.median(touched))
    b = ours_w.median("bytes")
    rep.targets.append(Target(
        3, "a 1 s LFP window transfers ≤ 1.2× the compressed bytes of the chunks it touches",
        f"{b / MB:.2f} MB for {med_touched / MB:.2f} MB of touched chunks "
        f"({b / med_touched:.2f}×)", b <= 1.2 * med_touched))
    o = results[(OPEN, OURS)]
    ob = o.median("bytes")
    rep.targets.append(Target(
        3, "opening the LFP file (metadata) transfers ≤ 2 MB and ≤ 0.5 % of the file",
        f"{ob / MB:.2f} MB = {100 * ob / size:.3f} %, {o.median('requests'):.0f} requests",
        ob <= 2e6 and ob <= 0.005 * size))
    for side in ("h5py + fsspec defaults", "h5py + remfile"):
        other = results[(WINDOW, side)]
        cold = Result(ROW, "", side, samples=[a.add(w) for a, w in zip(
            results[(OPEN, side)].samples, other.samples, strict=True)])
        ours_cold = Result(ROW, "", OURS, samples=[a.add(w) for a, w in zip(
            results[(OPEN, OURS)].samples, ours_w.samples, strict=True)])
        rep.headlines.append((f"1 s LFP window vs {side}",
                              f"file already open: {costs(other, ours_w)}; with opening the "
                              f"file: {costs(cold, ours_cold)}"))
        if side == "h5py + remfile":
            mine, theirs = ours_cold.median("seconds"), cold.median("seconds")
            rep.targets.append(Target(
                15, "a cold 1 s window (file not yet open) takes ≤ 0.5× the time of h5py over "
                    "remfile", f"{mine / theirs:.2f}× ({mine:.2f} s vs {theirs:.2f} s)",
                mine <= 0.5 * theirs))
    if bench.has_zarr:
        z = results[(WINDOW, ZARR)]
        zb = z.median("bytes")
        rep.targets.append(Target(
            5, "a 1 s all-channel window transfers ≥ 10× fewer bytes from Zarr than from NWB",
            f"{ratio(b, zb)} ({zb / MB:.3f} MB vs {b / MB:.2f} MB)", zb * 10 <= b))
        rep.headlines.append(("1 s LFP window, Zarr vs NWB (this package)",
                              costs(ours_w, z, ("bytes", "seconds"))))
        zs, ns = results[(SPAN, ZARR)], results[(SPAN, OURS)]
        rep.headlines.append((f"1 channel × {span_s:.0f} s, Zarr vs NWB (this package)",
                              costs(ns, zs, ("bytes", "seconds"))
                              + " (NWB's one-channel chunks suit this read)"))
    return rep
