"""The Welch kernel per LFP block, before and after "one FFT per segment", and the machine limit.

One realistic block: 95 channels × 46,989 samples float32 (one storage-chunk row of a published
LFP file, 37.6 s at 1250 Hz), 1 s Hann segments with 50 % overlap (nperseg 1250, step 625), and
seven labels: ``"all"`` plus six stimulus epochs tiling the block (each epoch one interval, as a
stimulus's back-to-back presentations are once merged; epoch edges lie on the segment grid so
both kernels select the same segments and their results can be compared).

* **before** — ``kernels/segment_psd.labelled_sums`` as of commit 3642908, verbatim below: per
  label, float64, segment-major ``(segment, time, channel)`` FFT along the middle axis, so each
  segment is transformed once for ``"all"`` and again for its stimulus;
* **after** — ``kernels.segment_psd.block_partial``: each segment transformed once and added to
  every label containing it, float32 FFT on contiguous ``(channel, segment, time)`` batches,
  float64 accumulation; beside it the same kernel on float64 data (the precision's share) and
  with ``"all"`` alone (what extra labels cost), and the batch-size sweep behind
  ``BATCH_BYTES``;
* **machine limit** (issue 15, item 4) — decode + FFT of one block with its compressed bytes
  already in memory, no I/O: inflate 95 real gzip-9 chunks of a synthetic cache in the published
  layout, assemble the ``(time, channel)`` block as the reader does, run the kernel. Today's path
  (stdlib zlib + the old kernel) beside the new one (``neuropixels_dask.inflate`` + the new
  kernel).

Times are the best of ``--reps`` interleaved repetitions (the machine is shared; the best is the
least disturbed), with medians beside them.

    .venv/bin/python -m benchmarks.fft_kernel                   # chunks from /tmp/k-cache
    .venv/bin/python -m benchmarks.fft_kernel --reps 9 --out benchmarks/results/FILE.md
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import signal

from neuropixels_dask import inflate
from neuropixels_dask.kernels import segment_psd as K

from .inflate_codecs import DEFAULT_CACHE, lfp_file, raw_rows
from .measure import machine

FS = 1250.0
N_TIME = 46_989  # one published storage chunk: 37.6 s
N_CHANNEL = 95  # LFP channels of a probe (every 4th of 384, minus reference channels)
NPERSEG, STEP = 1250, 625
N_STIMULI = 6
DEFAULT_REPS = 7
BATCH_SWEEP = (1 * 2**20, 4 * 2**20, 16 * 2**20, 64 * 2**20)


# ---- before: kernels/segment_psd.py at commit 3642908, verbatim ---------------------------------
def _before_segment_starts(n, t0, fs, intervals, nperseg, step):
    out = []
    for start, stop in np.asarray(intervals, dtype=np.float64).reshape(-1, 2):
        a = int(np.ceil((start - t0) * fs - 1e-9))
        b = int(np.ceil((stop - t0) * fs - 1e-9))
        if b - a < nperseg:
            continue
        first = a if a >= 0 else a + int(np.ceil(-a / step)) * step
        last = min(b, n) - nperseg
        if last < first:
            continue
        out.append(np.arange(first, last + 1, step))
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def _before_periodogram_sum(block, starts, nperseg, window="hann"):
    block = np.asarray(block)
    n_freq = nperseg // 2 + 1
    if starts.size == 0:
        return np.zeros((n_freq, block.shape[1]))
    w = signal.get_window(window, nperseg)
    acc = np.zeros((n_freq, block.shape[1]))
    for s0 in range(0, starts.size, 64):
        idx = starts[s0:s0 + 64, None] + np.arange(nperseg)[None, :]
        seg = block[idx].astype(np.float64)
        seg -= seg.mean(axis=1, keepdims=True)
        spec = np.fft.rfft(seg * w[None, :, None], axis=1)
        acc += (spec.real**2 + spec.imag**2).sum(axis=0)
    return acc / (w * w).sum()  # per unit-energy taper, as the kernel's sums are


def before_labelled_sums(block, t0, fs, intervals, nperseg, step):
    sums, counts = [], []
    for label in intervals:
        starts = _before_segment_starts(len(block), t0, fs, intervals[label], nperseg, step)
        sums.append(_before_periodogram_sum(block, starts, nperseg))
        counts.append(starts.size)
    return np.stack(sums), np.asarray(counts, dtype=np.int64)


# ---- the block ------------------------------------------------------------------------------
def make_block(seed: int = 0) -> np.ndarray:
    """LFP-like float32 ``(time, channel)``: a 1/f background with an offset per channel and two
    rhythms (the FFT's cost does not depend on the values; the precision check does)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((N_TIME, N_CHANNEL))
    f = np.fft.rfftfreq(N_TIME, 1 / FS)
    shape = 1 / np.maximum(f, 0.5)[:, None]
    x = np.fft.irfft(np.fft.rfft(white, axis=0) * shape, n=N_TIME, axis=0)
    t = np.arange(N_TIME)[:, None] / FS
    x += 0.5 * np.sin(2 * np.pi * 8 * t) + 0.2 * np.sin(2 * np.pi * 40 * t + np.arange(N_CHANNEL))
    return (1e-4 * (x + rng.uniform(-2, 2, N_CHANNEL))).astype(np.float32)  # volts


def intervals() -> dict[str, np.ndarray]:
    """``"all"`` + six epochs tiling the block, edges on the segment grid (seconds, t0 = 0)."""
    n_grid = (N_TIME - NPERSEG) // STEP + 1
    edges = [round(i * n_grid / N_STIMULI) * STEP for i in range(N_STIMULI)] + [N_TIME]
    out = {"all": np.array([[0.0, N_TIME / FS]])}
    for i in range(N_STIMULI):
        out[f"stimulus_{i}"] = np.array([[edges[i] / FS, edges[i + 1] / FS]])
    return out


def segmenting(iv: dict[str, np.ndarray]) -> K.Segmenting:
    return K.labelled_segmenting(np.arange(N_TIME) / FS, iv, NPERSEG, STEP)


# ---- timing ---------------------------------------------------------------------------------
def interleaved(cases: dict[str, Callable[[], object]], reps: int) -> dict[str, tuple[float, float]]:
    """Best and median seconds of each case, the cases run in turn ``reps`` times."""
    for fn in cases.values():
        fn()  # warm: plans, pages, pool threads
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def chunks_for_block(cache: str) -> tuple[list[bytes], int]:
    """95 real compressed chunks of (46989, 1) float32: a demo probe has 70–96 LFP channels, so
    the first rows are taken in turn until there are 95."""
    rows, _, info = raw_rows(lfp_file(cache), 2)
    if info["chunks"] != (N_TIME, 1):
        raise SystemExit(f"chunks {info['chunks']} are not the published (46989, 1)")
    blobs = [b for row in rows for b in row][:N_CHANNEL]
    if len(blobs) < N_CHANNEL:
        raise SystemExit(f"only {len(blobs)} chunks in two rows of {cache}")
    return blobs, info["chunk_bytes"]


def decode(blobs: list[bytes], chunk_bytes: int, backend: str | None, threads: int) -> np.ndarray:
    """Inflate and assemble the ``(time, channel)`` block as ``readers/nwb.read_lfp_block`` does."""
    if backend == "zlib-stdlib-inline":
        raws = [zlib.decompress(b) for b in blobs]  # today's reader
    else:
        raws = inflate.inflate_many(blobs, chunk_bytes, backend=backend, threads=threads)
    out = np.empty((N_TIME, len(raws)), np.float32)
    for j, raw in enumerate(raws):
        out[:, j] = np.frombuffer(raw, np.float32)
    return out


def row(name: str, best_med: tuple[float, float], ref: float, note: str = "") -> str:
    best, med = best_med
    return f"| {name} | {best * 1e3:,.1f} | {med * 1e3:,.1f} | {ref / best:.2f}× | {note} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", default=DEFAULT_CACHE, help="synthetic cache with LFP (demo preset)")
    p.add_argument("--reps", type=int, default=DEFAULT_REPS)
    p.add_argument("--out", type=Path, help="also write the Markdown here")
    args = p.parse_args(argv)
    load_before = machine()["load_average"]
    block = make_block()
    block64 = block.astype(np.float64)
    iv = intervals()
    seg = segmenting(iv)
    seg_all = segmenting({"all": iv["all"]})

    # agreement: same segments, so the sums must agree to float32 precision
    old_sums, old_counts = before_labelled_sums(block, 0.0, FS, iv, NPERSEG, STEP)
    new = K.block_partial(block, 0, seg)
    assert new.counts.tolist() == old_counts.tolist(), (new.counts, old_counts)
    rel_all = np.abs(new.sums - old_sums) / old_sums
    rel, rel_median = float(rel_all.max()), float(np.median(rel_all))
    worst_hz = float(np.argmax(rel_all.max(axis=(0, 2))) * FS / NPERSEG)
    power = old_sums[0].mean(axis=1)
    range_db = float(10 * np.log10(power.max() / power[int(worst_hz * NPERSEG / FS)]))
    _, ref = signal.welch(block64, FS, nperseg=NPERSEG, noverlap=NPERSEG - STEP, axis=0)
    _, psd, _ = K.finalize(new.sums, new.counts, FS, NPERSEG)
    rel_welch = float(np.max(np.abs(psd[0] - ref) / ref))
    n_seg = int(new.counts[0])
    ffts_before = int(old_counts.sum())

    kernel = interleaved({
        "before": lambda: before_labelled_sums(block, 0.0, FS, iv, NPERSEG, STEP),
        "after": lambda: K.block_partial(block, 0, seg),
        "after, float64 data": lambda: K.block_partial(block64, 0, seg),
        "after, \"all\" only": lambda: K.block_partial(block, 0, seg_all),
    }, args.reps)
    sweep = {}
    default_batch = K.BATCH_BYTES
    try:
        for b in BATCH_SWEEP:
            K.BATCH_BYTES = b
            sweep[b] = interleaved({"k": lambda: K.block_partial(block, 0, seg)},
                                   max(3, args.reps // 2))["k"]
    finally:
        K.BATCH_BYTES = default_batch

    blobs, chunk_bytes = chunks_for_block(args.cache)
    best_backend = inflate.BACKEND
    limit = interleaved({
        "inflate: stdlib zlib, inline (today)": lambda: decode(blobs, chunk_bytes,
                                                               "zlib-stdlib-inline", 1),
        f"inflate: {best_backend}, 1 thread": lambda: decode(blobs, chunk_bytes, best_backend, 1),
        f"inflate: {best_backend}, pool of {inflate.THREADS}":
            lambda: decode(blobs, chunk_bytes, best_backend, inflate.THREADS),
        "today: zlib inline + before kernel": lambda: before_labelled_sums(
            decode(blobs, chunk_bytes, "zlib-stdlib-inline", 1), 0.0, FS, iv, NPERSEG, STEP),
        f"new: {best_backend} (1 thread) + after kernel": lambda: K.block_partial(
            decode(blobs, chunk_bytes, best_backend, 1), 0, seg),
        f"new: {best_backend} (pool of {inflate.THREADS}) + after kernel": lambda: K.block_partial(
            decode(blobs, chunk_bytes, best_backend, inflate.THREADS), 0, seg),
    }, args.reps)
    m = machine()
    block_mb = N_TIME * N_CHANNEL * 4 / 1e6
    compressed_mb = sum(len(b) for b in blobs) / 1e6
    b0 = kernel["before"][0]
    today = limit["today: zlib inline + before kernel"]
    newpath = limit[f"new: {best_backend} (1 thread) + after kernel"]
    pooled = limit[f"new: {best_backend} (pool of {inflate.THREADS}) + after kernel"]
    blocks_per_hour = 3600 * FS / N_TIME
    doc = [
        f"# Welch kernel per LFP block, and the machine limit — {datetime.date.today()}",
        "",
        f"Command: `python -m benchmarks.fft_kernel --cache {args.cache} --reps {args.reps}`",
        "",
        "## Result",
        "",
        f"- One block ({N_CHANNEL} ch × {N_TIME:,} samples float32, {block_mb:.1f} MB; "
        f"\"all\" + {N_STIMULI} stimuli): **{kernel['before'][0]:.3f} s before, "
        f"{kernel['after'][0]:.3f} s after: {b0 / kernel['after'][0]:.1f}× faster** "
        f"({ffts_before} segment FFTs per channel before, {n_seg} after).",
        f"- Machine limit, decode + FFT of one block from bytes in memory, one thread: "
        f"**{newpath[0]:.3f} s per block** ({block_mb / newpath[0]:.0f} MB/s of decoded LFP), "
        f"against {today[0]:.3f} s for today's path ({today[0] / newpath[0]:.1f}×); with the "
        f"inflate pool of {inflate.THREADS} (a second core) {pooled[0]:.3f} s.",
        f"- Agreement: the new sums equal the old ones within {rel_median:.0e} (median, "
        f"relative) and {rel:.1e} (worst: {worst_hz:.0f} Hz, {range_db:.0f} dB below the "
        "strongest bin, where float32's rounding of the FFT shows; float64 sums); \"all\" "
        f"equals `scipy.signal.welch` of the float64-cast block within {rel_welch:.1e}.",
        "",
        "## Kernel per block",
        "",
        "| kernel | best ms | median ms | vs before | note |",
        "|---|---:|---:|---:|---|",
        row("before (commit 3642908)", kernel["before"], b0,
            f"float64, per label: {ffts_before} FFTs per channel"),
        row("after", kernel["after"], b0, f"float32 FFT, one per segment: {n_seg} per channel"),
        row("after, float64 data", kernel["after, float64 data"], b0,
            "same kernel, float64 FFT: what float32 saves"),
        row("after, \"all\" only", kernel["after, \"all\" only"], b0,
            "one label: what the six stimuli add"),
        "",
        "Batch size (`segment_psd.BATCH_BYTES`, working set of one batch of segments):",
        "",
        "| BATCH_BYTES | best ms | median ms |",
        "|---:|---:|---:|",
        *[f"| {b // 2**20} MiB{' (default)' if b == default_batch else ''} | "
          f"{v[0] * 1e3:,.1f} | {v[1] * 1e3:,.1f} |" for b, v in sweep.items()],
        "",
        "## Machine limit: decode + FFT from bytes in memory",
        "",
        f"{N_CHANNEL} real compressed chunks ({compressed_mb:.1f} MB, gzip-9, (46989, 1) float32, "
        f"from `{lfp_file(args.cache)}`), inflated and assembled into the (time, channel) block "
        "as the reader does, then the kernel. No I/O.",
        "",
        "| step | best ms | median ms | vs today (same step) | note |",
        "|---|---:|---:|---:|---|",
        *[row(k, v, (today if "kernel" in k else limit["inflate: stdlib zlib, inline (today)"])[0],
              f"{block_mb / v[0]:.0f} MB/s decoded") for k, v in limit.items()],
        "",
        f"One hour of one probe is {blocks_per_hour:.1f} blocks: {blocks_per_hour * newpath[0]:.1f} "
        f"s of decode + FFT on one core (today's path: {blocks_per_hour * today[0]:.1f} s). That "
        "is the ceiling a whole-probe spectrum on N single-threaded workers approaches: "
        "blocks × this ÷ N.",
        "",
        "## Machine",
        "",
        f"- {m['cpu']}, {m['usable_cores']} usable cores, {m['memory_gb']} GB; {m['platform']}; "
        f"Python {m['python']}; numpy {np.__version__}, scipy {__import__('scipy').__version__}",
        f"- inflate backend: {inflate.BACKEND} (available: {', '.join(inflate.available())}); "
        f"pool threads {inflate.THREADS}",
        f"- load average (1, 5, 15 min) before / after: {load_before} / {m['load_average']}",
        "- **The machine was shared** with other engineers' work (load average ≈ 2 on 2 cores): "
        "absolute times move by tens of percent between runs; the ratios of cases measured "
        "interleaved in one run are what to use.",
    ]
    text = "\n".join(doc) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
