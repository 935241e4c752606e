"""Choose the LFP chunk/shard layout of ``convert`` by measurement (see docs/zarr-layout.md).

For one probe of a synthetic cache at real channel density (the ``demo`` preset: ~70–96 LFP
channels, ~8.5 min), each candidate layout is written to a local S3 server (moto behind the
counting proxy, with a per-request latency like an object store seen from a compute node) and
read the two ways that matter:

* **1 s all-channel windows** at random times (stimulus-locked analyses): requests, bytes and
  wall time per window;
* **a whole-probe pass** in Dask-task-sized blocks on a few threads (spectra, filtering): total
  requests, bytes and wall time.

The published NWB file is read the same way on the same server as the baseline. Output: a
markdown table on stdout (and ``--out FILE``).

    .venv/bin/python benchmarks/zarr_layout.py                    # generates the demo cache once
    .venv/bin/python benchmarks/zarr_layout.py --cache /tmp/demo --latency 0.02
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import zarr

from neuropixels_dask import caching, storage
from neuropixels_dask import zarrstore as zs
from neuropixels_dask.convert import create_lfp_arrays
from neuropixels_dask.local.counting import count_requests
from neuropixels_dask.readers import nwb
from neuropixels_dask.readers import zarr as zr
from neuropixels_dask.readers.base import LFPSource
from neuropixels_dask.tasks.lfp import block_bounds
from neuropixels_dask.zarrstore import LFP_VOLTS_PER_BIT, Layout, encode_lfp_int16


@dataclass(frozen=True)
class Candidate:
    name: str
    layout: Layout
    encoding: str


CANDIDATES = [
    Candidate("0.5 s chunks, 64 s shards, int16", Layout(lfp_chunk=625, lfp_chunks_per_shard=128),
              zs.ENCODING_INT16),
    Candidate("1 s chunks, 16 s shards, int16", Layout(lfp_chunk=1250, lfp_chunks_per_shard=16),
              zs.ENCODING_INT16),
    Candidate("1 s chunks, 64 s shards, int16", Layout(lfp_chunk=1250, lfp_chunks_per_shard=64),
              zs.ENCODING_INT16),
    Candidate("1 s chunks, 256 s shards, int16",
              Layout(lfp_chunk=1250, lfp_chunks_per_shard=256), zs.ENCODING_INT16),
    Candidate("2 s chunks, 64 s shards, int16", Layout(lfp_chunk=2500, lfp_chunks_per_shard=32),
              zs.ENCODING_INT16),
    Candidate("4 s chunks, 64 s shards, int16", Layout(lfp_chunk=5000, lfp_chunks_per_shard=16),
              zs.ENCODING_INT16),
    Candidate("1 s chunks, no shards, int16", Layout(lfp_chunk=1250, lfp_chunks_per_shard=1),
              zs.ENCODING_INT16),
    Candidate("16 s chunks, no shards, int16", Layout(lfp_chunk=20000, lfp_chunks_per_shard=1),
              zs.ENCODING_INT16),
    Candidate("1 s chunks, 64 s shards, float32+zstd7",
              Layout(lfp_chunk=1250, lfp_chunks_per_shard=64), zs.ENCODING_FLOAT32),
]


def ensure_cache(path: str) -> str:
    """The demo preset, one session (generated once, ~40 s)."""
    from neuropixels_dask.local.synth import generate_cache

    generate_cache(path, "demo", n_sessions=1, progress=False)
    return path


def load_probe(cache: str) -> tuple[LFPSource, np.ndarray, int, str]:
    sessions = sorted(d for d in os.listdir(cache) if d.startswith("session_"))
    sid = int(sessions[0].split("_")[1])
    reader = nwb.NWBSessionReader(os.path.join(cache, sessions[0]), sid)
    probes = reader.probes()
    pid = int(probes.index[probes["has_lfp_data"]][0])
    src = reader.lfp_source(pid, str(probes.loc[pid, "description"]))
    data = nwb.read_lfp_block(src, 0, src.shape[0], np.arange(src.shape[1]))
    return src, data, pid, sessions[0]


def measure_reads(src: LFPSource, server, read, starts: np.ndarray, block: int, threads: int
                  ) -> dict:
    n_win = int(round(src.rate))
    read(src, 0, min(n_win, src.shape[0]))  # metadata / open file: not part of the reads
    with count_requests(server) as m:
        t0 = time.perf_counter()
        for s in starts:
            read(src, int(s), int(s) + n_win)
        t_win = (time.perf_counter() - t0) / len(starts)
    win = m.stats
    bounds = block_bounds(0, src.shape[0], block)
    with count_requests(server) as m, ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda ab: read(src, ab[0], ab[1]), bounds))
        t_pass = time.perf_counter() - t0
    return {"win_req": win.requests / len(starts), "win_kb": win.bytes / len(starts) / 1e3,
            "win_ms": t_win * 1e3, "pass_req": m.stats.requests, "pass_mb": m.stats.bytes / 1e6,
            "pass_s": t_pass, "tasks": len(bounds)}


def write_candidate(root_url: str, options: dict, cand: Candidate, src: LFPSource,
                    data: np.ndarray) -> None:
    store = zs.open_store(root_url, options, read_only=False)
    root = zarr.open_group(store, mode="w", zarr_format=3)
    create_lfp_arrays(root, "lfp", src, cand.encoding, cand.layout)
    arr = root["lfp/data"]
    step = (arr.shards or arr.chunks)[0]
    for i in range(0, src.shape[0], step):
        block = data[i:i + step]
        if cand.encoding == zs.ENCODING_INT16:
            block = encode_lfp_int16(block, LFP_VOLTS_PER_BIT)
            assert block is not None, "int16 candidate needs data on the 0.195 µV grid"
        arr[i:i + step] = block


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="/tmp/npd-bench/demo1", help="NWB cache (generated if "
                   "missing: demo preset, one session)")
    p.add_argument("--latency", type=float, default=0.02, help="seconds added per request")
    p.add_argument("--windows", type=int, default=30)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--only", nargs="*", help="substrings of candidate names to run")
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args(argv)

    from neuropixels_dask.local.s3server import LocalS3Server

    if not os.path.exists(os.path.join(args.cache, "manifest.json")):
        print(f"generating the demo cache at {args.cache} …", file=sys.stderr)
        ensure_cache(args.cache)
    nsrc, data, pid, sdir = load_probe(args.cache)
    # Real Allen LFP is int16 × 0.195 µV and has no negative zeros; the generator's rounding
    # leaves some (-0.0), which only the float32 encoding keeps. int16 candidates get the
    # same values with +0.0 (identical in every other bit).
    grid = data + np.float32(0.0)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, nsrc.shape[0] - int(nsrc.rate) - 1, args.windows)
    nwb_size = os.path.getsize(nsrc.url)
    rows = []
    with LocalS3Server(latency=args.latency, mounts={"nwb": args.cache}) as s3:
        opts = s3.storage_options()
        direct = s3.storage_options(direct=True)
        fs = s3.filesystem(direct=True)
        remote_nwb = LFPSource(**{**nsrc.__dict__, "url": storage.join(
            s3.url("nwb"), sdir, os.path.basename(nsrc.url)), "storage_options": opts})
        r = measure_reads(remote_nwb, s3, lambda s, a, b: nwb.read_lfp_block(
            s, a, b, np.arange(s.shape[1])), starts, nsrc.chunks[0], args.threads)
        rows.append(("NWB (gzip-9, 1 ch × 37.6 s chunks)", nwb_size, 1, r))
        for cand in CANDIDATES:
            if args.only and not any(o in cand.name for o in args.only):
                continue
            url = s3.url(f"layouts/{len(rows)}.zarr")
            values = grid if cand.encoding == zs.ENCODING_INT16 else data
            t0 = time.perf_counter()
            write_candidate(url, direct, cand, nsrc, values)
            t_write = time.perf_counter() - t0
            caching.clear_all()
            arr = zarr.open_array(zs.open_store(url, direct), path="lfp/data", mode="r")
            zsrc = LFPSource("zarr", url, opts, "lfp/data", "lfp/timestamps", nsrc.shape,
                             ((arr.shards or arr.chunks)[0], nsrc.shape[1]), "<f4",
                             channel_ids=nsrc.channel_ids, t_first=nsrc.t_first,
                             t_last=nsrc.t_last)
            r = measure_reads(zsrc, s3, lambda s, a, b: zr.read_lfp_block(
                s, a, b, np.arange(s.shape[1])), starts, zsrc.chunks[0], args.threads)
            # bit-identical check of the whole probe against the source
            back = zr.read_lfp_block(zsrc, 0, nsrc.shape[0], np.arange(nsrc.shape[1]))
            assert np.array_equal(back.view(np.uint32), values.view(np.uint32)), cand.name
            prefix = url.split("://", 1)[1]
            size = sum(fs.du(prefix + "/lfp/data", total=False).values())
            n_obj = len(fs.find(prefix + "/lfp/data")) - 1
            r["write_s"] = t_write
            rows.append((cand.name, size, n_obj, r))
            fs.rm(prefix, recursive=True)
        caching.clear_all()  # close HDF5 handles on s3fs files while the loop still runs

    n, c = nsrc.shape
    head = (f"Probe {pid}: {n} samples × {c} channels ({n / nsrc.rate:.0f} s, "
            f"{n * c * 4 / 1e6:.0f} MB as float32); {args.windows} random 1 s windows; whole "
            f"pass on {args.threads} threads; {args.latency * 1e3:.0f} ms added per request.\n")
    lines = [head, "| layout | stored MB | × NWB size | objects | 1 s window: requests | "
             "kB | ms | whole probe: tasks | requests | MB | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, size, n_obj, r in rows:
        lines.append(f"| {name} | {size / 1e6:.1f} | {size / nwb_size:.2f} | {n_obj} | "
                     f"{r['win_req']:.1f} | {r['win_kb']:.0f} | {r['win_ms']:.0f} | "
                     f"{r['tasks']} | {r['pass_req']} | {r['pass_mb']:.1f} | "
                     f"{r['pass_s']:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
