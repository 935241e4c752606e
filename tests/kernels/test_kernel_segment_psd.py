"""The one Welch kernel: block-wise spectra equal scipy.signal.welch on the whole array whatever
the blocking; stimulus labels count exactly the grid segments inside their (merged) intervals;
each segment is transformed once however many labels contain it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from neuropixels_dask.kernels import segment_psd as K

FS = 1250.0


def _lfp(n=20000, n_ch=4, seed=0, dtype=np.float64):
    """Noise plus a channel-specific sinusoid (channel c peaks at 8 + 10*c Hz) and an offset."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    x = rng.standard_normal((n, n_ch))
    for c in range(n_ch):
        x[:, c] += 3.0 * np.sin(2 * np.pi * (8 + 10 * c) * t + c) + 0.5 * c
    return x.astype(dtype)


def _whole(n: int, nperseg: int, step: int, window="hann") -> K.Segmenting:
    return K.Segmenting(nperseg, step, (np.array([[0, n]]),), window)


def _random_chunks(rng, n: int, high: int) -> list[int]:
    chunks: list[int] = []
    while sum(chunks) < n:
        chunks.append(int(min(rng.integers(1, high), n - sum(chunks))))
    return chunks


# ---- equal to scipy.signal.welch, whatever the blocking ---------------------------------------
@pytest.mark.parametrize("step", [256, 128, 156, 6])
@pytest.mark.parametrize("block_len", [1, 37, 150, 255, 256, 300, 1000, 4097, 20000])
def test_blockwise_equals_scipy_welch(block_len, step):
    """Blocks shorter than a segment, cut off the grid, or a single one: the same segments."""
    x = _lfp()
    f0, p0 = scipy.signal.welch(x, FS, nperseg=256, noverlap=256 - step, axis=0)
    chunks = [block_len] * (len(x) // block_len) + ([len(x) % block_len] if len(x) % block_len
                                                    else [])
    f, p, counts = K.welch(x, FS, _whole(len(x), 256, step), chunks)
    assert np.array_equal(f, f0)
    assert p.shape == (1, *p0.shape) == (1, 129, 4)
    assert counts.tolist() == [(len(x) - 256) // step + 1]
    np.testing.assert_allclose(p[0], p0, rtol=1e-10, atol=1e-14 * p0.max())


def test_float32_lfp_is_transformed_in_float32_within_float32_tolerance():
    """Real LFP is float32: the FFT runs in float32 and sums in float64, so the result agrees
    with a float64 welch as closely as a float32 FFT allows, and with scipy's welch of the float32
    array within the float32 tolerance; irregular chunks as read from HDF5."""
    x = _lfp(n=30011, dtype=np.float32)
    chunks = _random_chunks(np.random.default_rng(3), len(x), 3000)
    f, p, _ = K.welch(x, FS, _whole(len(x), 1250, 625), chunks)
    f0, p0 = scipy.signal.welch(x.astype(np.float64), FS, nperseg=1250, axis=0)
    _, p32 = scipy.signal.welch(x, FS, nperseg=1250, axis=0)  # float32 out
    np.testing.assert_allclose(p[0], p32, rtol=1e-3, atol=1e-5 * p0.max())
    np.testing.assert_allclose(p[0], p0, rtol=1e-5)
    assert np.allclose(f[np.argmax(p[0][f > 2], axis=0) + np.count_nonzero(f <= 2)],
                       [8, 18, 28, 38])
    assert K._fft_dtype(np.float32) == np.float32 and K._fft_dtype(np.int16) == np.float32
    assert K._fft_dtype(np.float64) == np.float64


@pytest.mark.parametrize(("window", "nperseg", "step"), [
    ("hamming", 255, 100), (("tukey", 0.25), 200, 200), ("hann", 1, 1), ("hann", 2, 1)])
def test_windows_and_odd_lengths(window, nperseg, step):
    x = _lfp(n=5000, n_ch=2)
    f0, p0 = scipy.signal.welch(x, FS, window=window, nperseg=nperseg, noverlap=nperseg - step,
                                axis=0)
    f, p, _ = K.welch(x, FS, _whole(len(x), nperseg, step, window), [333] * 15 + [5])
    assert np.array_equal(f, f0)
    np.testing.assert_allclose(p[0], p0, rtol=1e-9, atol=1e-14 * np.nanmax(p0))


@settings(max_examples=40, deadline=None)
@given(n_time=st.integers(1, 2500), nperseg=st.integers(1, 300), overlap=st.floats(0, 0.95),
       seed=st.integers(0, 2**16))
def test_any_blocking_counts_each_segment_once(n_time, nperseg, overlap, seed):
    """Block-boundary invariance: combining the partials of any cut of the array, as any tree of
    neighbours, gives welch's segments exactly once each."""
    step = max(1, min(nperseg, int(round(nperseg * (1 - overlap)))))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_time, 2))
    chunks = _random_chunks(rng, n_time, max(2, nperseg * 2))
    seg = _whole(n_time, nperseg, step)
    bounds = np.concatenate([[0], np.cumsum(chunks)])
    parts = [K.block_partial(x[a:b], int(a), seg) for a, b in zip(bounds[:-1], bounds[1:],
                                                                    strict=True)]
    left_first = parts[0]
    for part in parts[1:]:  # a different tree than combine_all's balanced one
        left_first = K.combine(left_first, part, seg)
    balanced = K.combine_all(parts, seg)
    n_seg = (n_time - nperseg) // step + 1 if n_time >= nperseg else 0
    for total in (left_first, balanced):
        assert total.counts.tolist() == [n_seg]
        assert (total.start, total.stop) == (0, n_time)
        assert total.head.shape[0] == total.tail.shape[0] == min(nperseg - 1, n_time)
        np.testing.assert_array_equal(total.head, x[:total.head.shape[0]])
        np.testing.assert_array_equal(total.tail, x[n_time - total.tail.shape[0]:])
    np.testing.assert_allclose(left_first.sums, balanced.sums, rtol=1e-9, atol=1e-12)
    if n_seg:
        _, p0 = scipy.signal.welch(x, FS, nperseg=nperseg, noverlap=nperseg - step, axis=0)
        _, p, _ = K.finalize(balanced.sums, balanced.counts, FS, nperseg)
        np.testing.assert_allclose(p[0], p0, rtol=1e-9, atol=1e-12 * max(p0.max(), 1e-300))


