"""Block-wise Welch equals scipy.signal.welch on the whole array, whatever the blocking; interval
selection, NaN handling, band power and band-limited power behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from neuropixels_dask.kernels import spectra as S

FS = 1250.0


def _lfp(n=20000, n_ch=4, seed=0, dtype=np.float64):
    """Noise plus a channel-specific sinusoid (channel c peaks at 8 + 10*c Hz)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    x = rng.standard_normal((n, n_ch))
    for c in range(n_ch):
        x[:, c] += 3.0 * np.sin(2 * np.pi * (8 + 10 * c) * t + c) + 0.5 * c
    return x.astype(dtype)


def _blockwise(x, nperseg, noverlap, **plan):
    parts = [S.welch_partial(x[s], FS, nperseg, noverlap, start_offset=s.start)
             for s in S.segment_plan(x.shape[0], nperseg, noverlap, **plan)]
    return S.finalize(S.combine(parts))


@pytest.mark.parametrize("noverlap", [None, 0, 100, 250])
@pytest.mark.parametrize("block_len", [1, 37, 150, 256, 300, 1000, 4097, 20000, None])
def test_blockwise_equals_scipy_welch(block_len, noverlap):
    x = _lfp()
    f0, p0 = scipy.signal.welch(x, FS, nperseg=256, noverlap=noverlap, axis=0)
    f, p = _blockwise(x, 256, noverlap, block_len=block_len)
    assert np.array_equal(f, f0)
    assert p.shape == p0.shape == (129, 4)
    np.testing.assert_allclose(p, p0, rtol=1e-10, atol=1e-14 * p0.max())


def test_blockwise_with_storage_chunks_and_peaks():
    """Irregular chunks (as a dask array read from HDF5 chunks); float32 input like real LFP."""
    x = _lfp(n=30011, dtype=np.float32)
    rng = np.random.default_rng(3)
    chunks = []
    while sum(chunks) < len(x):
        chunks.append(int(min(rng.integers(1, 3000), len(x) - sum(chunks))))
    f, p = _blockwise(x, 1250, 625, chunks=chunks)
    f0, p0 = scipy.signal.welch(x.astype(np.float64), FS, nperseg=1250, axis=0)
    np.testing.assert_allclose(p, p0, rtol=1e-9, atol=1e-12 * p0.max())
    _, p32 = scipy.signal.welch(x, FS, nperseg=1250, axis=0)  # scipy computes in float32
    np.testing.assert_allclose(p, p32, rtol=1e-3, atol=1e-5 * p0.max())
    assert np.allclose(f[np.argmax(p[f > 2], axis=0) + np.count_nonzero(f <= 2)],
                       [8, 18, 28, 38])


@pytest.mark.parametrize(("window", "detrend", "nperseg"), [
    ("hamming", "linear", 255), (("tukey", 0.25), False, 200), ("hann", "constant", 1)])
def test_windows_detrend_odd_lengths(window, detrend, nperseg):
    x = _lfp(n=5000, n_ch=2)
    f0, p0 = scipy.signal.welch(x, FS, window=window, nperseg=nperseg, detrend=detrend, axis=0)
    parts = [S.welch_partial(x[s], FS, nperseg, None, window=window, detrend=detrend,
                             start_offset=s.start)
             for s in S.segment_plan(len(x), nperseg, None, block_len=333)]
    f, p = S.finalize(S.combine(parts))
    assert np.array_equal(f, f0)
    np.testing.assert_allclose(p, p0, rtol=1e-9, atol=1e-14 * np.nanmax(p0))


def test_one_dimensional_and_convenience_welch():
    x = _lfp(n=4000, n_ch=1)[:, 0]
    f0, p0 = scipy.signal.welch(x, FS, nperseg=500)
    f, p = S.welch(x, FS, 500, block_len=700)
    np.testing.assert_allclose(p[:, 0], p0, rtol=1e-10)


@settings(max_examples=60, deadline=None)
@given(n_time=st.integers(1, 3000), nperseg=st.integers(1, 400), overlap_frac=st.floats(0, 0.95),
       block_len=st.integers(1, 3500))
