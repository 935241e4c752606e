"""Correlations equal np.corrcoef (whole-array and block-accumulated); area means are the means of
the right unit pairs; silent units give NaN instead of failing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuropixels_dask.kernels import correlation as C
from neuropixels_dask.kernels import spikes as K


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
        part = C.finalize_correlation(C.combine_correlation(
            [C.correlation_partial(x[:, :200]), C.correlation_partial(x[:, 200:])]))
    for m in (got, part):
        assert np.all(np.isnan(m[[2, 4]])) and np.all(np.isnan(m[:, [2, 4]]))
        live = [0, 1, 3, 5]
        np.testing.assert_allclose(m[np.ix_(live, live)], np.corrcoef(x[live]), rtol=1e-12)
    assert np.all(np.isnan(C.pairwise_correlation(np.zeros((3, 0)))))


@pytest.mark.parametrize("cuts", [[1500], [1, 2, 3, 2999], [0, 0, 700, 700, 2100], list(range(
    100, 3000, 100))])
def test_blockwise_correlation_equals_corrcoef(cuts):
    x, _ = _counts(seed=1)
    bounds = [0, *cuts, x.shape[1]]
    parts = [C.correlation_partial(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:],
                                                              strict=True)]
    total = C.combine_correlation(parts)
    assert total.n == x.shape[1]
    np.testing.assert_allclose(C.finalize_correlation(total), np.corrcoef(x), rtol=1e-11,
                               atol=1e-13)
    np.testing.assert_allclose(total.mean, x.mean(axis=1), rtol=1e-12)


def test_blockwise_is_stable_for_large_offsets():
    """Band power in volts**2 sits on a large mean: the co-moment merge keeps precision."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal((4, 5000))
    base[1] += 0.7 * base[0]
    x = 1e8 + base
    parts = [C.correlation_partial(x[:, i:i + 250]) for i in range(0, 5000, 250)]
    got = C.finalize_correlation(C.combine_correlation(parts))
    np.testing.assert_allclose(got, np.corrcoef(base), rtol=1e-6, atol=1e-7)
    assert np.isnan(C.finalize_correlation(C.correlation_partial(np.zeros((2, 0))))).all()
    with pytest.raises(ValueError):
        C.combine_correlation([C.correlation_partial(x[:2]), C.correlation_partial(x)])


@settings(max_examples=40, deadline=None)
@given(n_units=st.integers(2, 6), n_bins=st.integers(2, 60), seed=st.integers(0, 10_000),
       n_cuts=st.integers(0, 6))
def test_blockwise_property(n_units, n_bins, seed, n_cuts):
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.5, size=(n_units, n_bins))
    cuts = np.sort(rng.integers(0, n_bins + 1, n_cuts))
    bounds = np.concatenate([[0], cuts, [n_bins]])
    total = C.combine_correlation(C.correlation_partial(x[:, a:b])
                                  for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    np.testing.assert_allclose(C.finalize_correlation(total), C.pairwise_correlation(x),
                               rtol=1e-9, atol=1e-12, equal_nan=True)


def test_area_correlation_means_the_right_pairs():
    x, areas = _counts(seed=3)
    x[7] = 0  # a silent LGd unit is skipped, not propagated
    corr = C.pairwise_correlation(x)
    labels, mean = C.area_correlation(x, areas)
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
    labels, mean = C.area_mean(corr, ["A", "A", "B"])
    assert np.isclose(mean[0, 0], 0.2)
    assert np.isclose(mean[0, 1], 0.5) and np.isclose(mean[1, 0], 0.5)
    assert np.isnan(mean[1, 1])  # one unit: no pair


def test_spike_trains_to_area_correlation_end_to_end():
    """bin_spike_trains -> block partials -> area means, as the Dask layer will chain them."""
    rng = np.random.default_rng(4)
    t_max, dt = 200.0, 0.05
    latent_edges = np.arange(0, t_max + dt, dt)
    drive = rng.gamma(1.0, 1.0, size=(2, len(latent_edges) - 1))
    trains, areas = [], []
    for u in range(8):
        g = u % 2
        n_per_bin = rng.poisson(0.3 + 2.0 * drive[g])
        t = np.repeat(latent_edges[:-1], n_per_bin) + rng.uniform(0, dt, n_per_bin.sum())
        trains.append(np.sort(t))
        areas.append("VISp" if g == 0 else "CA1")
    blocks = [np.arange(a, min(a + 50.0, t_max) + dt / 2, dt) for a in np.arange(0, t_max, 50.0)]
    parts = [C.correlation_partial(K.bin_spike_trains(trains, e)) for e in blocks]
    corr = C.finalize_correlation(C.combine_correlation(parts))
    full = K.bin_spike_trains(trains, np.arange(0, t_max + dt / 2, dt))
    np.testing.assert_allclose(corr, np.corrcoef(full), rtol=1e-10)
    labels, mean = C.area_mean(corr, areas)
    assert labels.tolist() == ["CA1", "VISp"]
    assert mean[0, 0] > 0.5 and mean[1, 1] > 0.5 and abs(mean[0, 1]) < 0.1
