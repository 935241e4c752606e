"""The benchmark run: data, server, clusters, rows, the results file.

1. **Data.** The synthetic cache of ``--preset`` is generated once into ``--data-dir``
   (``benchmarks/data/``, git-ignored) and reused; ``--cache-dir`` uses an existing NWB cache.
   Its Zarr copy is made next to it with ``convert`` (resumable; also reused).
2. **Server.** One :class:`~neuropixels_dask.local.s3server.LocalS3Server` serves both folders in
   place (``mounts=``), behind the counting proxy (its own process), with ``--latency`` added to
   every request: ``0.03`` (fixed) or ``0.02,0.05`` (uniform), like an object store seen from a
   compute node, so that request counts cost what they cost in the cloud.
3. **Rows.** Every row runs all its sides in this run, ``--reps`` times, cold each time.
   Clusters are ``LocalCluster``\\ s of worker processes (``--workers``), single-threaded
   unless ``--threads`` says otherwise.
4. **Results.** ``benchmarks/results/<date>-<preset>.md`` (``--out``): headline ratios, targets,
   setup (machine, versions, sizes), one section per row; raw samples in a ``.json`` beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import measure, report

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE / "data"
DEFAULT_RESULTS = HERE / "results"
NWB_PREFIX = "nwb/visual-coding-neuropixels/ecephys-cache"
ZARR_PREFIX = "zarr/visual-coding-neuropixels/ecephys-cache"
ROW_MODULES = {1: "row1_open", 2: "row2_lfp", 3: "row3_spectrum", 4: "row4_throughput",
               5: "row5_scaling", 6: "row6_spikes", 7: "row7_limit", 8: "row8_catalog"}
#: rows that need another row's measurements
ROW_NEEDS = {4: 3, 7: 3}
#: row 3's link profiles (row3_spectrum.PROFILES)
PROFILE_NAMES = ("latency only", "compute next to S3", "laptop")


# ---- arguments ------------------------------------------------------------------------------

def parse_latency(text: str) -> float | tuple[float, float]:
    """``"0.03"`` → 0.03 s per request; ``"0.02,0.05"`` → uniform between the two."""
    parts = [float(p) for p in str(text).split(",") if p.strip()]
    if len(parts) == 1 and parts[0] >= 0:
        return parts[0]
    if len(parts) == 2 and 0 <= parts[0] <= parts[1]:
        return (parts[0], parts[1])
    raise argparse.ArgumentTypeError(f"latency {text!r}: give seconds, e.g. 0.03 or 0.02,0.05")


def parse_ints(text: str) -> list[int]:
    try:
        values = [int(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1,2,4,8,16")
    return values


def parse_profiles(text: str) -> list[str]:
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    bad = [n for n in names if n not in PROFILE_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"profiles {text!r}: choose from "
                                         + ", ".join(repr(n) for n in PROFILE_NAMES))
    return names


def default_workers() -> str:
    from .measure import usable_cores

    counts = [n for n in (1, 2, 4, 8, 16) if n <= usable_cores()]
    return ",".join(map(str, counts))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The runner's options (shared by ``python -m benchmarks`` and ``neuropixels-dask bench``)."""
    p.add_argument("--preset", default="bench", choices=["tiny", "demo", "bench"],
                   help="synthetic cache size (default: bench, ~1.3 h × 4 probes × 2 sessions)")
    p.add_argument("--cache-dir", type=Path,
                   help="an existing NWB cache folder to use instead of generating one")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                   help="where generated caches and Zarr copies live (default: %(default)s)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement "
                   "(medians are reported; default: %(default)s)")
    p.add_argument("--latency", type=parse_latency, default=parse_latency("0.02,0.05"),
                   help="seconds added to every request at the S3 server: 0.03 or a uniform "
                        "range 0.02,0.05 (default); 0 for none")
    p.add_argument("--workers", type=parse_ints, default=parse_ints(default_workers()),
                   help="worker counts for the scaling row; the largest also runs rows 3, 4 "
                        "and 6 (default: 1,2,4,… up to the usable cores: "
                        f"{default_workers()})")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per worker process (default: the package's "
                        "cluster.threads_per_worker, 2: one task's reads overlap another's "
                        "compute)")
    p.add_argument("--rows", type=parse_ints, default=list(ROW_MODULES),
                   help="rows to run, e.g. 1,2 (default: all)")
    p.add_argument("--no-zarr", action="store_true", help="skip the Zarr copy and its sides")
    p.add_argument("--window", type=float, default=1.0, help="row 2 window, s (default: 1)")
    p.add_argument("--span", type=float, default=600.0,
                   help="row 2 one-channel span, s (at most 40 %% of the recording; default: "
                        "600)")
    p.add_argument("--scaling-probes", type=int, default=1,
                   help="row 5: probes per session (0: all; default: 1)")
    p.add_argument("--scaling-format", choices=["nwb", "zarr"], default="nwb",
                   help="row 5: which copy to read (default: nwb, the published files)")
    p.add_argument("--profiles", type=parse_profiles, default=list(PROFILE_NAMES),
                   help="row 3's link profiles, comma-separated (default: all: "
                        + ", ".join(PROFILE_NAMES) + ")")
    p.add_argument("--stimulus", default="drifting_gratings",
                   help="row 6 stimulus (default: drifting_gratings)")
    p.add_argument("--bin", type=float, default=0.01, help="row 6 bin width, s (default: 0.01)")
    p.add_argument("--out", type=Path, help="results file (default: "
                   "benchmarks/results/<date>-<preset>.md)")
    p.add_argument("--note", action="append", default=[],
                   help="a caveat to add to the results file (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


# ---- data -----------------------------------------------------------------------------------

def prepare_nwb(args) -> Path:
    """The NWB cache: ``--cache-dir``, else the preset under ``--data-dir`` (generated once)."""
    from neuropixels_dask.local.synth import generate_cache
    from neuropixels_dask.local.synth.generate import GROUND_TRUTH_FILE

    if args.cache_dir is not None:
        if not (args.cache_dir / "manifest.json").exists():
            raise SystemExit(f"--cache-dir {args.cache_dir}: no manifest.json there")
        return args.cache_dir.resolve()
    path = (args.data_dir / f"{args.preset}-cache").resolve()
    if not (path / GROUND_TRUTH_FILE).exists():  # written last: absent means not complete
        generate_cache(str(path), args.preset, progress=not args.quiet)
    return path


def prepare_zarr(nwb_dir: Path, args, log) -> Path:
    """The Zarr copy of ``nwb_dir`` (``convert`` skips sessions that are already complete)."""
    from distributed import Client, LocalCluster

    from neuropixels_dask.convert import convert

    dst = nwb_dir.parent / f"{nwb_dir.name}-zarr"
    if args.cache_dir is not None:
        dst = (args.data_dir / f"{nwb_dir.name}-zarr").resolve()
    from .measure import usable_cores

    n = usable_cores()
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        t = time.perf_counter()
        results = convert(str(nwb_dir), str(dst), client=client, progress=not args.quiet)
        done = [r for r in results if r.status != "already complete"]
        if done:
            log(f"converted {len(done)} session(s) to Zarr in {time.perf_counter() - t:.0f} s")
    return dst


def prepare_catalog(nwb_dir: Path, args) -> tuple[Path, str, str]:
    """Row 8's catalog: ``(folder, key prefix, label)``. The release-scale one (tiny preset's
    files, tables padded to the release's size; generated once) unless the run's preset is
    tiny, whose own small tables then stand in (the smoke test stays fast)."""
    from neuropixels_dask.local.synth import generate_cache
    from neuropixels_dask.local.synth.generate import GROUND_TRUTH_FILE

    from .row8_catalog import PREFIX

    if args.preset == "tiny":
        return nwb_dir, NWB_PREFIX, "the tiny cache's own tables"
    path = (args.data_dir / "release-catalog").resolve()
    if not (path / GROUND_TRUTH_FILE).exists():
        generate_cache(str(path), "tiny", release_catalog=True, progress=not args.quiet)
    return path, PREFIX, "release-scale catalog (58 sessions, 332 probes, 99,180 units)"


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- the run's context ----------------------------------------------------------------------

class Bench:
    """What the rows share: the server, the caches, clusters, sizes, and a scratch folder."""

    @property
    def cores(self) -> int:
        """Cores this process may run on (what the workers, server and proxy share)."""
        from .measure import usable_cores

        return usable_cores()

    def __init__(self, args, server, nwb_dir: Path, zarr_dir: Path | None, scratch: str,
                 log) -> None:
        self.args = args
        self.server = server
        self.nwb_dir, self.zarr_dir = nwb_dir, zarr_dir
        self.scratch = scratch
        self.log = log
        self.reps = max(1, int(args.reps))
        if getattr(args, "threads", None) is None:
            from neuropixels_dask.cluster import threads_per_worker

            args.threads = threads_per_worker()
        self.threads = int(args.threads)
        if self.threads < 1:
            raise SystemExit(f"--threads {self.threads}: a worker needs at least 1 thread")
        self.profiles = list(getattr(args, "profiles", PROFILE_NAMES))
        self.catalog: tuple[Path, str, str] | None = None
        self.workers = sorted(set(args.workers))
        self.max_workers = max(self.workers)
        self.machine = measure.machine()
        self.storage_options = server.storage_options()
        self.nwb_url = server.url(NWB_PREFIX)
        self.zarr_url = server.url(ZARR_PREFIX)
        self.shared: dict[str, Any] = {}
        self._caches: dict[str, Any] = {}
        self._sources: dict[tuple[int, int], Any] = {}
        self._client = None
        self._client_n = 0
        probes = self.cache("nwb").get_probes()
        self.sessions = sorted(int(s) for s in self.cache("nwb").get_session_table().index)
        self.lfp_probes = {
            sid: [int(p) for p in probes.index[(probes["ecephys_session_id"] == sid)
                                               & probes["has_lfp_data"].astype(bool)]
                  if (nwb_dir / f"session_{sid}" / f"probe_{int(p)}_lfp.nwb").exists()]
            for sid in self.sessions}

    @property
    def has_zarr(self) -> bool:
        return self.zarr_dir is not None

    def row3(self, row: int) -> dict[str, Any]:
        """Row 3's measurements and probe, for a row that compares against them (ROW_NEEDS)."""
        shared = self.shared.get("row3")
        if shared is None:
            raise RuntimeError(f"row {row} uses row 3's measurements: run rows 3 and {row} "
                               "together")
        return shared

    def cache(self, fmt: str):
        """The cache (``"nwb"`` or ``"zarr"``) on the server, opened once (tables are small)."""
        if fmt not in self._caches:
            from neuropixels_dask import open_cache

            url = self.nwb_url if fmt == "nwb" else self.zarr_url
            self._caches[fmt] = open_cache(url, **self.storage_options)
        return self._caches[fmt]

    # keys, local paths and sizes
    def session_key(self, sid: int) -> str:
        return f"{NWB_PREFIX}/session_{sid}/session_{sid}.nwb"

    def lfp_key(self, sid: int, pid: int) -> str:
        return f"{NWB_PREFIX}/session_{sid}/probe_{pid}_lfp.nwb"

    def local_lfp_path(self, sid: int, pid: int) -> Path:
        return self.nwb_dir / f"session_{sid}" / f"probe_{pid}_lfp.nwb"

    def session_file_size(self, sid: int) -> int:
        return (self.nwb_dir / f"session_{sid}" / f"session_{sid}.nwb").stat().st_size

    def lfp_file_size(self, sid: int, pid: int) -> int:
        return self.local_lfp_path(sid, pid).stat().st_size

    def lfp_source(self, sid: int, pid: int):
        """The NWB ``LFPSource`` (shape, chunks, rate) of a probe; read once."""
        if (sid, pid) not in self._sources:
            self._sources[(sid, pid)] = self.cache("nwb").get_session_data(sid).lfp_source(pid)
        return self._sources[(sid, pid)]

    def lfp_decoded_bytes(self, sid: int, pid: int) -> int:
        src = self.lfp_source(sid, pid)
        return src.shape[0] * src.shape[1] * 4

    def zarr_lfp_objects(self, sid: int, pid: int) -> list[str]:
        """URLs of the shard objects of a probe's LFP array in the Zarr copy."""
        from neuropixels_dask import zarrstore as zs

        assert self.zarr_dir is not None
        array = (self.zarr_dir / f"session_{sid}" / zs.store_name(sid)
                 / zs.lfp_group_path(pid) / "data")
        return [f"{self.zarr_url}/{p.relative_to(self.zarr_dir).as_posix()}"
                for p in sorted((array / "c").rglob("*")) if p.is_file()]

    # clusters
    @property
    def per_worker(self) -> str:
        """How each worker process runs tasks, for the tables' notes."""
        return f"{self.threads} thread{'s' if self.threads > 1 else ''} each"

    def client(self, n: int):
        """A ``Client`` on a LocalCluster of ``n`` worker processes of ``--threads`` threads
        (one at a time: a new count closes the previous cluster)."""
        if self._client is not None and self._client_n == n:
            return self._client
        self.close()
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=n, threads_per_worker=self.threads, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        self._client, self._client_n = Client(cluster, set_as_default=False), n
        self._client.wait_for_workers(n)
        self._client.run(measure.warm_imports)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            cluster = self._client.cluster
            self._client.close()
            cluster.close()
            self._client, self._client_n = None, 0

    def sizes(self) -> dict[str, str]:
        sid = self.sessions[0]
        out = {"sessions": f"{len(self.sessions)} ({', '.join(map(str, self.sessions))})",
               "probes with LFP per session": ", ".join(str(len(self.lfp_probes[s]))
                                                        for s in self.sessions)}
        pid = self.lfp_probes[sid][0]
        src = self.lfp_source(sid, pid)
        out["LFP per probe (first)"] = (
            f"{src.shape[0]:,} samples ({src.shape[0] / src.rate / 3600:.2f} h at "
            f"{src.rate:.1f} Hz) × {src.shape[1]} channels")
        out["NWB cache on disk"] = f"{_folder_size(self.nwb_dir) / 1e9:.2f} GB"
        out[f"session file (session {sid})"] = f"{self.session_file_size(sid) / 1e6:.1f} MB"
        out[f"LFP file (probe {pid})"] = f"{self.lfp_file_size(sid, pid) / 1e6:,.0f} MB"
        if self.zarr_dir is not None:
            out["Zarr copy on disk"] = f"{_folder_size(self.zarr_dir) / 1e9:.2f} GB"
        return out


# ---- main -----------------------------------------------------------------------------------

def run(args) -> Path:
    import importlib

    from neuropixels_dask.local.s3server import LocalS3Server

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    rows = sorted(set(args.rows) | {ROW_NEEDS[r] for r in args.rows if r in ROW_NEEDS})
    unknown = set(rows) - set(ROW_MODULES)
    if unknown:
        raise SystemExit(f"unknown row(s) {sorted(unknown)}; rows are 1–{max(ROW_MODULES)}")
    started = time.perf_counter()
    load_before = measure.machine()["load_average"]
    nwb_dir = prepare_nwb(args)
    log(f"NWB cache: {nwb_dir}")
    zarr_dir = None if args.no_zarr else prepare_zarr(nwb_dir, args, log)
    if zarr_dir is not None:
        log(f"Zarr copy: {zarr_dir}")
    mounts = {NWB_PREFIX: str(nwb_dir)}
    if zarr_dir is not None:
        mounts[ZARR_PREFIX] = str(zarr_dir)
    catalog = prepare_catalog(nwb_dir, args) if 8 in rows else None
    if catalog is not None and catalog[1] != NWB_PREFIX:
        mounts[catalog[1]] = str(catalog[0])
    reports = []
    failed: list[int] = []
    args.data_dir.mkdir(parents=True, exist_ok=True)
    with LocalS3Server(mounts=mounts, latency=args.latency, proxy=True) as server, \
            tempfile.TemporaryDirectory(dir=args.data_dir, prefix="scratch-") as scratch:
        bench = Bench(args, server, nwb_dir, zarr_dir, scratch, log)
        bench.catalog = catalog
        try:
            for r in rows:
                module = importlib.import_module(f".{ROW_MODULES[r]}", __package__)
                log(f"row {r}: {module.TITLE}")
                t = time.perf_counter()
                try:
                    reports.append(module.run(bench))
                except Exception as e:  # noqa: BLE001 - one row's failure must not lose the rest
                    failed.append(r)
                    log(traceback.format_exc())
                    reports.append(report.failed_row(r, module.TITLE, e))
                log(f"  row {r} done in {time.perf_counter() - t:.0f} s")
        finally:
            bench.close()
        sizes = bench.sizes()
        machine = bench.machine
    load_after = measure.machine()["load_average"]
    date = _dt.date.today().isoformat()
    out = args.out or DEFAULT_RESULTS / f"{date}-{args.preset}.md"
    latency = args.latency
    lat = ("none" if not latency else f"{latency * 1000:g} ms per request" if
           isinstance(latency, float) else
           f"uniform {latency[0] * 1000:g}–{latency[1] * 1000:g} ms per request")
    setup = {
        "machine": f"{machine['cpu']}, {machine['usable_cores']} usable cores "
                   f"({machine['cores']} online), {machine['memory_gb']} GB RAM; "
                   f"{machine['platform']}; Python {machine['python']}",
        "load average (1, 5, 15 min) before / after": f"{load_before} / {load_after}",
        "S3 server": "moto in its own process on 127.0.0.1, files served in place, behind the "
                     f"counting proxy (own process); injected latency: {lat}",
        "repetitions": f"{args.reps} per measurement, cold each time; medians reported",
        "worker counts": ", ".join(map(str, sorted(set(args.workers))))
                         + f" ({args.threads} thread{'s' if args.threads > 1 else ''} each)",
        "run time": f"{(time.perf_counter() - started) / 60:.1f} min",
        **sizes,
    }
    caveats = list(args.note) + standard_caveats(args, machine)
    context = {"preset": args.preset if args.cache_dir is None else f"{args.preset} "
               f"({args.cache_dir.name})", "date": date,
               "command": "python -m benchmarks " + " ".join(shlex.quote(a)
                                                              for a in args.argv),
               "setup": setup, "versions": measure.versions()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.document(reports, context, caveats))
    raw = {"context": context, "caveats": caveats,
           "rows": [{"row": r.row, "title": r.title,
                     "results": [x.to_dict() for x in r.results],
                     "targets": [vars(t) for t in r.targets]} for r in reports]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    log(f"results: {out}")
    if failed:
        raise RowsFailed(f"row(s) {', '.join(map(str, failed))} failed (see {out})")
    return out


class RowsFailed(RuntimeError):
    """Some rows raised: the results file holds the others and the errors."""


def standard_caveats(args, machine: dict) -> list[str]:
    out = [
        "AllenSDK 2.16 pins numpy 1.23 / pandas 1.5 and cannot share this environment. Row 6 "
        "runs AllenSDK itself in its own environment (.tools/allensdk) where it is installed "
        "and can read the cache (row 6 says whether it did); row 3's AllenSDK way is emulated "
        "(whole-file download, pynwb `data[:]` as its `get_lfp` does, scipy's welch).",
        "Everything (S3 server, proxy, Dask workers, the comparators) shares one machine; "
        "throughput and scaling are bounded by its cores, not by a network.",
    ]
    if max(args.workers) < 8:
        out.append(f"The machine has {machine['usable_cores']} usable cores: the scaling row "
                   "ran with " + ", ".join(map(str, sorted(set(args.workers)))) + " workers "
                   "only; run `python -m benchmarks --workers 1,2,4,8,16` on a 16-core machine "
                   "for the 8-worker efficiency target.")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description="Side-by-side benchmarks (issues 8, 15); see "
                                            "benchmarks/__init__.py.")
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    with contextlib.suppress(AttributeError):
        logging.getLogger("distributed").setLevel(logging.ERROR)
    try:
        run(args)
    except RowsFailed as e:
        print(e, file=sys.stderr)
        return 1
    return 0
