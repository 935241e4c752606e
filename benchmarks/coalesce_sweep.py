"""How ranges should become requests: the sweep behind ``storage/ranges.py``'s constants.

    .venv/bin/python -m benchmarks.coalesce_sweep --latency 0.02,0.05      # bench preset data

Against the same local S3 server as the benchmarks (moto behind the proxy, 20–50 ms added per
request) and a LocalCluster of 2 single-threaded worker processes, one setting changed at a time
around the defaults, each measured ``--reps`` times, cold (no open files, no chunk index):

* **max_request** (the cap of one merged GET), under two links: latency only, and the proxy's
  "compute next to S3" link (90 MB/s per connection), where a request's size costs time;
* **concurrency** (GETs in flight per worker process; above 10 with a larger botocore pool);
* **coalesce_gap**, on the three kinds of reads that have gaps: the whole-probe pass (B-tree
  nodes between the chunks of a row), spike counts of the default-filtered units (the ranges of
  the units left out lie between), and 1 s windows;
* **overlap**: inflating each chunk as its request arrives (``readers/nwb.OVERLAP_INFLATE``)
  against inflating the task's chunks after its last request is in;
* **layout**: the chunks of a storage row next to each other in the file (as the generator and,
  as far as we can tell, AllenSDK write them: a whole array in one write) against a channel-major
  copy of the same file (each channel written on its own: the chunks of a row 128 chunks apart),
  where no gap setting can merge a row.

The workload of the whole-probe pass is ``get_lfp(probe).data.sum()``: reading and inflating
every chunk, no FFT (row 4's "read + decode only"). Results: a Markdown table per setting, written
to ``benchmarks/results/<date>-coalesce-sweep.md`` with the raw samples beside it (.json).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import measure
from .runner import DEFAULT_DATA, DEFAULT_RESULTS, NWB_PREFIX, parse_latency

MiB = 1 << 20
KiB = 1 << 10
NEXT_TO_S3 = {"bandwidth_per_connection": 90e6}
NO_LINK = {"bandwidth_per_connection": 0.0, "bandwidth_total": 0.0}
CHMAJOR_PREFIX = "chmajor"
#: botocore's default connection pool (max_pool_connections)
POOL = 10


# ---- on the workers --------------------------------------------------------------------------

def apply_settings(remote: dict[str, Any], overlap: bool) -> None:
    """Set ``neuropixels_dask.remote.*`` and the reader's overlap flag in this process."""
    import dask

    from neuropixels_dask.readers import nwb

    dask.config.set({f"neuropixels_dask.remote.{k}": v for k, v in remote.items()})
    nwb.OVERLAP_INFLATE = overlap


# ---- the channel-major copy ------------------------------------------------------------------

def channel_major_copy(src_path: Path, data_path: str, dst_path: Path) -> None:
    """A copy of an LFP file whose data chunks are written channel by channel (same bytes per
    chunk, copied raw with ``write_direct_chunk``), so a row's chunks lie far apart."""
    shutil.copyfile(src_path, dst_path)
    with h5py.File(src_path, "r") as src, h5py.File(dst_path, "r+") as dst:
        ds = src[data_path]
        attrs = dict(ds.attrs)
        del dst[data_path]
        new = dst.create_dataset(data_path, shape=ds.shape, dtype=ds.dtype, chunks=ds.chunks,
                                 compression="gzip", compression_opts=9)
        for k, v in attrs.items():
            new.attrs[k] = v
        ct, cc = ds.chunks
        for c in range(0, ds.shape[1], cc):
            for r in range(0, ds.shape[0], ct):
                mask, raw = ds.id.read_direct_chunk((r, c))
                new.id.write_direct_chunk((r, c), raw, mask)


# ---- one measurement -------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    group: str
    label: str
    workload: str  # "probe", "spikes", "windows"
    remote: dict[str, Any]
    overlap: bool = True
    link: dict[str, float] = dataclasses.field(default_factory=dict)
    source: str = "published"  # or "channel-major"
    samples: list[measure.Sample] = dataclasses.field(default_factory=list)


