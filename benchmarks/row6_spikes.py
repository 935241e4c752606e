"""Row 6: presentationwise spike counts, all units × all presentations of one stimulus.

Sides, cold each repetition:

* **this package** (NWB and Zarr), N workers: open the session, then
  ``session.presentationwise_spike_counts(bin_edges, presentation_ids, session.units.index)``
  computed on the cluster (each task reads its units' spike times by exact ranged GETs);
* **AllenSDK 2.16.2 itself**, in its own environment (``.tools/allensdk``,
  ``scripts/install-allensdk.sh``; it cannot share ours): download the session file as its cache
  would, then ``allensdk_side.py`` there opens it with ``EcephysSession`` and calls its
  ``presentationwise_spike_counts``; also measured with the file already downloaded (AllenSDK's
  cache keeps it). Its imports are not timed (a notebook pays them once per kernel).
* **the AllenSDK way, emulated**, only where AllenSDK is not installed or cannot read the cache
  (files written before the generator became AllenSDK-readable): pynwb loads what
  ``EcephysSession`` loads, then AllenSDK's algorithms transcribed loop for loop
  (``tests/kernels/_allensdk_reference.py``). The results file says which one ran, and why.

The counts of all sides are checked to be identical.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import comparators as C
from .measure import MB, Meter, Result, RowReport, Sample, clear_everywhere
from .report import compare, costs, results_table

ROW = 6
TITLE = "Presentationwise spike counts"
ALLENSDK_PYTHON = C.REPO / ".tools" / "allensdk" / "bin" / "python"
ALLENSDK_SIDE = Path(__file__).resolve().parent / "allensdk_side.py"


class AllenSDKUnavailable(RuntimeError):
    """AllenSDK's own environment is missing or could not read the file."""


