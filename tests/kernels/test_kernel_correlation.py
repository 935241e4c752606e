"""Correlations equal np.corrcoef; area means are the means of the right unit pairs; silent units
give NaN instead of failing; the noise-correlation chain (counts in presentation bins, condition
means removed, area means) recovers a shared gain between areas."""

from __future__ import annotations

import warnings

import numpy as np

from neuropixels_dask.kernels import correlation as C
from neuropixels_dask.kernels import correlation_blocks as KC


def _counts(seed=0, n_units=12, n_bins=3000):
    """Poisson counts: units 0-5 share a latent rate ("V1"), 6-11 another ("LGd")."""
    rng = np.random.default_rng(seed)
    latent = rng.gamma(2.0, 1.0, size=(2, n_bins))
    group = np.repeat([0, 1], n_units // 2)
    return rng.poisson(0.5 + latent[group]).astype(np.int32), np.where(group == 0, "V1", "LGd")


def test_pairwise_correlation_equals_corrcoef():
    x, _ = _counts()
    got = C.pairwise_correlation(x)
    np.testing.assert_allclose(got, np.corrcoef(x), rtol=1e-12, atol=1e-14)
    assert np.array_equal(np.diag(got), np.ones(len(x)))
    assert np.allclose(got, got.T)


def test_silent_unit_is_nan_without_warnings():
    x, _ = _counts(n_units=6, n_bins=500)
    x[2] = 0  # never fires
    x[4] = 3  # constant
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = C.pairwise_correlation(x)
    assert np.all(np.isnan(got[[2, 4]])) and np.all(np.isnan(got[:, [2, 4]]))
    live = [0, 1, 3, 5]
    np.testing.assert_allclose(got[np.ix_(live, live)], np.corrcoef(x[live]), rtol=1e-12)
    assert np.all(np.isnan(C.pairwise_correlation(np.zeros((3, 0)))))


def test_area_correlation_means_the_right_pairs():
    x, areas = _counts(seed=3)
    x[7] = 0  # a silent LGd unit is skipped, not propagated
    corr = C.pairwise_correlation(x)
    labels, mean, pairs = C.area_mean(corr, areas)
    assert labels.tolist() == ["LGd", "V1"]
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            vals = [corr[u, v] for u in range(len(x)) for v in range(len(x))
                    if areas[u] == a and areas[v] == b and u != v and not np.isnan(corr[u, v])]
            assert np.isclose(mean[i, j], np.mean(vals), rtol=1e-12)
    assert np.allclose(mean, mean.T)
    # shared latent within an area: within-area correlation well above between-area
    assert mean[0, 0] > 0.3 and mean[1, 1] > 0.3 and abs(mean[0, 1]) < 0.1


def test_area_mean_single_unit_area_is_nan():
    corr = np.array([[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]])
    labels, mean, pairs = C.area_mean(corr, ["A", "A", "B"])
    assert np.isclose(mean[0, 0], 0.2)
    assert np.isclose(mean[0, 1], 0.5) and np.isclose(mean[1, 0], 0.5)
    assert np.isnan(mean[1, 1])  # one unit: no pair


def test_area_stats_mean_and_fisher_z_against_numpy():
    """Per area pair, over the same unit pairs as numpy picks them: the mean of r, or tanh of
    the mean of arctanh(r) with |r| = 1 clipped at 0.999999 and counted; the SD (ddof 1) of r,
    or of z; NaN below one (value) or two (SD) pairs."""
    x, areas = _counts(seed=5, n_units=12, n_bins=200)
    areas = np.array(list(areas[:-1]) + ["LP"])  # LP: one unit, no pair of its own
    x[7] = 0  # silent: skipped
    x[3] = x[2] * 2  # r = 1 with unit 2
    corr = C.pairwise_correlation(x)
    mean = C.area_stats(corr, areas, "mean")
    fz = C.area_stats(corr, areas, "fisher_z")
    assert fz.labels.tolist() == ["LGd", "LP", "V1"]
    for i, a in enumerate(fz.labels):
        for j, b in enumerate(fz.labels):
            r = np.array([corr[u, v] for u in range(len(x)) for v in range(len(x))
                          if areas[u] == a and areas[v] == b and (u < v if a == b else True)
                          and not np.isnan(corr[u, v])])
            z = np.arctanh(np.clip(r, -0.999999, 0.999999))
            assert mean.pairs[i, j] == fz.pairs[i, j] == r.size
            assert fz.clipped[i, j] == np.sum(np.abs(r) >= 0.999999)
            assert mean.clipped[i, j] == 0  # nothing is clipped for a plain mean
            if r.size == 0:
                assert np.isnan([mean.value[i, j], fz.value[i, j]]).all()
                continue
            np.testing.assert_allclose(mean.value[i, j], r.mean(), rtol=1e-12)
            np.testing.assert_allclose(fz.value[i, j], np.tanh(z.mean()), rtol=1e-12)
            if r.size < 2:
                assert np.isnan([mean.sd[i, j], fz.sd[i, j]]).all()
                continue
            np.testing.assert_allclose(mean.sd[i, j], r.std(ddof=1), rtol=1e-9)
            np.testing.assert_allclose(fz.sd[i, j], z.std(ddof=1), rtol=1e-9)
    assert fz.clipped[2, 2] == 1 and fz.pairs[1, 1] == 0
    # the clipped pair pulls Fisher z's average above the plain mean of r
    assert fz.value[2, 2] > mean.value[2, 2]


def test_count_in_bins_half_open_and_gaps():
    trains = [np.array([0.0, 0.5, 1.0, 1.0, 2.5, 4.0]), np.array([]), np.array([3.0])]
    starts, ends = np.array([0.0, 0.5, 3.0]), np.array([0.5, 1.0, 4.0])  # gap [1, 3) skipped
    got = KC.count_in_bins(trains, starts, ends)
    assert got.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]  # 1.0 is the end of bin 2: out


