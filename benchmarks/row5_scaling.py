"""Row 5: scaling: whole-probe spectra of several sessions at once, with 1, 2, 4, … workers.

One ``dask.compute`` of the spectra of every (session, probe) pair chosen (``--scaling-probes``
probes per session), on a LocalCluster of N worker processes (``--threads`` each), cold each time.
Parallel efficiency = T(1) / (N × T(N)). The worker counts come from ``--workers``; counts above
the machine's cores are run when asked but say little (recorded with the machine in the setup).
"""

from __future__ import annotations

import dask

from neuropixels_dask.analyses import lfp_spectra

from .measure import MB, Meter, Result, RowReport, Target, clear_everywhere
from .report import ratio

ROW = 5
TITLE = "Scaling with workers"


def _once(bench, pairs, client):
    clear_everywhere(client)
    meter = Meter(bench.server)
    cache = bench.cache(bench.args.scaling_format)
    sessions = {sid: cache.get_session_data(sid) for sid in {s for s, _ in pairs}}
    spectra = [lfp_spectra(sessions[sid], pid, stimuli=[], include_all=True)
               for sid, pid in pairs]
    dask.compute(*spectra, scheduler=client)
    return meter.split("spectra")


def run(bench) -> RowReport:
    k = bench.args.scaling_probes
    pairs = [(sid, pid) for sid in bench.sessions
             for pid in (bench.lfp_probes[sid][:k] if k else bench.lfp_probes[sid])]
    results = {}
    counts = sorted(bench.workers, reverse=True)  # the largest first: reuses row 3's cluster
    for n in counts:
        client = bench.client(n)
        r = Result(ROW, "spectra of all pairs", f"{n} worker{'s' if n > 1 else ''}")
        for _rep in range(bench.reps):
            r.samples.append(_once(bench, pairs, client))
            bench.log(f"    {r.side}: {r.samples[-1].seconds:.1f} s")
        results[n] = r
    rep = RowReport(ROW, TITLE, results=[results[n] for n in sorted(results)])
    decoded = sum(bench.lfp_decoded_bytes(sid, pid) for sid, pid in pairs)
    rep.body.append(
        f"{len(pairs)} whole-probe spectra ({len(bench.sessions)} sessions × "
        f"{k or 'all'} probe(s) with LFP each; {decoded / MB:,.0f} MB decoded LFP), "
        f"{bench.args.scaling_format.upper()} files, on {bench.machine['usable_cores']} usable "
        "cores shared with the S3 server and the proxy.")
    lines = ["| workers | time s, median (min–max) | speed-up | parallel efficiency | MB on the "
             "wire | requests |", "|---|---|---|---|---|---|"]
    t1 = results[min(results)].median("seconds") * min(results) if results else None
    eff = {}
    for n in sorted(results):
        r = results[n]
        t = r.median("seconds")
        lo, hi = r.spread("seconds")
        eff[n] = t1 / (n * t)
        lines.append(f"| {n} | {t:.1f} ({lo:.1f}–{hi:.1f}) | {ratio(t1, t)} | "
                     f"{100 * eff[n]:.0f} % | {r.median('bytes') / MB:,.0f} | "
                     f"{r.median('requests'):,.0f} |")
    rep.body.append("\n".join(lines))
    if min(results) != 1:
        rep.body.append("No 1-worker run: speed-up and efficiency are relative to the smallest "
                        f"count ({min(results)}), assuming it scaled perfectly.")
    if 8 in eff:
        rep.targets.append(Target(8, "parallel efficiency ≥ 75 % at 8 workers",
                                  f"{100 * eff[8]:.0f} %", eff[8] >= 0.75))
    else:
        top = max(eff)
        rep.targets.append(Target(
            8, "parallel efficiency ≥ 75 % at 8 workers",
            f"not run here ({bench.machine['usable_cores']} cores); at {top} worker(s): "
            f"{100 * eff[top]:.0f} %", None))
    top = max(eff)
    rep.headlines.append((f"Scaling, {top} vs {min(eff)} worker(s)",
                          f"{100 * eff[top]:.0f} % parallel efficiency "
                          f"({ratio(t1, results[top].median('seconds'))} speed-up)"))
    return rep