def allensdk_counts(local: Path, ids: np.ndarray, unit_ids: np.ndarray, bin_edges: np.ndarray,
                    folder: str) -> tuple[Sample, dict, np.ndarray]:
    """Counts by AllenSDK 2.16.2 itself (subprocess in its environment) on the downloaded file.

    The sample's time is what the script measured after its imports (load + count), its memory
    the script's peak above its resident size after the imports.
    """
    if not ALLENSDK_PYTHON.exists():
        raise AllenSDKUnavailable(f"{ALLENSDK_PYTHON} not found (scripts/install-allensdk.sh "
                                  "installs it)")
    files = {}
    for name, values in (("ids", ids), ("units", unit_ids), ("edges", bin_edges)):
        files[name] = str(Path(folder) / f"{name}.npy")
        np.save(files[name], values)
    out = Path(folder) / "counts.npy"
    proc = subprocess.run([str(ALLENSDK_PYTHON), str(ALLENSDK_SIDE), str(local), files["ids"],
                           files["units"], files["edges"], str(out)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise AllenSDKUnavailable(f"AllenSDK could not read the file: {last}")
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    sample = Sample(timing["load_s"] + timing["count_s"], peak_bytes=timing["peak_bytes"])
    return sample, timing, np.load(out)


def _stimulus(bench, session) -> str:
    names = session.stimulus_presentations["stimulus_name"]
    want = bench.args.stimulus
    return want if want in set(names) else str(names.value_counts().index[0])


def _ours(bench, fmt, sid, stimulus, bin_edges, client):
    clear_everywhere(client)
    meter = Meter(bench.server)
    session = bench.cache(fmt).get_session_data(sid)
    pres = session.stimulus_presentations
    ids = pres.index[pres["stimulus_name"] == stimulus].to_numpy()
    counts = session.presentationwise_spike_counts(bin_edges, ids, session.units.index)
    values = counts.data.compute(scheduler=client)
    return meter.split("counts"), values, session.units.index.to_numpy()


def run(bench) -> RowReport:
    sid = bench.sessions[0]
    n = bench.max_workers
    client = bench.client(n)
    meta = bench.cache("nwb").get_session_data(sid)
    stimulus = _stimulus(bench, meta)
    pres = meta.stimulus_presentations
    pres = pres[pres["stimulus_name"] == stimulus]
    duration = float(np.round(pres["duration"].median(), 3))
    bin_edges = np.arange(0.0, duration + bench.args.bin / 2, bench.args.bin)
    w = f"{n} worker{'s' if n > 1 else ''}"
    ours = f"this package (NWB), {w}"
    sides = [("nwb", ours)] + ([("zarr", f"this package (Zarr), {w}")] if bench.has_zarr
                               else [])
    case = "spike counts"
    results = {side: Result(ROW, case, side) for _, side in sides}
    results[ours].note = ("open the session, `presentationwise_spike_counts(...)` on a "
                          "LocalCluster (spike times of 32 units per task, one batch of ranged "
                          "GETs)")
    ids = pres.index.to_numpy()
    real: str | None = None  # why AllenSDK itself did not run (None: it did)
    timings: list[dict] = []
    cold = Result(ROW, case, "AllenSDK 2.16.2 (download + load + count)",
                  note="download the session file (one GET, as its cache does), then in "
                       "AllenSDK's own environment `EcephysSession(api=EcephysNwbSessionApi("
                       "path))`, its stimulus table and spike times, "
                       "`presentationwise_spike_counts(...)`; imports not timed")
    warm = Result(ROW, case, "AllenSDK 2.16.2, file already downloaded",
                  note="the same without the download (AllenSDK's cache keeps files)")
    identical = True
    for _rep in range(bench.reps):
        values = {}
        for fmt, side in sides:
            sample, values[fmt], unit_ids = _ours(bench, fmt, sid, stimulus, bin_edges, client)
            results[side].samples.append(sample)
        with tempfile.TemporaryDirectory(dir=bench.scratch) as folder:
            meter = Meter(bench.server)
            local = C.download(bench.server, bench.session_key(sid), folder)
            download = meter.split("download")
            compute = None
            if real is None:
                try:
                    compute, timing, counts = allensdk_counts(local, ids, unit_ids, bin_edges,
                                                              folder)
                    timings.append(timing)
                except AllenSDKUnavailable as e:
                    if timings:  # it ran before: a failure now is a real failure
                        raise
                    real = str(e)
                    bench.log(f"    {real}; emulating the AllenSDK way")
                    cold = Result(ROW, case, "AllenSDK way, emulated (download + load + count)",
                                  note="download the session file, pynwb `units.to_dataframe()` "
                                       "(all spike times) + stimulus table, AllenSDK's "
                                       "`build_spike_histogram` transcribed")
                    warm = Result(ROW, case, "AllenSDK way, emulated, file already downloaded",
                                  note="the same without the download (AllenSDK's cache keeps "
                                       "files)")
            if compute is None:
                meter = Meter(bench.server)
                counts = C.allensdk_spike_counts(local, stimulus, unit_ids, bin_edges)
                compute = meter.split("count")
        cold.samples.append(download.add(compute))
        warm.samples.append(compute)
        identical &= all(np.array_equal(v, counts) for v in values.values())
    rep = RowReport(ROW, TITLE, results=[*results.values(), cold, warm])
    shape = values["nwb"].shape
    rep.body.append(
        f"Session {sid}: `{stimulus}`, {shape[0]:,} presentations × {shape[1]} bins of "
        f"{bench.args.bin * 1000:g} ms × {shape[2]} units (default quality filters); session "
        f"file {bench.session_file_size(sid) / MB:,.0f} MB. Counts identical on every side: "
        f"{'yes' if identical else '**NO**'}.")
    if real is None:
        med = {k: float(np.median([t[k] for t in timings if t[k] is not None] or [0]))
               for k in timings[0]}
        rep.body.append(
            f"AllenSDK 2.16.2 ran itself (its own environment): load {med['load_s']:.1f} s, "
            f"count {med['count_s']:.2f} s, peak memory {(med['peak_bytes'] or 0) / MB:,.0f} MB "
            f"(medians); its imports, {med['import_s']:.1f} s, are not in its times.")
    else:
        rep.body.append(f"AllenSDK 2.16.2 itself did not run here ({real}), so its way is "
                        "emulated: pynwb loads what `EcephysSession` loads and AllenSDK's "
                        "algorithms run transcribed (`tests/kernels/_allensdk_reference.py`).")
    rep.body.append(results_table(rep.results, ref_side=ours, ref_label="this package (NWB)"))
    o = results[ours]
    rep.headlines.append((
        f"Spike counts ({stimulus}, all units), {w}, vs "
        + ("AllenSDK 2.16.2" if real is None else "the AllenSDK way (emulated)"),
        f"{costs(cold, o)}; against AllenSDK with the file already downloaded: "
        f"{compare(warm.median('seconds'), o.median('seconds'), 'faster', 'slower')}"))
    return rep