def test_remove_group_means_leaves_fluctuations():
    counts = np.array([[1, 3, 10, 14, 5], [2, 2, 2, 2, 9]])
    keys = np.array([7, 7, 8, 8, 9])
    got = KC.remove_group_means(counts, keys)
    assert np.allclose(got, [[-1, 1, -2, 2, 0], [0, 0, 0, 0, 0]])
    for k in np.unique(keys):
        assert np.allclose(got[:, keys == k].mean(axis=1), 0)


def test_noise_correlation_chain_recovers_shared_gain():
    """Spike trains -> counts in presentation bins -> condition means removed -> area means, as
    ``analyses.correlations`` chains them. Two conditions drive every unit differently (signal
    correlation, removed by the condition means); VISp and VISl units share a trial-to-trial gain
    (noise correlation, kept), CA1 units do not."""
    rng = np.random.default_rng(4)
    n_pres, dur = 400, 0.5
    starts = np.arange(n_pres) * 1.0  # presentations with gaps between them
    cond = rng.integers(0, 2, n_pres)
    gain = rng.gamma(4.0, 0.25, n_pres)  # shared by the visual areas
    areas = np.array(["VISp"] * 4 + ["VISl"] * 4 + ["CA1"] * 4)
    trains = []
    for u, area in enumerate(areas):
        rate = np.where(cond == 0, 20.0 + 5 * u, 40.0 - 2 * u)
        g = gain if area != "CA1" else rng.gamma(4.0, 0.25, n_pres)
        n = rng.poisson(rate * g * dur)
        t = np.concatenate([s + rng.uniform(0, dur, k) for s, k in zip(starts, n, strict=True)])
        trains.append(np.sort(t))
    counts = KC.count_in_bins(trains, starts, starts + dur)
    assert counts.shape == (12, n_pres) and counts.sum() == sum(len(t) for t in trains)
    names = ["CA1", "VISl", "VISp", "VISrl"]
    got, _, n_pairs, _ = KC.area_noise_correlation(counts, cond, areas, names)
    assert n_pairs.tolist() == [[6, 16, 16, 0], [16, 6, 16, 0], [16, 16, 6, 0], [0, 0, 0, 0]]
    assert got.shape == (4, 4) and np.allclose(got, got.T, equal_nan=True)
    assert got[1, 2] > 0.3 and got[1, 1] > 0.3 and got[2, 2] > 0.3  # shared gain
    assert abs(got[0, 1]) < 0.1 and abs(got[0, 2]) < 0.1  # CA1 is independent
    assert np.isnan(got[3]).all()  # an area without units
    raw = C.area_mean(C.pairwise_correlation(counts), areas)[1]
    assert raw[0, 0] > got[0, 0] + 0.2  # without removing condition means, CA1 looks coupled