class Sweep:
    def __init__(self, args, server, client, nwb_dir: Path, chmajor: Path | None) -> None:
        from neuropixels_dask import open_cache

        self.args, self.server, self.client = args, server, client
        so = server.storage_options()
        self.cache = open_cache(server.url(NWB_PREFIX), **so)
        self.sid = int(sorted(self.cache.get_session_table().index)[0])
        session = self.cache.get_session_data(self.sid)
        probes = session.probes
        self.pid = int(probes.index[probes["has_lfp_data"].astype(bool)][0])
        self.src = session.lfp_source(self.pid)
        self.chmajor_src = None
        if chmajor is not None:
            url = server.url(f"{CHMAJOR_PREFIX}/{chmajor.name}")
            self.chmajor_src = dataclasses.replace(self.src, url=url)
        names = session.stimulus_presentations["stimulus_name"]
        stim = "drifting_gratings" if "drifting_gratings" in set(names) else names.iloc[0]
        pres = session.stimulus_presentations
        self.pres_ids = pres.index[pres["stimulus_name"] == stim].to_numpy()
        self.bin_edges = np.arange(0.0, 2.0 + 0.005, 0.01)
        t0, t1 = self.src.t_first, self.src.t_last
        self.windows = [(t0 + (t1 - t0) * f + 0.123, t0 + (t1 - t0) * f + 1.123)
                        for f in (0.15, 0.35, 0.55, 0.75, 0.95)]

    def _graph(self, case: Case):
        from neuropixels_dask.tasks import lfp as lfp_mod

        if case.workload == "probe":
            src = self.chmajor_src if case.source == "channel-major" else self.src
            if case.remote.get("concurrency", 0) > POOL:
                # more than botocore's 10 pooled connections: a pool that can carry them
                from neuropixels_dask import storage

                opts = dict(src.storage_options)
                opts["config_kwargs"] = {**opts.get("config_kwargs", {}),
                                         "max_pool_connections": 2 * case.remote["concurrency"]}
                src = dataclasses.replace(src, storage_options=storage.resolve(src.url, opts))
            cols = np.arange(src.shape[1])
            return [lfp_mod.lfp_dask_array(src, 0, src.shape[0], cols).sum(dtype=np.float64)]
        session = self.cache.get_session_data(self.sid)
        if case.workload == "spikes":
            return [session.presentationwise_spike_counts(self.bin_edges, self.pres_ids,
                                                          session.units.index).data]
        return [session.get_lfp(self.pid, time_range=w).data for w in self.windows]

    def once(self, case: Case) -> measure.Sample:
        import dask

        measure.clear_everywhere(self.client)
        self.client.run(apply_settings, case.remote, case.overlap)
        apply_settings(case.remote, case.overlap)
        graph = self._graph(case)  # session metadata read before the meter starts
        if case.workload == "windows":  # the chunk index warm: what a window costs afterwards
            dask.compute(*[g[:1] for g in graph], scheduler=self.client)
        self.server.configure(**{**NO_LINK, **case.link})
        try:
            meter = measure.Meter(self.server)
            dask.compute(*graph, scheduler=self.client)
            return meter.split(case.label)
        finally:
            self.server.configure(**NO_LINK)


def cases(args, has_chmajor: bool) -> list[Case]:
    from neuropixels_dask.storage import ranges

    base = {"coalesce_gap": ranges.MAX_GAP, "max_request": ranges.MAX_REQUEST,
            "concurrency": ranges.CONCURRENCY}  # the defaults: one setting changes at a time

    def with_(**kw) -> dict:
        return {**base, **kw}

    out = []
    for link_name, link in (("latency only", {}), ("90 MB/s per connection", NEXT_TO_S3)):
        for mr in (1, 2, 4, 5, 8, 16):
            out.append(Case(f"max_request, {link_name}", f"{mr} MiB", "probe",
                            with_(max_request=mr * MiB), link=link))
    for conc in (2, 4, 10, 16):
        for mr in (2, 8):
            out.append(Case("concurrency (max_request 2 / 8 MiB)", f"{conc} in flight, "
                            f"{mr} MiB", "probe", with_(concurrency=conc, max_request=mr * MiB)))
    for workload in ("probe", "spikes", "windows"):
        for gap, text in ((-1, "overlaps only"), (0, "0 (adjacent)"), (4 * KiB, "4 KiB"),
                          (64 * KiB, "64 KiB"), (1 * MiB, "1 MiB")):
            out.append(Case(f"coalesce_gap, {workload}", text, workload, with_(coalesce_gap=gap)))
    for mr in (2, 8):
        for overlap in (True, False):
            out.append(Case("overlap: inflate as requests arrive", f"{mr} MiB, overlap "
                            f"{'on' if overlap else 'off'}", "probe", with_(max_request=mr * MiB),
                            overlap=overlap))
    out.append(Case("layout", "published order (rows adjacent)", "probe", base))
    if has_chmajor:
        out.append(Case("layout", "channel-major copy", "probe", base, source="channel-major"))
    return out


# ---- report ----------------------------------------------------------------------------------