def test_short_signal_gives_nan_not_error():
    seg = _whole(100, 256, 128)
    part = K.block_partial(np.ones((100, 3), np.float32), 0, seg)
    assert part.counts.tolist() == [0]
    f, p, _ = K.finalize(part.sums, part.counts, FS, 256)
    assert p.shape == (1, 129, 3) and np.all(np.isnan(p))


def test_combine_checks():
    x = _lfp(n=3000, n_ch=2)
    seg = _whole(3000, 256, 128)
    a, b = K.block_partial(x[:1000], 0, seg), K.block_partial(x[1000:], 1000, seg)
    with pytest.raises(ValueError, match="adjacent"):
        K.combine(b, a, seg)
    with pytest.raises(ValueError, match="shapes"):
        K.combine(a, K.block_partial(x[1000:, :1], 1000, seg), seg)
    with pytest.raises(ValueError):
        K.combine_all([], seg)
    with pytest.raises(ValueError):
        K.welch(x, FS, seg, [1000, 1000])


# ---- labels: intervals, merging, one FFT per segment -------------------------------------------
def test_sample_ranges_and_merge():
    t = 13.6 + np.arange(20) / 10.0  # samples at 13.6, 13.7, ... (timestamps do not start at 0)
    r = K.sample_ranges(t, [[14.0, 14.25], [14.25, 14.5], [15.05, 15.3], [10.0, 10.5],
                            [15.2, 15.4], [16.0, 16.0]])
    # [14.0, 14.5) -> samples 4..8 (14.25 and 14.5 meet: merged); [15.05, 15.4) -> 15..17
    assert r.tolist() == [[4, 9], [15, 18]]
    assert K.merge_ranges([[5, 6], [1, 2], [2, 3], [2, 4], [7, 7]]).tolist() == [[1, 4], [5, 6]]
    assert K.merge_ranges(np.zeros((0, 2))).shape == (0, 2)


