"""Row 1: open a session and read its probes + units tables.

Sides: this package (NWB, and the Zarr copy), pynwb over an fsspec file with s3fs's defaults,
pynwb over remfile. Each repetition starts cold (no open files, no cached listings). The cache's
own tables (``manifest.json``, CSVs) are read once before and are not part of this row.
"""

from __future__ import annotations

from . import comparators as C
from .measure import MB, Meter, Result, RowReport, Target, clear_caches
from .report import costs, results_table

ROW = 1
TITLE = "Open a session (probes + units)"
OURS = "this package (NWB)"
PHASES = ("open", "open + probes + units")


def _ours(bench, fmt: str, sid: int, meter: Meter) -> None:
    cache = bench.cache(fmt)
    session = cache.get_session_data(sid)
    meter.split("open")
    _ = session.probes, session.units
    meter.split("open + probes + units")


def _pynwb(kind: str, bench, sid: int, meter: Meter) -> None:
    f = C.remote_file(kind, bench.server, bench.session_key(sid))
    try:
        meter.split("(file object)")
        C.pynwb_open_session(f, meter)
    finally:
        f.close()


def run(bench) -> RowReport:
    sid = bench.sessions[0]
    sides = [(OURS, lambda m: _ours(bench, "nwb", sid, m),
              "`cache.get_session_data(id)`, then `.probes`, `.units` (h5py on HDF5-tuned "
              "fsspec files)")]
    if bench.has_zarr:
        sides.append(("this package (Zarr)", lambda m: _ours(bench, "zarr", sid, m),
                      "the same calls on the Zarr copy"))
    sides += [
        ("pynwb + fsspec defaults", lambda m: _pynwb("fsspec", bench, sid, m),
         "`NWBHDF5IO(file=h5py.File(s3fs.open(key)))`, `io.read()`, `electrode_groups`, "
         "`units.to_dataframe()` without the ragged columns"),
        ("pynwb + remfile", lambda m: _pynwb("remfile", bench, sid, m),
         "the same on `remfile.File(presigned URL)`"),
    ]
    results = {(phase, side): Result(ROW, phase, side, note=note)
               for side, _, note in sides for phase in PHASES}
    for _rep in range(bench.reps):
        for side, fn, _note in sides:
            clear_caches()
            meter = Meter(bench.server)
            fn(meter)
            # pynwb's "(file object)" phase (remfile sizes the object with a GET) belongs to open
            ph = meter.phases
            if "(file object)" in ph:
                ph["open"] = ph.pop("(file object)").add(ph["open"])
            results[("open", side)].samples.append(ph["open"])
            results[("open + probes + units", side)].samples.append(
                ph["open"].add(ph["open + probes + units"]))
    rep = RowReport(ROW, TITLE, results=list(results.values()))
    size = bench.session_file_size(sid)
    rep.body.append(
        f"Session {sid}: session file {size / MB:.1f} MB. Phases are cumulative; the cache "
        "tables were read beforehand (once per cache, not per session).")
    rep.body.append(results_table(rep.results, ref_side=OURS, memory=False))
    ours = results[("open + probes + units", OURS)]
    b, n = ours.median("bytes"), ours.median("requests")
    rep.targets.append(Target(
        3, "open + probes + units transfers ≤ 2 MB and ≤ 0.5 % of the session file, in a "
        "bounded number of requests",
        f"{b / MB:.2f} MB ({'≤' if b <= 2e6 else '>'} 2 MB) = {100 * b / size:.2f} % of the "
        f"{size / MB:.0f} MB file ({'≤' if b <= 0.005 * size else '>'} 0.5 %), {n:.0f} requests",
        b <= 2e6 and b <= 0.005 * size))
    if bench.has_zarr:
        z = results[("open", "this package (Zarr)")]
        rep.targets.append(Target(5, "opening a (Zarr) session takes ≤ 3 requests",
                                  f"{z.median('requests'):.0f} requests",
                                  z.median("requests") <= 3))
    kinds = {side: results[("open + probes + units", side)].samples[-1].kinds
             for side, _, _ in sides}
    rep.body.append("Requests by kind (last repetition, open + probes + units): "
                    + "; ".join(f"{side}: {k}" for side, k in kinds.items()) + ".")
    for side in ("pynwb + fsspec defaults", "pynwb + remfile"):
        other = results[("open + probes + units", side)]
        rep.headlines.append((f"Open session + probes + units vs {side}",
                              costs(other, ours, ("seconds", "bytes", "requests"))))
    return rep