def _med(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def table(group: str, rows: list[Case]) -> str:
    lines = [f"### {group}", "", "| setting | time s, median (min–max) | GETs | MB on the wire |",
             "|---|---|---|---|"]
    for c in rows:
        t = [s.seconds for s in c.samples]
        lines.append(f"| {c.label} | {_med(t):.2f} ({min(t):.2f}–{max(t):.2f}) | "
                     f"{_med([s.get_requests for s in c.samples]):,.0f} | "
                     f"{_med([s.bytes for s in c.samples]) / 1e6:,.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from distributed import Client, LocalCluster

    from neuropixels_dask.local.s3server import LocalS3Server
    from neuropixels_dask.storage import ranges

    p = argparse.ArgumentParser(prog="python -m benchmarks.coalesce_sweep",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--preset", default="bench")
    p.add_argument("--latency", type=parse_latency, default=parse_latency("0.02,0.05"))
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--groups", default="", help="only the case groups whose name contains one "
                                                 "of these comma-separated words")
    p.add_argument("--no-chmajor", action="store_true", help="skip the channel-major copy")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    nwb_dir = (args.data_dir / f"{args.preset}-cache").resolve()
    if not (nwb_dir / "manifest.json").exists():
        raise SystemExit(f"{nwb_dir}: no cache (run python -m benchmarks --preset "
                         f"{args.preset} once, it generates it)")
    started = time.perf_counter()
    load_before = measure.machine()["load_average"]
    scratch = Path(tempfile.mkdtemp(dir=args.data_dir, prefix="sweep-"))
    try:
        chmajor = None
        mounts = {NWB_PREFIX: str(nwb_dir)}
        sid_dirs = sorted(d for d in nwb_dir.iterdir() if d.name.startswith("session_"))
        lfp_files = sorted(sid_dirs[0].glob("probe_*_lfp.nwb"))
        layout_src = lfp_files[0]
        if not args.no_chmajor:
            pid = layout_src.name.split("_")[1]
            chmajor = scratch / layout_src.name
            print(f"writing the channel-major copy of {layout_src.name}", file=sys.stderr)
            channel_major_copy(layout_src, f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data"
                               "/data", chmajor)
            mounts[CHMAJOR_PREFIX] = str(scratch)
        with LocalS3Server(mounts=mounts, latency=args.latency, proxy=True) as server, \
                LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                             dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            client.run(measure.warm_imports)
            sweep = Sweep(args, server, client, nwb_dir, chmajor)
            todo = cases(args, chmajor is not None)
            if args.groups:
                words = [w.strip() for w in args.groups.split(",") if w.strip()]
                todo = [c for c in todo if any(w in c.group for w in words)]
            for _rep in range(args.reps):
                for c in todo:
                    c.samples.append(sweep.once(c))
                    s = c.samples[-1]
                    print(f"  {c.group} / {c.label}: {s.seconds:.2f} s, {s.get_requests} GETs, "
                          f"{s.bytes / 1e6:.1f} MB", file=sys.stderr, flush=True)
            src = sweep.src
        groups: dict[str, list[Case]] = {}
        for c in todo:
            groups.setdefault(c.group, []).append(c)
        machine = measure.machine()
        date = _dt.date.today().isoformat()
        out = args.out or DEFAULT_RESULTS / f"{date}-coalesce-sweep.md"
        lat = args.latency
        lat_text = (f"{lat * 1000:g} ms" if isinstance(lat, float)
                    else f"uniform {lat[0] * 1000:g}–{lat[1] * 1000:g} ms")
        doc = [f"# Range coalescing sweep — `{args.preset}` preset, {date}", "",
               f"Command: `python -m benchmarks.coalesce_sweep {' '.join(argv or sys.argv[1:])}`",
               "", f"Session {sweep.sid}, probe {sweep.pid}: {src.shape[0]:,} samples × "
               f"{src.shape[1]} channels, chunks {src.chunks[0]:,} × {src.chunks[1]}, "
               f"{args.workers} worker processes (1 thread each), latency {lat_text} per "
               f"request, {args.reps} cold repetitions (medians). Defaults around which one "
               f"setting changes at a time: coalesce_gap {ranges.MAX_GAP // KiB} KiB, "
               f"max_request {ranges.MAX_REQUEST / MiB:g} MiB, concurrency "
               f"{ranges.CONCURRENCY}, overlap on.", ""]
        doc += [table(g, rows) + "\n" for g, rows in groups.items()]
        doc += ["## Machine", "",
                f"- {machine['cpu']}, {machine['usable_cores']} usable cores, "
                f"{machine['memory_gb']} GB; Python {machine['python']}",
                f"- load average (1, 5, 15 min) before / after: {load_before} / "
                f"{machine['load_average']}",
                f"- run time {(time.perf_counter() - started) / 60:.1f} min", ""]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(doc))
        out.with_suffix(".json").write_text(json.dumps(
            [{"group": c.group, "label": c.label, "workload": c.workload, "remote": c.remote,
              "overlap": c.overlap, "link": c.link, "source": c.source,
              "samples": [dataclasses.asdict(s) for s in c.samples]} for c in todo], indent=1))
        print(f"results: {out}", file=sys.stderr)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
