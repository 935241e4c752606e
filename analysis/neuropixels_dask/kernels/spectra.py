"""Welch power spectra computed block by block, plus band power and band-limited power envelopes.

A probe's LFP (hours × ~95 channels) never has to be in memory at once: each block of samples
yields a :class:`WelchPartial` (the sum of raw periodograms of the Welch segments it owns, and how
many there were), partials are summed in any order with :func:`combine`, and :func:`finalize`
applies ``scipy.signal.welch``'s scaling (``scaling='density'``, ``average='mean'``, one-sided).

Block / segment contract (what the Dask layer must do so the result equals ``scipy.signal.welch``
on the whole array):

* Segments lie on one global grid: segment ``k`` covers samples ``[k*step, k*step + nperseg)`` of
  the analysed array, ``step = nperseg - noverlap``, for every ``k`` with
  ``k*step + nperseg <= n_time`` (scipy's segments; the trailing partial segment is dropped).
* :func:`welch_partial` counts every grid segment lying entirely inside its block; it must be told
  where the block starts on the grid (``start_offset``, the index of ``block[0]`` in the array).
* So each segment must lie entirely inside exactly one block. :func:`segment_plan` makes such
  blocks: segment ``k`` is owned by the block (storage chunk, or ``block_len`` piece) containing
  its first sample, and that block's slice is extended past its end by up to ``nperseg - 1``
  samples so its last owned segment is whole. With ``block_len`` a multiple of ``step``, the
  slices are ``[i*block_len, (i+1)*block_len + noverlap)``: blocks cut at multiples of the step
  with ``noverlap`` samples borrowed from the next block.

Stimulus-conditioned spectra use the same grid: with ``timestamps`` and ``intervals``, only
segments whose first and last sample times lie inside one ``[start, stop)`` interval (after merging
intervals that touch or overlap) are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal

#: working-memory target of one batch of segments inside :func:`welch_partial`
BATCH_BYTES = 32 * 2**20

Detrend = str | bool | None | Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class WelchPartial:
    """Raw periodogram sums of the segments one block owns; add these, then :func:`finalize`.

    Attributes
    ----------
    power_sum : ndarray (n_freq, n_channel), float64
        Sum over counted segments of ``|rfft(detrend(segment) * window)|**2`` (unscaled).
    counts : ndarray (n_channel,), int64
        Segments counted per channel (differs between channels only with ``nan_policy='omit'``).
    fs, nperseg, noverlap : sampling rate (Hz) and the Welch segmenting, checked on combine.
    win_sq_sum : float
        ``sum(window**2)``, the density normalisation.
    """

    power_sum: np.ndarray
    counts: np.ndarray
    fs: float
    nperseg: int
    noverlap: int
    win_sq_sum: float

    @property
    def n_segments(self) -> int:
        """Segments counted (the maximum over channels)."""
        return int(self.counts.max()) if self.counts.size else 0

    def __add__(self, other: WelchPartial) -> WelchPartial:
        return combine([self, other])


def _step(nperseg: int, noverlap: int | None) -> tuple[int, int, int]:
    nperseg = int(nperseg)
    noverlap = nperseg // 2 if noverlap is None else int(noverlap)
    if nperseg < 1:
        raise ValueError(f"nperseg must be positive, got {nperseg}")
    if not 0 <= noverlap < nperseg:
        raise ValueError(f"noverlap must be in [0, nperseg), got {noverlap}")
    return nperseg, noverlap, nperseg - noverlap


def _window(window, nperseg: int) -> np.ndarray:
    if isinstance(window, str | tuple):
        return scipy.signal.get_window(window, nperseg).astype(np.float64)
    win = np.asarray(window, dtype=np.float64)
    if win.shape != (nperseg,):
        raise ValueError(f"window has shape {win.shape}, expected ({nperseg},)")
    return win


def _detrend(seg: np.ndarray, detrend: Detrend) -> np.ndarray:
    """Detrend segments ``(n_seg, nperseg, n_ch)`` along axis 1, like scipy does per segment."""
    if detrend is None or detrend is False:
        return seg
    if detrend == "constant":
        return seg - seg.mean(axis=1, keepdims=True)
    if detrend == "linear":
        return scipy.signal.detrend(seg, type="linear", axis=1)
    if callable(detrend):
        return np.moveaxis(detrend(np.moveaxis(seg, 1, -1)), -1, 1)
    raise ValueError(f"unknown detrend {detrend!r}")


# ---- intervals ---------------------------------------------------------------------------------------
def merge_intervals(intervals: np.ndarray) -> np.ndarray:
    """Union of ``[start, stop)`` intervals as sorted, disjoint intervals (touching ones joined).

    Back-to-back presentations (one's stop equals the next one's start) become one interval, so a
    segment spanning them is "inside" the stimulus.
    """
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    iv = iv[iv[:, 1] > iv[:, 0]]
    if iv.shape[0] == 0:
        return iv
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    run_stop = np.maximum.accumulate(iv[:, 1])
    new = np.ones(len(iv), dtype=bool)
    new[1:] = iv[1:, 0] > run_stop[:-1]
    starts = iv[new, 0]
    group = np.cumsum(new) - 1
    stops = np.zeros(len(starts))
    np.maximum.at(stops, group, iv[:, 1])
    return np.column_stack([starts, stops])


def intervals_mask(times: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """Whether each time lies in the union of ``[start, stop)`` intervals."""
    merged = merge_intervals(intervals)
    times = np.asarray(times, dtype=np.float64)
    i = np.searchsorted(merged[:, 0], times, side="right") - 1
    ok = i >= 0
    out = np.zeros(times.shape, dtype=bool)
    out[ok] = times[ok] < merged[i[ok], 1]
    return out


def segments_in_intervals(t_first: np.ndarray, t_last: np.ndarray,
                          intervals: np.ndarray) -> np.ndarray:
    """Whether each segment (times of its first and last sample) lies inside one interval.

    Intervals are ``[start, stop)`` and merged first (:func:`merge_intervals`), so a segment is
    kept when ``start <= t_first`` and ``t_last < stop`` for one merged interval.
    """
    merged = merge_intervals(intervals)
    t_first = np.asarray(t_first, dtype=np.float64)
    t_last = np.asarray(t_last, dtype=np.float64)
    i = np.searchsorted(merged[:, 0], t_first, side="right") - 1
    ok = i >= 0
    out = np.zeros(t_first.shape, dtype=bool)
    out[ok] = t_last[ok] < merged[i[ok], 1]
    return out


# ---- segmenting --------------------------------------------------------------------------------------
def segment_starts(n_time: int, nperseg: int, noverlap: int | None = None,
                   start_offset: int = 0) -> np.ndarray:
    """Local start indices of the grid segments lying entirely inside a block.

    The block holds samples ``[start_offset, start_offset + n_time)`` of the analysed array; grid
    segment ``k`` starts at global sample ``k * step``.
    """
    nperseg, noverlap, step = _step(nperseg, noverlap)
    first = -(-int(start_offset) // step)  # ceil
    last = (int(start_offset) + int(n_time) - nperseg) // step
    if last < first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, last + 1, dtype=np.int64) * step - int(start_offset)


def segment_plan(n_time: int, nperseg: int, noverlap: int | None = None,
                 block_len: int | None = None, chunks: Sequence[int] | None = None
                 ) -> list[slice]:
    """Overlapping slices of ``[0, n_time)`` such that every Welch segment lies in exactly one.

    Segment ``k`` (start ``k*step``) is owned by the piece containing its start: pieces are
    ``[i*block_len, (i+1)*block_len)``, or the storage ``chunks`` (lengths, e.g. a dask array's
    ``.chunks[0]``) so that each slice reads mostly one chunk. A slice runs from its first owned
    segment's start to its last owned segment's end; pieces owning no segment give no slice. Pass
    each slice's ``start`` as ``start_offset`` to :func:`welch_partial`. When no segment fits
    (``n_time < nperseg``) the plan is ``[slice(0, n_time)]``, whose partial counts nothing, so a
    caller always gets a partial of the right shape (and :func:`finalize` gives NaN).

    Parameters
    ----------
    n_time : int
        Samples in the analysed array.
    nperseg, noverlap : int
        Welch segmenting (``noverlap`` default ``nperseg // 2``, as scipy).
    block_len : int, optional
        Target samples owned per block (any size: smaller or larger than a segment).
    chunks : sequence of int, optional
        Piece lengths instead of ``block_len`` (must sum to ``n_time``).
    """
    nperseg, noverlap, step = _step(nperseg, noverlap)
    n_time = int(n_time)
    n_seg = (n_time - nperseg) // step + 1 if n_time >= nperseg else 0
    if n_seg == 0:
        return [slice(0, n_time)]
    if chunks is not None:
        bounds = np.concatenate([[0], np.cumsum(np.asarray(chunks, dtype=np.int64))])
        if bounds[-1] != n_time:
            raise ValueError(f"chunks sum to {bounds[-1]}, not n_time={n_time}")
    else:
        block_len = n_time if block_len is None else int(block_len)
        if block_len < 1:
            raise ValueError("block_len must be positive")
        bounds = np.append(np.arange(0, n_time, block_len, dtype=np.int64), n_time)
    seg_starts = np.arange(n_seg, dtype=np.int64) * step
    owner = np.searchsorted(bounds, seg_starts, side="right") - 1
    plan = []
    for b in np.unique(owner):
        owned = seg_starts[owner == b]
        plan.append(slice(int(owned[0]), int(owned[-1]) + nperseg))
    return plan


# ---- Welch -------------------------------------------------------------------------------------------
def _as_2d(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block)
    if block.ndim == 1:
        return block[:, None]
    if block.ndim != 2:
        raise ValueError(f"block must be (n_time, n_channel), got shape {block.shape}")
    return block


def empty_partial(n_channel: int, fs: float, nperseg: int, noverlap: int | None = None,
                  window="hann") -> WelchPartial:
    """A partial with no segments: the identity of :func:`combine`."""
    nperseg, noverlap, _ = _step(nperseg, noverlap)
    win = _window(window, nperseg)
    return WelchPartial(np.zeros((nperseg // 2 + 1, n_channel)), np.zeros(n_channel, np.int64),
                        float(fs), nperseg, noverlap, float(np.sum(win * win)))


def welch_partial(block: np.ndarray, fs: float, nperseg: int, noverlap: int | None = None,
                  window="hann", detrend: Detrend = "constant", start_offset: int = 0,
                  timestamps: np.ndarray | None = None, intervals: np.ndarray | None = None,
                  nan_policy: str = "propagate") -> WelchPartial:
    """Sum of raw periodograms over the grid segments lying entirely inside ``block``.

    Computed in float64 whatever the input dtype (LFP is float32), in batches of segments so the
    working memory stays near :data:`BATCH_BYTES` whatever the block size.

    Parameters
    ----------
    block : ndarray (n_time, n_channel) or (n_time,)
        Samples ``[start_offset, start_offset + n_time)`` of the analysed array.
    fs : float
        Sampling rate, Hz.
    nperseg, noverlap : int
        Welch segmenting (``noverlap`` default ``nperseg // 2``); nfft = nperseg.
    window : str, tuple or ndarray
        As ``scipy.signal.get_window`` (default ``'hann'``, periodic, as scipy.signal.welch).
    detrend : ``'constant'``, ``'linear'``, False or callable
        Per segment, as scipy; a callable gets segments with time on the last axis.
    start_offset : int
        Index of ``block[0]`` on the segment grid (see the module docstring).
    timestamps : ndarray (n_time,), optional
        Sample times of the block; with ``intervals``, selects segments (below).
    intervals : ndarray (n_intervals, 2), optional
        ``[start, stop)`` times; only segments whose first and last sample times lie in one
        (merged) interval are counted (:func:`segments_in_intervals`).
    nan_policy : ``'propagate'`` or ``'omit'``
        ``'omit'`` drops, per channel, the segments containing NaN (e.g. masked invalid times),
        instead of letting one NaN make the channel's spectrum NaN.

    Returns
    -------
    WelchPartial
    """
    if nan_policy not in ("propagate", "omit"):
        raise ValueError(f"nan_policy must be 'propagate' or 'omit', got {nan_policy!r}")
    x = _as_2d(block)
    nperseg, noverlap, _ = _step(nperseg, noverlap)
    win = _window(window, nperseg)
    n_time, n_ch = x.shape
    starts = segment_starts(n_time, nperseg, noverlap, start_offset)
    if intervals is not None:
        if timestamps is None:
            raise ValueError("selecting segments by intervals needs the block's timestamps")
        t = np.asarray(timestamps, dtype=np.float64)
        if t.shape != (n_time,):
            raise ValueError(f"timestamps have shape {t.shape}, expected ({n_time},)")
        starts = starts[segments_in_intervals(t[starts], t[starts + nperseg - 1], intervals)]
    n_freq = nperseg // 2 + 1
    power = np.zeros((n_freq, n_ch))
    counts = np.zeros(n_ch, dtype=np.int64)
    if starts.size and n_ch:
        windows = np.lib.stride_tricks.sliding_window_view(x, nperseg, axis=0)  # (n-L+1, ch, L)
        per_seg = nperseg * n_ch * 8 * 4  # segment copy, detrended, windowed, complex spectrum
        batch = max(1, BATCH_BYTES // per_seg)
        taper = win[None, :, None]
        for i in range(0, starts.size, batch):
            seg = np.moveaxis(windows[starts[i:i + batch]], 2, 1).astype(np.float64)
            spec = scipy.fft.rfft(_detrend(seg, detrend) * taper, axis=1)
            p = spec.real ** 2 + spec.imag ** 2  # (n_seg, n_freq, n_ch)
            if nan_policy == "omit":
                bad = np.isnan(seg).any(axis=1)  # (n_seg, n_ch)
                p[np.broadcast_to(bad[:, None, :], p.shape)] = 0.0
                counts += (~bad).sum(axis=0)
            else:
                counts += seg.shape[0]
            power += p.sum(axis=0)
    return WelchPartial(power, counts, float(fs), nperseg, noverlap, float(np.sum(win * win)))


def combine(partials: Iterable[WelchPartial]) -> WelchPartial:
    """Sum partials (any order, any grouping: a tree reduction gives the same result)."""
    partials = list(partials)
    if not partials:
        raise ValueError("combine needs at least one partial (see empty_partial)")
    first = partials[0]
    for p in partials[1:]:
        if (p.fs, p.nperseg, p.noverlap, p.win_sq_sum) != (first.fs, first.nperseg,
                                                            first.noverlap, first.win_sq_sum):
            raise ValueError("partials were computed with different fs/nperseg/noverlap/window")
        if p.power_sum.shape != first.power_sum.shape:
            raise ValueError(f"partials cover different channels: {p.power_sum.shape} vs "
                             f"{first.power_sum.shape}")
    return WelchPartial(np.sum([p.power_sum for p in partials], axis=0),
                        np.sum([p.counts for p in partials], axis=0),
                        first.fs, first.nperseg, first.noverlap, first.win_sq_sum)


def finalize(partial: WelchPartial, fs: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and PSD (V**2/Hz for volts) exactly as ``scipy.signal.welch`` scales them.

    Mean periodogram over counted segments, times ``1 / (fs * sum(window**2))``, doubled except at
    DC and (even ``nperseg``) Nyquist. Channels with no counted segment are NaN.

    Returns
    -------
    freqs : ndarray (n_freq,)
    psd : ndarray (n_freq, n_channel), float64
    """
    fs = partial.fs if fs is None else float(fs)
    with np.errstate(invalid="ignore", divide="ignore"):
        psd = partial.power_sum / partial.counts[None, :] / (fs * partial.win_sq_sum)
    psd[:, partial.counts == 0] = np.nan
    if partial.nperseg % 2:
        psd[1:] *= 2
    else:
        psd[1:-1] *= 2
    return scipy.fft.rfftfreq(partial.nperseg, 1.0 / fs), psd


def welch(x: np.ndarray, fs: float, nperseg: int, noverlap: int | None = None, window="hann",
          detrend: Detrend = "constant", block_len: int | None = None,
          timestamps: np.ndarray | None = None, intervals: np.ndarray | None = None,
          nan_policy: str = "propagate") -> tuple[np.ndarray, np.ndarray]:
    """In-memory Welch PSD through the block path (same numbers as the Dask layer's reduction)."""
    x = _as_2d(x)
    plan = segment_plan(x.shape[0], nperseg, noverlap, block_len=block_len)
    parts = [welch_partial(x[s], fs, nperseg, noverlap, window, detrend, start_offset=s.start,
                           timestamps=None if timestamps is None else np.asarray(timestamps)[s],
                           intervals=intervals, nan_policy=nan_policy) for s in plan]
    return finalize(combine(parts))


# ---- band power ----------------------------------------------------------------------------------------
def band_power(freqs: np.ndarray, psd: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Power in ``[lo, hi)`` Hz: sum of PSD bins in the band times the bin width.

    The rectangle rule on Welch's uniform frequency grid is Parseval-consistent: summed over all
    bins it returns the (detrended) signal's mean square, and a sinusoid of amplitude ``A``
    contributes ``A**2 / 2`` once the band covers its window's main lobe.

    Parameters
    ----------
    freqs : ndarray (n_freq,), uniform
    psd : ndarray (n_freq, ...)
    band : (lo, hi), Hz

    Returns
    -------
    ndarray (...), same units as ``psd * Hz``
    """
    freqs = np.asarray(freqs, dtype=np.float64)
    psd = np.asarray(psd)
    lo, hi = band
    if freqs.size < 2:
        raise ValueError("need at least two frequencies")
    mask = (freqs >= lo) & (freqs < hi)
    return psd[mask].sum(axis=0) * (freqs[1] - freqs[0])


def band_limited_power(x: np.ndarray, fs: float, band: tuple[float, float], win: float,
                       order: int = 4, trim: int = 0) -> np.ndarray:
    """Envelope power of a frequency band, averaged in consecutive windows of ``win`` seconds.

    Zero-phase Butterworth band-pass (``sosfiltfilt``, so envelope timing is not shifted), squared
    magnitude of the analytic signal (Hilbert; a sinusoid of amplitude ``A`` gives ``A**2``), then
    block means over ``round(win * fs)`` samples: a slow power time series whose correlations
    between channels/areas measure co-modulated rhythms (e.g. gamma).

    Filtering and the Hilbert transform are distorted near the ends of ``x``; when mapping over
    time blocks, give each block ``trim`` extra samples of context on both sides (e.g.
    ``dask.array.map_overlap(depth=trim)``) and they are dropped before windowing, so windows of
    block ``i`` start at its first untrimmed sample.

    Parameters
    ----------
    x : ndarray (n_time, n_channel) or (n_time,)
    fs : float, Hz
    band : (lo, hi), Hz
    win : float
        Output window, seconds.
    order : int
        Butterworth order (of the low/high-pass prototype; the band-pass is 2× that).
    trim : int
        Context samples at each end to discard after filtering.

    Returns
    -------
    ndarray (n_windows, n_channel) (or (n_windows,) for 1-D input), float64. Window ``k`` covers
    untrimmed samples ``[k*m, (k+1)*m)``, ``m = round(win * fs)``; a trailing partial window is
    dropped.
    """
    x = np.asarray(x)
    one_d = x.ndim == 1
    x2 = _as_2d(x).astype(np.float64)
    m = int(round(win * fs))
    if m < 1:
        raise ValueError("win must be at least one sample")
    sos = scipy.signal.butter(order, band, btype="bandpass", fs=fs, output="sos")
    # sosfiltfilt's default padding, shortened for blocks too short for it
    zeros = min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum())
    pad = max(min(3 * (2 * len(sos) + 1 - zeros), x2.shape[0] - 1), 0)
    y = scipy.signal.sosfiltfilt(sos, x2, axis=0, padlen=pad)
    env = np.abs(scipy.signal.hilbert(y, axis=0)) ** 2
    if trim:
        env = env[trim:env.shape[0] - trim]
    n_win = env.shape[0] // m
    out = env[:n_win * m].reshape(n_win, m, env.shape[1]).mean(axis=1)
    return out[:, 0] if one_d else out