@pytest.mark.parametrize("block_len", [300, 2000, 25000])
def test_interval_restricted_psd_equals_selected_segments(block_len):
    """A stimulus counts the grid segments whose samples all lie in one of its (merged)
    presentations. Reference: scipy's per-segment periodograms (spectrogram, same scaling)
    averaged over exactly those segments."""
    x = _lfp(n=25000, n_ch=3)
    t = 13.6 + np.arange(len(x)) / FS  # LFP timestamps do not start at 0
    nperseg, step = 625, 325
    rng = np.random.default_rng(4)
    on = t[0] + np.cumsum(rng.uniform(2.0, 3.5, 6))  # disjoint presentations with gaps
    whole = np.column_stack([on, on + rng.uniform(0.3, 1.6, 6)])
    whole[3, 1] = whole[3, 0] + 1.9  # long enough for segments only when its halves are merged
    assert np.all(whole[1:, 0] > whole[:-1, 1])
    mid = whole[3].mean()
    split = np.vstack([whole[:3], [[whole[3, 0], mid], [mid, whole[3, 1]]], whole[4:]])
    seg = K.labelled_segmenting(t, {"all": [[t[0], t[-1] + 1 / FS]], "stim": split[::-1]},
                                nperseg, step)  # back-to-back halves, in any order: merged
    chunks = [block_len] * (len(x) // block_len) + [len(x) % block_len]
    f, p, counts = K.welch(x, FS, seg, [c for c in chunks if c])
    f0, _, sxx = scipy.signal.spectrogram(x, FS, window="hann", nperseg=nperseg,
                                          noverlap=nperseg - step, detrend="constant",
                                          scaling="density", mode="psd", axis=0)
    first = np.arange(sxx.shape[-1]) * step
    keep = np.array([np.any((whole[:, 0] <= t[a]) & (t[a + nperseg - 1] < whole[:, 1]))
                     for a in first])
    in_halves = [np.any((split[:, 0] <= t[a]) & (t[a + nperseg - 1] < split[:, 1]))
                 for a in first]
    assert 0 < np.sum(in_halves) < keep.sum() < keep.size  # the merge matters in this test
    assert counts.tolist() == [keep.size, keep.sum()]
    np.testing.assert_allclose(p[0], sxx.mean(axis=-1), rtol=1e-10)
    np.testing.assert_allclose(p[1], sxx[..., keep].mean(axis=-1), rtol=1e-10)


def test_each_segment_is_transformed_once_whatever_the_labels(monkeypatch):
    """"all" plus six stimuli tiling the recording: most segments belong to two labels, yet the
    kernel transforms each once (rfft is called on the real data, its transforms counted), and
    each label's sums equal that label computed alone."""
    x = _lfp(n=20000, n_ch=3, dtype=np.float32)
    nperseg, step = 500, 250
    edges = [0, 3000, 6500, 9000, 12500, 16000, 20000]  # on the grid: no segment lost
    labels = [np.array([[0, 20000]])] + [np.array([[a, b]]) for a, b in zip(edges[:-1], edges[1:],
                                                                            strict=True)]
    seg = K.Segmenting(nperseg, step, tuple(labels))
    transforms = []
    real_rfft = scipy.fft.rfft

    def counting_rfft(a, *args, **kwargs):
        transforms.append(int(np.prod(np.shape(a)[:-1])))
        return real_rfft(a, *args, **kwargs)

    monkeypatch.setattr(scipy.fft, "rfft", counting_rfft)
    total = K.combine_all([K.block_partial(x[a:a + 4000], a, seg) for a in range(0, 20000, 4000)],
                          seg)
    n_seg = (20000 - nperseg) // step + 1
    assert sum(transforms) == n_seg * x.shape[1]  # once per segment and channel
    # the one segment across each of the 5 inner edges is in "all" only
    assert total.counts[0] == n_seg and total.counts[1:].sum() == n_seg - 5
    monkeypatch.setattr(scipy.fft, "rfft", real_rfft)
    for j, r in enumerate(labels):
        alone = K.combine_all([K.block_partial(x[a:a + 4000], a, K.Segmenting(nperseg, step, (r,)))
                               for a in range(0, 20000, 4000)], K.Segmenting(nperseg, step, (r,)))
        assert alone.counts[0] == total.counts[j]
        np.testing.assert_allclose(total.sums[j], alone.sums[0], rtol=1e-6)


def test_segment_in_no_label_is_not_transformed(monkeypatch):
    x = _lfp(n=10000, n_ch=2)
    seg = K.Segmenting(500, 250, (np.array([[2000, 3000]]),))
    calls = []
    real_rfft = scipy.fft.rfft
    monkeypatch.setattr(scipy.fft, "rfft",
                        lambda a, *args, **kw: calls.append(np.shape(a)) or real_rfft(a, *args,
                                                                                      **kw))
    part = K.block_partial(x, 0, seg)
    assert part.counts.tolist() == [3]  # starts 2000, 2250, 2500
    assert sum(int(np.prod(s[:-1])) for s in calls) == 3 * 2


def test_subtract_ranges_and_epoch_onsets():
    r = np.array([[0, 100], [200, 300]])
    cut = np.array([[50, 60], [90, 210], [290, 400]])
    assert K.subtract_ranges(r, cut).tolist() == [[0, 50], [60, 90], [210, 290]]
    assert K.subtract_ranges(r, np.zeros((0, 2))).tolist() == r.tolist()
    assert K.epoch_onsets(np.array([[10, 45], [100, 109]]), 10).tolist() == [10, 20, 30]


@pytest.mark.parametrize("block_len", [97, 400, 5000])
def test_multitaper_epochs_equal_direct_dpss_whatever_the_blocking(block_len):
    """Epoch placement: one segment per epoch from its own first sample, DPSS tapers averaged;
    equal to a direct computation, with the standard error across epochs, for any blocking."""
    x = _lfp(n=5000, n_ch=3)
    n, nw = 120, 2.0
    epochs = np.array([[130, 260], [700, 830], [1490, 1640], [3333, 3460]])  # ≥ n samples each
    seg = K.Segmenting(n, n, (epochs,), ("dpss", nw), "epoch")
    assert seg.n_tapers == 3
    chunks = [block_len] * (5000 // block_len) + ([5000 % block_len] if 5000 % block_len else [])
    bounds = np.concatenate([[0], np.cumsum(chunks)])
    total = K.combine_all([K.block_partial(x[a:b], int(a), seg)
                           for a, b in zip(bounds[:-1], bounds[1:], strict=True)], seg)
    f, psd, sem = K.finalize(total.sums, total.counts, FS, n, total.sumsq)
    w = scipy.signal.windows.dpss(n, nw, Kmax=3, sym=False)
    w /= np.sqrt((w ** 2).sum(axis=1, keepdims=True))
    per = []
    for a, _ in epochs:
        s = x[a:a + n] - x[a:a + n].mean(axis=0)
        p = np.mean([np.abs(np.fft.rfft(s * t[:, None], axis=0)) ** 2 for t in w], axis=0) / FS
        p[1:-1] *= 2
        per.append(p)
    per = np.array(per)
    assert total.counts.tolist() == [4]
    np.testing.assert_allclose(psd[0], per.mean(0), rtol=1e-9)
    np.testing.assert_allclose(sem[0], per.std(0, ddof=1) / 2.0, rtol=1e-7)
    np.testing.assert_allclose(f, np.fft.rfftfreq(n, 1 / FS))


# ---- confidence intervals: degrees of freedom and coverage ---------------------------------------

def test_equivalent_dof_is_percival_and_walden_for_overlapping_hann_and_2kn_for_multitaper():
    """Welch 1967 / Percival & Walden eq. 292a, written here from the window itself:
    ν = 2N / (1 + 2 Σ_m (1 − m/N) ρ(m·step)²), ρ the unit-energy window's autocorrelation;
    36N²/(19N − 1) for Hann at 50 %. Non-overlapping segments add 2K each."""
    nperseg, step, n = 64, 16, 10
    w = scipy.signal.get_window("hann", nperseg)
    w /= np.sqrt((w * w).sum())
    acf = np.correlate(w, w, "full")[nperseg - 1:]
    rho = [acf[m * step] if m * step < nperseg else 0.0 for m in range(1, n)]
    want = 2 * n / (1 + 2 * sum((1 - m / n) * r * r for m, r in enumerate(rho, 1)))
    seg = _whole(nperseg + (n - 1) * step, nperseg, step)
    assert K.segment_dof(nperseg + (n - 1) * step, seg)[0] == pytest.approx(want, rel=1e-12)
    half = _whole(nperseg + (n - 1) * 32, nperseg, 32)
    assert K.segment_dof(nperseg + (n - 1) * 32, half)[0] == pytest.approx(
        36 * n * n / (19 * n - 1), rel=1e-9)
    # two presentations far apart: their segments share nothing, the dofs add
    two = K.Segmenting(nperseg, 32, (np.array([[0, 160], [1024, 1184]]),), "hann")
    one = K.Segmenting(nperseg, 32, (np.array([[0, 160]]),), "hann")
    assert K.segment_dof(1200, two)[0] == pytest.approx(2 * K.segment_dof(1200, one)[0])
    mt = K.Segmenting(32, 32, (np.array([[0, 320]]),), ("dpss", 2.0), "epoch")
    assert K.segment_dof(320, mt)[0] == pytest.approx(2 * 3 * 10)  # K = 2NW − 1 = 3 tapers


@pytest.mark.parametrize("seg", [
    K.Segmenting(64, 16, (np.array([[0, 640]]),), "hann"),  # 75 % overlap: ν ≈ 39, not 2N = 74
    K.Segmenting(64, 32, (np.array([[0, 200], [300, 500], [600, 640]]),), "hann"),
    K.Segmenting(64, 64, (np.array([[0, 640]]),), ("dpss", 2.0), "epoch"),
    K.Segmenting(64, 64, (np.array([[0, 640]]),), ("dpss", 4.0), "epoch"),
], ids=["welch-75%", "welch-presentations", "multitaper-NW2", "multitaper-NW4"])
def test_chi2_interval_covers_the_known_psd_of_white_noise(seg):
    """Unit-variance white noise at 100 Hz has a one-sided PSD of 2/100 V²/Hz. Over 3000
    channels × the frequencies with an interval, the 95 % interval covers it in 95 % ± 1.5 %
    of the estimates (binomial SD ≈ 0.1–0.3 % here, neighbouring bins being correlated), the
    estimates' relative variance is 2/ν within 5 %, and no interval is given within the taper's
    bandwidth of 0 Hz and Nyquist."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((640, 3000))
    _, psd, _ = K.welch(x, 100.0, seg)
    dof = K.frequency_dof(K.segment_dof(640, seg), seg.nperseg, K.edge_bins(seg.window))[0]
    low, high = K.chi2_factors(dof, 0.95)
    has = np.isfinite(dof)
    edge = K.edge_bins(seg.window)
    assert not has[:edge].any() and not has[-edge:].any() and has[edge:-edge].all()
    est = psd[0][has]
    covered = (est * low[has, None] <= 0.02) & (est * high[has, None] >= 0.02)
    assert covered.mean() == pytest.approx(0.95, abs=0.015)
    assert est.var() / est.mean() ** 2 == pytest.approx(2 / dof[has][0], rel=0.05)


def test_ratio_interval_is_the_f_interval():
    """(P̂₁/P̂₂)/(P₁/P₂) ~ F(ν₁, ν₂): the dB bounds are −10·log10 of its quantiles."""
    from scipy import stats

    low, high = K.ratio_factors_db(np.array([40.0, np.nan]), np.array([60.0, 60.0]), 0.9)
    assert low[0] == pytest.approx(-10 * np.log10(stats.f.ppf(0.95, 40, 60)))
    assert high[0] == pytest.approx(-10 * np.log10(stats.f.ppf(0.05, 40, 60)))
    assert np.isnan(low[1]) and np.isnan(high[1])
