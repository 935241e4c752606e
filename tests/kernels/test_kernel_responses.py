"""PSTH statistics, tuning tables and AllenSDK's grating metrics, each against a direct numpy
computation on the same arrays (AllenSDK's own functions: tests/test_analysis_metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from neuropixels_dask.kernels import responses as R
from neuropixels_dask.kernels import spikes as S


def _counts(seed=0, n_trials=60, n_units=4):
    rng = np.random.default_rng(seed)
    edges = np.arange(-0.05, 0.2 + 1e-9, 0.01)
    lam = rng.uniform(0.1, 2.0, (1, edges.size - 1, n_units))
    return rng.poisson(lam, (n_trials, edges.size - 1, n_units)).astype(np.uint16), edges, rng


def test_psth_rate_sem_trials_per_condition_and_valid_trials():
    counts, edges, rng = _counts()
    cond = rng.integers(0, 3, counts.shape[0])
    valid = rng.random((counts.shape[0], counts.shape[2])) > 0.2
    out = R.psth_stats(counts, edges, cond, 3, valid)
    width = np.diff(edges)
    for c in range(3):
        for u in range(counts.shape[2]):
            rates = counts[(cond == c) & valid[:, u], :, u] / width
            np.testing.assert_allclose(out[0, c, :, u], rates.mean(0), rtol=1e-12)
            np.testing.assert_allclose(out[1, c, :, u],
                                       rates.std(0, ddof=1) / np.sqrt(len(rates)), rtol=1e-12)
            assert out[2, c, 0, u] == len(rates)


def test_psth_baseline_subtract_zscore_and_smoothing():
    counts, edges, _ = _counts(1)
    centres = edges[:-1] + 0.005
    base = centres < 0
    cond = np.zeros(counts.shape[0], int)
    rates = counts / np.diff(edges)[None, :, None]
    b = rates[:, base, :]
    mean, sd = b.mean(axis=(0, 1)), b.std(axis=(0, 1))
    sub = R.psth_stats(counts, edges, cond, 1, baseline_bins=base, normalize="subtract")
    np.testing.assert_allclose(sub[0, 0], rates.mean(0) - mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(sub[3, 0, 0], mean) and np.testing.assert_allclose(sub[4, 0, 0],
                                                                                   sd)
    z = R.psth_stats(counts, edges, cond, 1, baseline_bins=base, normalize="zscore")
    np.testing.assert_allclose(z[0, 0], (rates.mean(0) - mean) / sd, rtol=1e-12, atol=1e-9)
    smooth = R.psth_stats(counts, edges, cond, 1, smooth_sigma_bins=2.0)
    want = ndimage.gaussian_filter1d(rates, 2.0, axis=1, mode="nearest").mean(0)
    np.testing.assert_allclose(smooth[0, 0], want, rtol=1e-12)
    silent = np.zeros_like(counts)
    assert np.all(np.isnan(R.psth_stats(silent, edges, cond, 1, baseline_bins=base,
                                        normalize="zscore")[0]))


def test_psth_of_allensdk_counts_does_not_wrap_and_checks_shapes():
    many = np.ones((70_000, 1, 1), dtype=np.uint16)  # a uint16 sum would wrap
    assert R.psth_stats(many, np.array([0.0, 0.5]), np.zeros(70_000, int), 1)[0, 0, 0, 0] == 2.0
    trains = [np.sort(np.random.default_rng(2).uniform(0, 60, 900))]
    starts = np.arange(1.0, 55.0, 1.3)
    edges = np.array([-0.05, 0.0, 0.01, 0.05, 0.2])
    counts = S.spike_histogram(trains, starts, edges)
    want = counts.astype(np.float64).mean(axis=0) / np.diff(edges)[:, None]
    np.testing.assert_allclose(R.psth_stats(counts, edges, np.zeros(len(starts), int), 1)[0, 0],
                               want, rtol=1e-12)
    with pytest.raises(ValueError, match="bins"):
        R.psth_stats(counts, np.array([0.0, 0.1]), np.zeros(len(starts), int), 1)


def test_osi_dsi_are_the_vector_strengths():
    theta = np.arange(0, 360, 45.0)
    assert R.osi(theta, np.ones(8)) == pytest.approx(0, abs=1e-12)
    only = np.zeros(8)
    only[2] = 5.0
    assert R.osi(theta, only) == pytest.approx(1) and R.dsi(theta, only) == pytest.approx(1)
    both = only.copy()
    both[6] = 5.0  # 90° and 270°: one orientation, two opposite directions
    assert R.osi(theta, both) == pytest.approx(1) and R.dsi(theta, both) == pytest.approx(0,
                                                                                         abs=1e-12)
    r = np.random.default_rng(3).uniform(0, 10, 8)
    rad = np.deg2rad(theta)
    assert R.osi(theta, r) == pytest.approx(abs((r * np.exp(2j * rad)).sum()) / r.sum())
    assert np.isnan(R.osi(theta, np.zeros(8)))


def test_grating_metrics_from_a_full_grid():
    rng = np.random.default_rng(5)
    oris, tfs = np.arange(0, 360, 45.0), np.array([1.0, 2.0, 4.0, 8.0, 15.0])
    o, t = np.meshgrid(oris, tfs, indexing="ij")
    o, t = np.tile(o.ravel(), 6), np.tile(t.ravel(), 6)
    counts = rng.poisson(2 + 8 * (o == 90)[:, None] * (t == 4)[:, None] + 0 * np.ones((1, 3)))
    got_o, got_t, mean, n = R.tuning_table(counts, o, t)
    assert np.array_equal(got_o, oris) and np.array_equal(got_t, tfs) and np.all(n == 6)
    for i, oo in enumerate(oris):
        for j, tt in enumerate(tfs):
            np.testing.assert_allclose(mean[i, j], counts[(o == oo) & (t == tt)].mean(0))
    m = R.grating_metrics(oris, tfs, mean)
    assert np.all(m[0] == 90) and np.all(m[1] == 4)
    for u in range(3):
        assert m[2, u] == pytest.approx(R.osi(oris, mean[:, 2, u]))
        assert m[3, u] == pytest.approx(R.dsi(oris, mean[:, 2, u]))
    allt = R.grating_metrics(oris, tfs, mean, "all_tf")
    assert allt[2, 0] == pytest.approx(R.osi(oris, mean[:, :, 0].mean(1)))
    holes = mean.copy()
    holes[3, 2] = np.nan  # an orientation never shown at the preferred frequency
    assert np.all(np.isnan(R.grating_metrics(oris, tfs, holes)[2:]))
