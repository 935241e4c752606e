"""Row 8: the catalog at the release's size: ``open_cache`` + the session table, units, channels.

The cache tables of the real release are large (units.csv ~51 MB for ~99k units, channels.csv
332 × 384 rows) and AllenSDK users wait minutes for ``get_session_table()`` (AllenSDK issue
#1696). The runner generates a catalog of exactly that size (``Preset(release_catalog=True)``:
the tiny preset's NWB files, tables padded with catalog-only sessions; the tiny preset itself uses
its own small tables) and serves it like the rest. Sides, cold each repetition:

* **this package**: ``open_cache(url)``, ``get_session_table()``, ``get_units()``,
  ``get_channels()``; then the same again with a second ``open_cache`` in the same process,
  whose requests show how often each table is read (once per process: only the manifest again);
* **pandas over s3fs defaults**: ``pd.read_csv(s3fs.open(key))`` of the four CSV files, the floor
  of reading them at all (no merge, no filters).
"""

from __future__ import annotations

import os

import pandas as pd

from . import comparators as C
from .measure import MB, Meter, Result, RowReport, Target, clear_caches
from .report import costs, results_table

ROW = 8
TITLE = "Release-scale catalog"
PREFIX = "catalog/visual-coding-neuropixels/ecephys-cache"
TABLES = ("sessions", "probes", "channels", "units")
OURS = "this package"
TIME_TARGET_S = 3.0


def _ours(bench, url: str) -> tuple:
    from neuropixels_dask import open_cache

    clear_caches()
    meter = Meter(bench.server)
    cache = open_cache(url, **bench.storage_options)
    sizes = (len(cache.get_session_table()), len(cache.get_units()), len(cache.get_channels()))
    first = meter.split("open + tables")
    again = open_cache(url, **bench.storage_options)
    again.get_session_table(), again.get_units(), again.get_channels()
    second = meter.split("again, same process")
    return first, second, sizes


def _pandas(bench, key_prefix: str):
    clear_caches()
    meter = Meter(bench.server)
    fs = C.s3fs_defaults(bench.server)
    for name in TABLES:
        with fs.open(f"{bench.server.bucket}/{key_prefix}/{name}.csv", "rb") as f:
            pd.read_csv(f)
    return meter.split("read")


def run(bench) -> RowReport:
    folder, key_prefix, label = bench.catalog
    url = bench.server.url(key_prefix)
    csv_bytes = {name: os.path.getsize(os.path.join(folder, f"{name}.csv")) for name in TABLES}
    case = "open + session table + units + channels"
    ours = Result(ROW, case, OURS, note="`open_cache(url)`, `get_session_table()`, "
                                        "`get_units()`, `get_channels()` (each CSV one "
                                        "whole-object GET, parsed once per process)")
    again = Result(ROW, "the same again (new cache object, same process)", OURS,
                   note="a second `open_cache` and the same three calls")
    floor = Result(ROW, case, "pandas over s3fs defaults",
                   note="`pd.read_csv(s3fs.open(key))` of the four CSVs, nothing else")
    sizes = None
    for _rep in range(bench.reps):
        first, second, sizes = _ours(bench, url)
        ours.samples.append(first)
        again.samples.append(second)
        floor.samples.append(_pandas(bench, key_prefix))
        bench.log(f"    catalog: {first.seconds:.2f} s, {first.bytes / MB:.1f} MB, "
                  f"{first.get_requests} GETs; again {second.get_requests} GETs")
    rep = RowReport(ROW, TITLE, results=[ours, again, floor])
    total = sum(csv_bytes.values())
    rep.body.append(
        f"{label}: " + ", ".join(f"{name}.csv {n / MB:.1f} MB" for name, n in csv_bytes.items())
        + f" ({total / MB:.1f} MB in all). The session table has {sizes[0]} sessions; "
        f"`get_units()` (default filters) returns {sizes[1]:,} units, `get_channels()` "
        f"{sizes[2]:,} channels.")
    rep.body.append(results_table(rep.results, ref_side=OURS))
    b, t = ours.median("bytes"), ours.median("seconds")
    gets, again_gets = ours.median("get_requests"), again.median("get_requests")
    csv_reads = gets - 1  # one GET is the manifest
    rep.body.append(
        f"Requests by kind, first pass: {ours.samples[-1].kinds}; second pass: "
        f"{again.samples[-1].kinds}. Each CSV was read {csv_reads / len(TABLES):g} time(s) in "
        f"the first pass and {max(0.0, again_gets - 1) / len(TABLES):g} in the second.")
    rep.targets.append(Target(15, "release-scale catalog: cache open + the tables ≤ 1.1× the "
                                  "CSV bytes", f"{b / total:.3f}× ({b / MB:.1f} of "
                                               f"{total / MB:.1f} MB)", b <= 1.1 * total))
    rep.targets.append(Target(15, "release-scale catalog: each CSV read once per process",
                              f"{csv_reads:.0f} CSV GETs for {len(TABLES)} tables, then "
                              f"{max(0.0, again_gets - 1):.0f} for a second cache object",
                              csv_reads == len(TABLES) and again_gets == 1))
    rep.targets.append(Target(15, f"release-scale catalog: open + tables ≤ {TIME_TARGET_S:g} s "
                                  "with the run's latency", f"{t:.2f} s",
                              t <= TIME_TARGET_S if label.startswith("release") else None))
    rep.headlines.append((f"Catalog ({label}) vs pandas over s3fs defaults",
                          f"{t:.2f} s, {costs(floor, ours, ('seconds', 'bytes'))}"))
    return rep
