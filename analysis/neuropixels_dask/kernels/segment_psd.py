"""Welch and multitaper PSDs of labelled time intervals, one data block at a time, one FFT per
segment and taper.

Why: a probe's LFP arrives as blocks (one per storage-chunk row, ~37.6 s × ~95 channels) and a
scientist wants the spectrum of the whole recording *and* of every stimulus from one pass over the
data, without ever holding more than a block.

**The grid.** Segment ``k`` covers samples ``[k*step, k*step + nperseg)`` of the analysed array:
the segments ``scipy.signal.welch(x, nperseg=nperseg, noverlap=nperseg - step)`` uses on the whole
array. A *label* (a stimulus, or ``"all"``) is a set of sample ranges ``[first, stop)``
(:func:`sample_ranges` turns presentation times into ranges, merging presentations that touch or
overlap, so back-to-back presentations of 250 ms still hold 1 s segments). A segment counts for
every label one of whose ranges contains all of its samples. Each segment is therefore transformed
once, however many labels contain it, and its periodogram is added to each of them.

**Blocks.** :func:`block_partial` sums the segments lying entirely inside one block. A segment
that straddles two blocks is computed by :func:`combine` from the last ``nperseg - 1`` samples of
the left partial and the first ``nperseg - 1`` of the right one, which every :class:`Partial`
carries. Combining the partials of adjacent blocks in order (as any tree that only joins
neighbours does) counts every grid segment exactly once, so the result does not depend on where
the blocks are cut: ``"all"`` equals ``scipy.signal.welch`` of the whole array.

**Precision and layout.** The FFT runs in the precision of the data: ``float32`` LFP gets a
``float32`` FFT, 1.75× faster than ``float64`` here (``scipy.signal.welch`` 1.17 up-casts float32
input to float64 for its transform), ``float64`` data a ``float64`` one. Each batch of segments
is copied transposed into one contiguous ``(channel, segment, time)`` buffer, so every transform
reads contiguous memory (a per-segment transposing copy measured about twice as fast as
transposing the whole ~18 MB block first). Periodograms are accumulated in ``float64``. Against
a float64 FFT the sums differ by ~1e-7 (median) and ~5e-6 (worst) on synthetic LFP, and by up to
~3e-4 in bins 70 dB below a steep 1/f² spectrum's peak (``benchmarks/fft_kernel.py``).
:func:`finalize` applies welch's density scaling.

**Short epochs** (``placement="epoch"``, ``window=("dpss", NW)``). A 250 ms flash holds no 1 s
grid segment, and a 250 ms grid rarely lines up with it. Epoch placement starts segments at each
range's own first sample instead (back to back within longer ranges), and the multitaper estimate
averages the periodograms of the ``2·NW − 1`` Slepian tapers. The block/combine machinery is the
same: a segment is still a start sample that every block and combine agree on.

**Spread.** Besides the sum of the segments' periodograms, each partial carries the sum of their
squares, so :func:`finalize` also returns the standard error of the mean across segments.

**Confidence intervals.** A label's segments are known before any read, so are its equivalent
degrees of freedom (:func:`segment_dof`: ``2K`` per segment of ``K`` tapers, less what
overlapping segments share, from the tapers' overlap correlation; Welch 1967, Percival & Walden
1993). :func:`chi2_factors` turns them into the multipliers of the chi-square interval,
:func:`ratio_factors_db` into the F interval of a ratio of two spectra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import signal, stats

#: Working set of one batch of segments (their copy plus its spectrum): 4 MiB is 4 segments of
#: 95 channels, which stays in cache between the copy, detrend, taper and FFT passes. Measured
#: (benchmarks/fft_kernel.py): 2–64 MiB all within ~5 % of each other, one segment per batch
#: ~10 % slower; the constant bounds the kernel's temporaries whatever the channel count.
BATCH_BYTES = 4 * 2**20
#: Threads of one ``scipy.fft`` call. A Dask task is the unit of parallelism (one task per block,
#: workers × threads tasks at a time), so a task that spawned its own FFT threads would only
#: oversubscribe the cores.
FFT_WORKERS = 1


def sample_ranges(times: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """Sample ranges ``(k, 2)`` int64 ``[first, stop)`` of the ``[start, stop)`` time intervals.

    ``first`` is the first sample at or after ``start``, ``stop`` the first sample at or after the
    interval's stop (so a segment is inside when ``start <= t_first`` and ``t_last < stop``).
    Looked up in the actual ``times`` (sorted), not computed from a rate, so irregular timestamps
    and a block-wise reduction see the same sample numbers. Ranges that touch or overlap are
    merged: back-to-back presentations become one range, so a segment spanning them counts.
    """
    times = np.asarray(times, dtype=np.float64)
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    r = np.column_stack([np.searchsorted(times, iv[:, 0], side="left"),
                         np.searchsorted(times, iv[:, 1], side="left")]).astype(np.int64)
    return merge_ranges(r)


def merge_ranges(ranges: np.ndarray) -> np.ndarray:
    """Union of ``[first, stop)`` integer ranges: sorted, disjoint, touching ones joined."""
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    r = r[r[:, 1] > r[:, 0]]
    if r.shape[0] == 0:
        return r
    r = r[np.argsort(r[:, 0], kind="stable")]
    run_stop = np.maximum.accumulate(r[:, 1])
    new = np.ones(len(r), dtype=bool)
    new[1:] = r[1:, 0] > run_stop[:-1]
    group = np.cumsum(new) - 1
    stops = np.zeros(int(new.sum()), dtype=np.int64)
    np.maximum.at(stops, group, r[:, 1])
    return np.column_stack([r[new, 0], stops])


@dataclass(frozen=True, eq=False)
class Segmenting:
    """What every block and every combine of one analysis must agree on.

    Attributes
    ----------
    nperseg, step : int
        Segment length and hop, samples (``noverlap = nperseg - step``; the hop of the ``"grid"``
        placement only).
    ranges : tuple of ndarray (k, 2) int64
        Per label, its ``[first, stop)`` sample ranges (merged on construction).
    window : str or tuple
        As ``scipy.signal.get_window`` (default ``"hann"``, periodic, as ``welch``), or
        ``("dpss", NW)``: the ``2·NW − 1`` Slepian tapers of time-half-bandwidth ``NW``
        (``scipy.signal.windows.dpss``), whose periodograms are averaged (multitaper).
    placement : ``"grid"`` or ``"epoch"``
        ``"grid"``: segment ``k`` starts at ``k * step`` of the analysed array (welch's
        segments); a label counts the grid segments lying inside one of its ranges. ``"epoch"``:
        each range is tiled by back-to-back segments from its own first sample (a 250 ms flash
        holds one 250 ms segment wherever it falls); ``step`` is unused.
    """

    nperseg: int
    step: int
    ranges: tuple[np.ndarray, ...]
    window: str | tuple = "hann"
    placement: str = "grid"
    _tapers: np.ndarray = field(init=False, repr=False)
    _onsets: np.ndarray | None = field(init=False, repr=False)
    _member: np.ndarray | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.nperseg < 1 or self.step < 1:
            raise ValueError(f"need nperseg >= 1 and step >= 1, got {self.nperseg}, {self.step}")
        if self.placement not in ("grid", "epoch"):
            raise ValueError(f"placement must be 'grid' or 'epoch', not {self.placement!r}")
        object.__setattr__(self, "ranges", tuple(merge_ranges(r) for r in self.ranges))
        object.__setattr__(self, "_tapers", tapers(self.window, self.nperseg))
        onsets = member = None
        if self.placement == "epoch":
            per_label = [epoch_onsets(r, self.nperseg) for r in self.ranges]
            onsets = np.unique(np.concatenate(per_label + [np.zeros(0, np.int64)]))
            member = np.zeros((onsets.size, len(per_label)), dtype=bool)
            for j, o in enumerate(per_label):
                member[np.searchsorted(onsets, o), j] = True
        object.__setattr__(self, "_onsets", onsets)
        object.__setattr__(self, "_member", member)

    @property
    def n_freq(self) -> int:
        return self.nperseg // 2 + 1

    @property
    def n_tapers(self) -> int:
        return self._tapers.shape[0]

    def taper(self, dtype) -> np.ndarray:
        """The tapers ``(n_tapers, nperseg)`` in the FFT's dtype, each scaled to unit energy
        (so ``|rfft(x · w)|²`` is already divided by ``sum(w²)``, welch's density scaling)."""
        return self._tapers.astype(dtype)


def tapers(window: str | tuple, nperseg: int) -> np.ndarray:
    """``(n_tapers, nperseg)`` float64 tapers of unit energy: one window, or the DPSS set."""
    if isinstance(window, tuple) and window and window[0] == "dpss":
        nw = float(window[1])
        k = max(1, int(np.floor(2 * nw)) - 1)
        w = np.atleast_2d(signal.windows.dpss(nperseg, nw, Kmax=k, sym=False))
    else:
        w = np.atleast_2d(signal.get_window(window, nperseg))
    energy = np.sqrt((w * w).sum(axis=1, keepdims=True))
    energy[energy == 0] = 1.0
    return w / energy


def epoch_onsets(ranges: np.ndarray, nperseg: int) -> np.ndarray:
    """Starts of back-to-back ``nperseg`` segments tiling each ``[first, stop)`` range from its
    first sample (what ``placement="epoch"`` uses)."""
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    n = np.maximum((r[:, 1] - r[:, 0]) // nperseg, 0)
    if n.sum() == 0:
        return np.zeros(0, np.int64)
    first = np.repeat(r[:, 0], n)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return first + k * nperseg


def subtract_ranges(ranges: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """``ranges`` minus the union of ``cut`` (both ``[first, stop)``): what is left of a
    stimulus once invalid times are taken out."""
    r = merge_ranges(ranges)
    c = merge_ranges(cut)
    if c.shape[0] == 0 or r.shape[0] == 0:
        return r
    out = []
    for a, b in r.tolist():
        for ca, cb in c.tolist():
            if cb <= a or ca >= b:
                continue
            if ca > a:
                out.append([a, ca])
            a = max(a, cb)
            if a >= b:
                break
        if a < b:
            out.append([a, b])
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


@dataclass(frozen=True, eq=False)
class Partial:
    """Periodogram sums of the grid segments inside samples ``[start, stop)``, per label.

    ``head``/``tail`` are the first/last ``min(nperseg - 1, stop - start)`` samples
    ``(time, channel)``: what :func:`combine` needs for the segments straddling a neighbour.
    """

    sums: np.ndarray  # (n_label, n_freq, n_channel) float64: sum of segment periodograms
    sumsq: np.ndarray  # the same shape: sum of their squares (the spread across segments)
    counts: np.ndarray  # (n_label,) int64
    start: int
    stop: int
    head: np.ndarray
    tail: np.ndarray


def grid_segments(start: int, stop: int, seg: Segmenting) -> tuple[np.ndarray, np.ndarray]:
    """Grid segments lying in samples ``[start, stop)`` and in at least one label.

    Returns their start samples ``(n,)`` and label membership ``(n, n_label)`` bool.
    """
    if seg._onsets is not None:
        i0 = np.searchsorted(seg._onsets, int(start), side="left")
        i1 = np.searchsorted(seg._onsets, int(stop) - seg.nperseg, side="right")
        return seg._onsets[i0:i1], seg._member[i0:i1]
    first = -(-int(start) // seg.step)  # ceil
    last = (int(stop) - seg.nperseg) // seg.step
    starts = np.arange(first, last + 1, dtype=np.int64) * seg.step
    member = np.zeros((starts.size, len(seg.ranges)), dtype=bool)
    for j, r in enumerate(seg.ranges):
        if r.shape[0] == 0 or starts.size == 0:
            continue
        i = np.searchsorted(r[:, 0], starts, side="right") - 1
        ok = i >= 0
        member[ok, j] = starts[ok] + seg.nperseg <= r[i[ok], 1]
    keep = member.any(axis=1)
    return starts[keep], member[keep]


def _fft_dtype(dtype) -> np.dtype:
    """float32 for float32 and narrower data (int16 included), else float64."""
    return np.result_type(dtype, np.float32)


def _periodogram_sums(x: np.ndarray, local: np.ndarray, member: np.ndarray,
                      seg: Segmenting) -> tuple[np.ndarray, np.ndarray]:
    """``(n_label, n_freq, n_channel)`` float64 sums over the segments of ``x`` (time, channel)
    starting at samples ``local`` of each segment's periodogram and of its square.

    A segment's periodogram is the mean over tapers of ``|rfft(detrend(x) · w)|²`` (unit-energy
    tapers). Segments are grouped by the set of labels they belong to; each group is summed once
    and added to each of its labels. A batch of segments is copied transposed, ``(channel,
    segment, time)``, into one contiguous buffer, detrended there in place, tapered and
    transformed along its last axis; the batch's power is accumulated in float64.
    """
    n_ch = x.shape[1]
    n_label, n_freq, L = member.shape[1], seg.n_freq, seg.nperseg
    out = np.zeros((n_label, n_freq, n_ch))
    out2 = np.zeros((n_label, n_freq, n_ch))
    if local.size == 0 or n_ch == 0:
        return out, out2
    dtype = _fft_dtype(x.dtype)
    taper = seg.taper(dtype)
    n_tap = taper.shape[0]
    per_seg = n_ch * (L * (1 + (n_tap > 1)) + 3 * n_freq) * dtype.itemsize
    batch = int(min(max(1, BATCH_BYTES // per_seg), local.size))
    buf = np.empty((n_ch, batch, L), dtype)
    tapered = np.empty_like(buf) if n_tap > 1 else buf
    patterns, inverse = np.unique(member, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    for p, labels in enumerate(patterns):
        idx = local[inverse == p]
        acc = np.zeros((n_ch, n_freq))
        acc2 = np.zeros((n_ch, n_freq))
        for i in range(0, idx.size, batch):
            starts = idx[i:i + batch]
            b = buf[:, :starts.size]
            for j, a in enumerate(starts.tolist()):
                b[:, j] = x[a:a + L].T
            b -= b.mean(axis=-1, keepdims=True)
            power = None
            for k in range(n_tap):
                t = tapered[:, :starts.size]
                np.multiply(b, taper[k], out=t)
                spec = scipy.fft.rfft(t, axis=-1, workers=FFT_WORKERS)
                v = spec.view(dtype)  # (ch, k, 2 * n_freq)
                np.square(v, out=v)
                pk = v[..., 0::2] + v[..., 1::2]
                power = pk if power is None else power + pk
            if n_tap > 1:
                power /= n_tap
            acc += power.sum(axis=1, dtype=np.float64)
            acc2 += np.square(power, dtype=np.float64).sum(axis=1)
        out[labels] += acc.T  # (n_freq, ch)
        out2[labels] += acc2.T
    return out, out2


def _edges(x: np.ndarray, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    m = min(nperseg - 1, x.shape[0])
    return x[:m].copy(), x[x.shape[0] - m:].copy()


def _as_2d(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block)
    if block.ndim == 1:
        return block[:, None]
    if block.ndim != 2:
        raise ValueError(f"block must be (time, channel), got shape {block.shape}")
    return block


def block_partial(block: np.ndarray, start: int, seg: Segmenting) -> Partial:
    """Partial of one block ``(time, channel)`` holding samples ``[start, start + len(block))``.

    Counts the grid segments lying entirely inside the block; the block is transposed to
    ``(channel, time)`` once, in the FFT's dtype.
    """
    x = _as_2d(block)
    stop = int(start) + x.shape[0]
    starts, member = grid_segments(start, stop, seg)
    sums, sumsq = _periodogram_sums(x, starts - int(start), member, seg)
    head, tail = _edges(x, seg.nperseg)
    return Partial(sums, sumsq, member.sum(axis=0).astype(np.int64), int(start), stop, head,
                   tail)


def combine(left: Partial, right: Partial, seg: Segmenting) -> Partial:
    """Partial of two adjacent partials (``left.stop == right.start``), including the grid
    segments that straddle their boundary."""
    if left.stop != right.start:
        raise ValueError(f"partials are not adjacent: [{left.start}, {left.stop}) then "
                         f"[{right.start}, {right.stop})")
    if left.sums.shape != right.sums.shape:
        raise ValueError(f"partials of different shapes: {left.sums.shape}, {right.sums.shape}")
    joined = np.concatenate([left.tail, right.head])
    j0 = left.stop - left.tail.shape[0]
    starts, member = grid_segments(j0, j0 + joined.shape[0], seg)
    straddle = starts > left.stop - seg.nperseg  # not inside left; starts < left.stop always
    starts, member = starts[straddle], member[straddle]
    sums = left.sums + right.sums
    sumsq = left.sumsq + right.sumsq
    counts = left.counts + right.counts
    if starts.size:
        more, more2 = _periodogram_sums(joined, starts - j0, member, seg)
        sums += more
        sumsq += more2
        counts = counts + member.sum(axis=0)
    m = seg.nperseg - 1  # a short block's edges are the whole block: take from both sides
    head = left.head if left.head.shape[0] == m else np.concatenate([left.head, right.head])[:m]
    if right.tail.shape[0] == m:
        tail = right.tail
    else:
        both = np.concatenate([left.tail, right.tail])
        tail = both[max(0, both.shape[0] - m):]
    return Partial(sums, sumsq, counts, left.start, right.stop, head, tail)


def combine_all(partials: Sequence[Partial], seg: Segmenting) -> Partial:
    """Combine partials of consecutive blocks as a balanced tree (as the Dask layer does)."""
    parts = list(partials)
    if not parts:
        raise ValueError("combine_all needs at least one partial")
    while len(parts) > 1:
        parts = [combine(parts[i], parts[i + 1], seg) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def finalize(psd_sum: np.ndarray, count: int | np.ndarray, fs: float, nperseg: int,
             sumsq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(frequencies, psd, sem)`` in V²/Hz from accumulated sums, scaled as
    ``scipy.signal.welch`` (``scaling="density"``, one-sided): mean periodogram ÷ ``fs`` (the
    tapers have unit energy), doubled except at DC and, for even ``nperseg``, Nyquist.

    ``sem`` is the standard error of that mean across segments (their sample standard
    deviation ÷ √n; NaN below two segments, or without ``sumsq``). Overlapping welch segments
    are not independent, so it is then a lower bound. A label without segments is NaN (the
    analyses refuse it before computing).
    """
    scale = np.ones(nperseg // 2 + 1) / fs
    scale[1:None if nperseg % 2 else -1] *= 2.0
    n = np.asarray(count, dtype=np.float64)
    n = n.reshape(n.shape + (1,) * (np.ndim(psd_sum) - n.ndim))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.asarray(psd_sum, dtype=np.float64) / n
        if sumsq is None:
            sem = np.full_like(mean, np.nan)
        else:
            var = np.maximum(np.asarray(sumsq) / n - mean * mean, 0.0) * n / (n - 1)
            sem = np.where(n > 1, np.sqrt(var / n), np.nan)
    s = scale[:, None]  # frequency is the second-last axis: (..., n_freq, n_channel)
    return np.fft.rfftfreq(nperseg, 1.0 / fs), mean * s, sem * s


def welch(x: np.ndarray, fs: float, seg: Segmenting, chunks: Sequence[int] | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-memory spectra through the block path: ``(freqs, psd (n_label, n_freq, n_channel),
    counts)``. ``chunks`` (block lengths, default one block) cut ``x`` like a Dask array's."""
    x = _as_2d(x)
    chunks = [x.shape[0]] if chunks is None else [int(c) for c in chunks]
    if sum(chunks) != x.shape[0]:
        raise ValueError(f"chunks sum to {sum(chunks)}, not {x.shape[0]}")
    bounds = np.concatenate([[0], np.cumsum(chunks)])
    total = combine_all([block_partial(x[a:b], int(a), seg)
                         for a, b in zip(bounds[:-1], bounds[1:], strict=True)], seg)
    freqs, psd, _ = finalize(total.sums, total.counts, fs, seg.nperseg)
    return freqs, psd, total.counts


def labelled_segmenting(times: np.ndarray, intervals: Mapping[str, np.ndarray], nperseg: int,
                        step: int, window: str | tuple = "hann", placement: str = "grid",
                        exclude: Mapping[str, np.ndarray] | None = None) -> Segmenting:
    """:class:`Segmenting` of labelled time intervals over an array sampled at ``times``;
    ``exclude`` (per label, time intervals) is taken out of that label first (invalid times)."""
    exclude = exclude or {}
    ranges = []
    for name, iv in intervals.items():
        r = sample_ranges(times, iv)
        if name in exclude and len(exclude[name]):
            # excluded intervals are closed, [start, stop] (AllenSDK masks both ends)
            cut = np.asarray(exclude[name], dtype=np.float64).reshape(-1, 2)
            r = subtract_ranges(r, np.column_stack([
                np.searchsorted(times, cut[:, 0], side="left"),
                np.searchsorted(times, cut[:, 1], side="right")]))
        ranges.append(r)
    return Segmenting(int(nperseg), int(step), tuple(ranges), window, placement)


def segment_counts(n_samples: int, seg: Segmenting) -> np.ndarray:
    """Segments each label will hold over an array of ``n_samples`` (known before any read, so
    an analysis can refuse a label that would rest on nothing)."""
    return grid_segments(0, int(n_samples), seg)[1].sum(axis=0).astype(np.int64)


def _overlap_power(tapers_: np.ndarray, lag: int) -> float:
    """``(1/K²) Σ_kl ρ_kl(lag)²`` with ``ρ_kl(d) = Σ_t h_k[t] h_l[t + d]`` (unit-energy tapers):
    the correlation of two segments' periodograms ``lag`` samples apart, for a locally white
    process (Percival & Walden 1993, §6.17)."""
    n = tapers_.shape[1]
    if lag >= n:
        return 0.0
    rho = tapers_[:, :n - lag] @ tapers_[:, lag:].T
    return float((rho * rho).sum()) / tapers_.shape[0] ** 2


def equivalent_dof(starts: np.ndarray, tapers_: np.ndarray) -> float:
    """Equivalent degrees of freedom of the mean over segments starting at ``starts`` of the
    mean periodogram over ``tapers_`` (``(K, nperseg)``, unit energy, orthogonal).

    ``ν = 2 E[P]² / var P = 2 N² / (N/K + 2 Σ_{i<j} (1/K²) Σ_kl ρ_kl(s_j − s_i)²)``: each segment
    carries ``2K`` degrees of freedom, and overlapping segments share some (Welch 1967; Percival
    & Walden 1993, eq. 292a, here for any set of starts: segments of a stimulus's separate
    presentations do not overlap and add ``2K`` each). For ``N`` back-to-back segments it is
    ``2·K·N``; for a contiguous Hann grid at 50 % overlap about ``36N²/(19N − 1)``.
    """
    s = np.sort(np.asarray(starts, dtype=np.int64))
    n, k = s.size, tapers_.shape[0]
    if n == 0:
        return 0.0
    shared = 0.0
    cache: dict[int, float] = {}
    for m in range(1, n):
        lags = s[m:] - s[:-m]
        near = lags[lags < tapers_.shape[1]]
        if near.size == 0:
            break  # sorted starts: later neighbours are further still
        values, times = np.unique(near, return_counts=True)
        for d, c in zip(values.tolist(), times.tolist(), strict=True):
            if d not in cache:
                cache[d] = _overlap_power(tapers_, d)
            shared += c * cache[d]
    return 2.0 * n * n / (n / k + 2.0 * shared)


def segment_dof(n_samples: int, seg: Segmenting) -> np.ndarray:
    """Equivalent degrees of freedom ``(n_label,)`` of each label's spectrum over an array of
    ``n_samples``, from the segments it will hold (known before any read)."""
    starts, member = grid_segments(0, int(n_samples), seg)
    return np.array([equivalent_dof(starts[member[:, j]], seg._tapers)
                     for j in range(member.shape[1])])


def edge_bins(window: str | tuple) -> int:
    """Frequency bins next to 0 Hz and Nyquist that a taper's spectral window reaches across:
    ``⌈NW⌉`` for DPSS tapers (their bandwidth), 2 for one window (Hann's main lobe)."""
    if isinstance(window, tuple) and window and window[0] == "dpss":
        return int(np.ceil(float(window[1])))
    return 2


def frequency_dof(dof: np.ndarray, nperseg: int, edge: int) -> np.ndarray:
    """``(..., n_freq)`` degrees of freedom per frequency: ``dof`` from ``edge`` bins above
    0 Hz to ``edge`` bins below Nyquist, NaN (no interval) within them.

    Why: the chi-square law of a tapered periodogram needs the frequency to be at least the
    taper's half-bandwidth away from 0 and Nyquist. Closer, the mirror frequency leaks in (the
    estimate is real-valued at 0 and Nyquist, χ² with half the dof, and one-sided densities
    are not doubled there) and the segment mean removed before tapering takes power out;
    simulated white noise then falls inside a 95 % interval in 0–90 % of cases, not 95 %."""
    out = np.repeat(np.asarray(dof, dtype=np.float64)[..., None], nperseg // 2 + 1, axis=-1)
    out[..., :edge] = np.nan
    out[..., max(edge, out.shape[-1] - edge):] = np.nan
    return out


def chi2_factors(dof: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers ``(low, high)`` of a PSD estimate with ``dof`` degrees of freedom giving its
    two-sided ``confidence`` interval: ``ν P̂ / χ²_ν(1 − α/2) ≤ P ≤ ν P̂ / χ²_ν(α/2)`` (Percival
    & Walden 1993, eq. 255a). NaN where ``dof`` is 0."""
    nu = np.asarray(dof, dtype=np.float64)
    alpha = 1.0 - float(confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = nu > 0
        safe = np.where(ok, nu, 1.0)
        low = np.where(ok, safe / stats.chi2.ppf(1 - alpha / 2, safe), np.nan)
        high = np.where(ok, safe / stats.chi2.ppf(alpha / 2, safe), np.nan)
    return low, high


def ratio_factors_db(dof_num: np.ndarray, dof_den: np.ndarray, confidence: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """dB offsets ``(low, high)`` of the ``confidence`` interval of a ratio of two independent
    PSD estimates: ``(P̂₁/P̂₂)/(P₁/P₂) ~ F(ν₁, ν₂)``, so the true ratio lies in
    ``[R̂ / F(1 − α/2), R̂ / F(α/2)]``, i.e. ``10·log10 R̂ − 10·log10 F(1 − α/2)`` to
    ``10·log10 R̂ − 10·log10 F(α/2)``. NaN where either ``dof`` is 0 or NaN."""
    a, b = np.broadcast_arrays(np.asarray(dof_num, np.float64), np.asarray(dof_den, np.float64))
    alpha = 1.0 - float(confidence)
    ok = (a > 0) & (b > 0)
    sa, sb = np.where(ok, a, 1.0), np.where(ok, b, 1.0)
    low = np.where(ok, -10 * np.log10(stats.f.ppf(1 - alpha / 2, sa, sb)), np.nan)
    high = np.where(ok, -10 * np.log10(stats.f.ppf(alpha / 2, sa, sb)), np.nan)
    return low, high