def test_segment_plan_owns_each_segment_once(n_time, nperseg, overlap_frac, block_len):
    noverlap = min(int(nperseg * overlap_frac), nperseg - 1)
    step = nperseg - noverlap
    plan = S.segment_plan(n_time, nperseg, noverlap, block_len=block_len)
    n_seg = (n_time - nperseg) // step + 1 if n_time >= nperseg else 0
    seen = np.zeros(n_seg, dtype=int)
    for s in plan:
        assert 0 <= s.start < s.stop <= n_time
        local = S.segment_starts(s.stop - s.start, nperseg, noverlap, s.start)
        seen[(local + s.start) // step] += 1
    assert np.all(seen == 1)
    if n_seg and block_len % step == 0:  # the documented simple form
        for i, s in enumerate(plan):
            assert s.start == i * block_len
            assert s.stop == min((i + 1) * block_len + noverlap, (n_seg - 1) * step + nperseg)


def test_block_off_the_grid_counts_only_whole_grid_segments():
    """A block cut anywhere counts exactly the grid segments (start k*step) lying inside it."""
    x = _lfp(n=3000, n_ch=2)
    assert S.segment_starts(900, 256, 128, start_offset=100).tolist() == [28, 156, 284, 412, 540]
    off = S.welch_partial(x[100:1000], FS, 256, 128, start_offset=100)
    on = S.welch_partial(x[128:896], FS, 256, 128, start_offset=128)  # grid segments 1..5
    assert off.counts.tolist() == [5, 5]
    np.testing.assert_array_equal(off.power_sum, on.power_sum)
    assert S.segment_starts(200, 256, 128, start_offset=1).size == 0


def test_short_signal_gives_nan_not_error():
    plan = S.segment_plan(100, 256, 128)
    assert plan == [slice(0, 100)]
    part = S.welch_partial(np.ones((100, 3)), FS, 256, 128)
    assert part.n_segments == 0
    f, p = S.finalize(part)
    assert p.shape == (129, 3) and np.all(np.isnan(p))


def test_combine_checks_and_identity():
    x = _lfp(n=3000, n_ch=2)
    a = S.welch_partial(x[:1664], FS, 256, start_offset=0)  # segments 0..11
    b = S.welch_partial(x[1536:], FS, 256, start_offset=1536)  # 12..
    whole = S.welch_partial(x, FS, 256)
    total = a + b + S.empty_partial(2, FS, 256)
    assert np.array_equal(total.counts, whole.counts)
    np.testing.assert_allclose(total.power_sum, whole.power_sum, rtol=1e-12)
    with pytest.raises(ValueError):
        S.combine([a, S.welch_partial(x, FS, 128)])
    with pytest.raises(ValueError):
        S.combine([a, S.welch_partial(x[:, :1], FS, 256)])
    with pytest.raises(ValueError):
        S.combine([])


# ---- intervals --------------------------------------------------------------------------------------
def test_merge_intervals_and_mask():
    merged = S.merge_intervals([[5, 6], [1, 2], [2, 3], [2.5, 2.7], [7, 7]])
    assert merged.tolist() == [[1, 3], [5, 6]]
    t = np.array([0.5, 1, 2.999, 3, 5.5, 6])
    assert S.intervals_mask(t, [[1, 2], [2, 3], [5, 6]]).tolist() == [False, True, True, False,
                                                                      True, False]
    inside = S.segments_in_intervals([1, 1, 2.5, 4], [2.9, 3.0, 2.9, 5.5], [[1, 2], [2, 3]])
    assert inside.tolist() == [True, False, True, False]


@pytest.mark.parametrize("block_len", [300, 2000, None])
def test_interval_restricted_psd_equals_selected_segments(block_len):
    """Only segments fully inside [start, stop) count: reference = scipy's per-segment
    periodograms (spectrogram, same scaling) averaged over the selected segments."""
    x = _lfp(n=25000, n_ch=3)
    t = 13.6 + np.arange(len(x)) / FS  # LFP timestamps do not start at 0
    nperseg, noverlap = 625, 300
    rng = np.random.default_rng(4)
    on = t[0] + np.cumsum(rng.uniform(2.0, 3.5, 6))  # disjoint presentations with gaps
    whole = np.column_stack([on, on + rng.uniform(0.3, 1.6, 6)])
    whole[3, 1] = whole[3, 0] + 1.9  # long enough for segments only when its halves are merged
    assert np.all(whole[1:, 0] > whole[:-1, 1])
    mid = whole[3].mean()
    split = np.vstack([whole[:3], [[whole[3, 0], mid], [mid, whole[3, 1]]], whole[4:]])
    f, p = S.welch(x, FS, nperseg, noverlap, block_len=block_len, timestamps=t,
                   intervals=split[::-1])  # back-to-back halves, any order: merged
    f0, _, sxx = scipy.signal.spectrogram(x, FS, window="hann", nperseg=nperseg,
                                          noverlap=noverlap, detrend="constant",
                                          scaling="density", mode="psd", axis=0)
    step = nperseg - noverlap
    first = np.arange(sxx.shape[-1]) * step
    keep = np.array([np.any((whole[:, 0] <= t[a]) & (t[a + nperseg - 1] < whole[:, 1]))
                     for a in first])
    assert 0 < keep.sum() < keep.size
    in_halves = [np.any((split[:, 0] <= t[a]) & (t[a + nperseg - 1] < split[:, 1]))
                 for a in first]
    assert keep.sum() > np.sum(in_halves)  # the merge matters in this test
    want = sxx[..., keep].mean(axis=-1)
    np.testing.assert_allclose(p, want, rtol=1e-10)
    with pytest.raises(ValueError):
        S.welch_partial(x, FS, nperseg, intervals=whole)


def test_nan_policy_omit_drops_segments_per_channel():
    x = _lfp(n=8000, n_ch=2)
    x[3000:3100, 1] = np.nan  # masked invalid time on one channel
    _, prop = S.welch(x, FS, 500, block_len=1000)
    assert np.all(np.isnan(prop[:, 1])) and not np.any(np.isnan(prop[:, 0]))
    parts = [S.welch_partial(x[s], FS, 500, start_offset=s.start, nan_policy="omit")
             for s in S.segment_plan(len(x), 500, 250, block_len=1000)]
    total = S.combine(parts)
    _, omit = S.finalize(total)
    _, clean = scipy.signal.welch(x[:, 0], FS, nperseg=500)
    np.testing.assert_allclose(omit[:, 0], clean, rtol=1e-10)
    _, _, sxx = scipy.signal.spectrogram(np.nan_to_num(x[:, 1]), FS, window="hann",
                                         nperseg=500, noverlap=250, mode="psd")
    starts = np.arange(sxx.shape[-1]) * 250
    ok = (starts + 500 <= 3000) | (starts >= 3100)
    assert total.counts.tolist() == [sxx.shape[-1], ok.sum()]
    np.testing.assert_allclose(omit[:, 1], sxx[:, ok].mean(axis=-1), rtol=1e-10)


# ---- band power --------------------------------------------------------------------------------------
def test_band_power_parseval_and_sinusoid():
    rng = np.random.default_rng(5)
    n = 60000
    t = np.arange(n) / FS
    noise = rng.standard_normal(n) * 0.5
    f, p = S.welch(noise, FS, 1250)
    total = S.band_power(f, p, (0, FS))[0]
    assert abs(total - 0.25) < 0.01  # mean square of the noise
    sine = 2.0 * np.sin(2 * np.pi * 40.0 * t)
    f, p = S.welch(sine[:, None] + 0 * noise[:, None], FS, 1250)
    assert abs(S.band_power(f, p, (35, 45))[0] - 2.0) < 0.02  # A**2 / 2
    assert S.band_power(f, p, (60, 80))[0] < 1e-6
    assert S.band_power(f, np.ones((len(f), 3, 2)), (10, 20)).shape == (3, 2)


def test_band_limited_power_envelope():
    rng = np.random.default_rng(6)
    n = int(60 * FS)
    t = np.arange(n) / FS
    slow = 1.0 + 0.8 * np.sin(2 * np.pi * 0.2 * t)  # shared gamma amplitude modulation
    other = 1.0 + 0.8 * np.sin(2 * np.pi * 0.23 * t + 1.0)
    gamma = np.sin(2 * np.pi * 50 * t)
    x = np.column_stack([slow * gamma, slow * np.sin(2 * np.pi * 50 * t + 2.0),
                         other * gamma]) + 0.1 * rng.standard_normal((n, 3))
    power = S.band_limited_power(x, FS, (40, 60), win=0.5)
    assert power.shape == (120, 3)
    want = np.interp(np.arange(120) * 0.5 + 0.25, t, slow) ** 2
    assert np.corrcoef(power[2:-2, 0], want[2:-2])[0, 1] > 0.99
    c = np.corrcoef(power.T)
    assert c[0, 1] > 0.99 and abs(c[0, 2]) < 0.5
    # a pure sinusoid of amplitude A in band gives A**2 (squared analytic amplitude)
    pure = S.band_limited_power(3.0 * gamma[: int(10 * FS)], FS, (40, 60), win=1.0)
    assert pure.shape == (10,) and np.allclose(pure[2:-2], 9.0, rtol=0.01)
    # block with context, trimmed, equals the same windows of the whole-array computation
    m, trim = int(0.5 * FS), int(2 * FS)
    a = 40 * m
    block = S.band_limited_power(x[a - trim:a + 20 * m + trim], FS, (40, 60), 0.5, trim=trim)
    np.testing.assert_allclose(block, power[40:60], rtol=0.02)
