"""Welch PSD from segments that lie inside labelled time intervals, one data block at a time.

Why: a probe's LFP arrives as blocks (one per storage-chunk row, ~37.6 s). Each block contributes
the sum of windowed periodograms of the segments that fit entirely inside it *and* inside an
interval of a label (a stimulus type, or the whole recording); sums and counts from all blocks add
up, so a spectrum of hours of data never needs more than one block in memory, and one pass over the
data yields the spectra of every stimulus at once.

Scaling matches ``scipy.signal.welch(..., scaling="density", detrend="constant")`` on the same
segments: ``finalize(sum, count)`` of a single interval equals ``welch`` of that interval's samples
with ``noverlap = nperseg - step``.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def segment_starts(n: int, t0: float, fs: float, intervals: np.ndarray, nperseg: int,
                   step: int) -> np.ndarray:
    """Start indices (into a block of ``n`` samples starting at time ``t0``) of the segments that
    lie fully inside the block and inside one of ``intervals`` (``(k, 2)`` start/stop seconds).

    Segments are laid out from each interval's first sample, every ``step`` samples, as welch
    lays them out over that interval (so a block boundary never shifts the grid).
    """
    out = []
    for start, stop in np.asarray(intervals, dtype=np.float64).reshape(-1, 2):
        # first sample at or after start, last sample before stop, relative to the block
        a = int(np.ceil((start - t0) * fs - 1e-9))
        b = int(np.ceil((stop - t0) * fs - 1e-9))  # exclusive
        if b - a < nperseg:
            continue
        first = a if a >= 0 else a + int(np.ceil(-a / step)) * step
        last = min(b, n) - nperseg
        if last < first:
            continue
        out.append(np.arange(first, last + 1, step))
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def periodogram_sum(block: np.ndarray, starts: np.ndarray, nperseg: int,
                    window: str = "hann") -> np.ndarray:
    """Sum over segments of ``|rfft(detrend(x) * w)|**2``: ``(n_freq, n_channel)`` float64."""
    block = np.asarray(block)
    n_freq = nperseg // 2 + 1
    if starts.size == 0:
        return np.zeros((n_freq, block.shape[1]))
    w = signal.get_window(window, nperseg)
    acc = np.zeros((n_freq, block.shape[1]))
    for s0 in range(0, starts.size, 64):  # bounded temporaries
        idx = starts[s0:s0 + 64, None] + np.arange(nperseg)[None, :]
        seg = block[idx].astype(np.float64)  # (k, nperseg, channel)
        seg -= seg.mean(axis=1, keepdims=True)
        spec = np.fft.rfft(seg * w[None, :, None], axis=1)
        acc += (spec.real**2 + spec.imag**2).sum(axis=0)
    return acc


def finalize(psd_sum: np.ndarray, count: int | np.ndarray, fs: float, nperseg: int,
             window: str = "hann") -> tuple[np.ndarray, np.ndarray]:
    """``(frequencies, psd)`` in V²/Hz from accumulated sums (one-sided density scaling)."""
    w = signal.get_window(window, nperseg)
    scale = 1.0 / (fs * (w * w).sum())
    psd = np.asarray(psd_sum, dtype=np.float64) * scale
    count = np.asarray(count, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        psd = psd / count.reshape(count.shape + (1,) * (psd.ndim - count.ndim))
    # one-sided: double all bins but DC (and Nyquist for even nperseg)
    end = -1 if nperseg % 2 == 0 else None
    psd[..., 1:end, :] *= 2.0
    return np.fft.rfftfreq(nperseg, 1.0 / fs), psd


def labelled_sums(block: np.ndarray, t0: float, fs: float, intervals: dict[str, np.ndarray],
                  nperseg: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label: ``sums (n_label, n_freq, n_channel)`` and ``counts (n_label,)`` of one block."""
    sums, counts = [], []
    for label in intervals:
        starts = segment_starts(len(block), t0, fs, intervals[label], nperseg, step)
        sums.append(periodogram_sum(block, starts, nperseg))
        counts.append(starts.size)
    return np.stack(sums), np.asarray(counts, dtype=np.int64)
