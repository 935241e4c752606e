"""Binned counts and area-averaged noise correlations (plain numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def count_in_bins(trains: Sequence[np.ndarray], starts: np.ndarray,
                  ends: np.ndarray) -> np.ndarray:
    """Spikes of each train in each half-open bin ``[start, end)``: ``(n_units, n_bins)``."""
    out = np.empty((len(trains), len(starts)), dtype=np.int32)
    for i, t in enumerate(trains):
        out[i] = np.searchsorted(t, ends, "left") - np.searchsorted(t, starts, "left")
    return out


def remove_group_means(counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Subtract, per unit, the mean count of the bins sharing a key (condition × offset): what is
    left are the trial-to-trial fluctuations that noise correlations measure."""
    x = counts.astype(np.float64)
    _, inv = np.unique(keys, return_inverse=True)
    n = np.bincount(inv)
    for i in range(x.shape[0]):
        x[i] -= (np.bincount(inv, weights=x[i]) / n)[inv]
    return x


def pearson(x: np.ndarray) -> np.ndarray:
    """Correlation matrix of the rows of ``x``; rows without variance give NaN, not a crash."""
    x = x - x.mean(axis=1, keepdims=True)
    sd = np.sqrt((x * x).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = x / sd[:, None]
        return z @ z.T


def area_mean(corr: np.ndarray, areas: np.ndarray, names: list[str]) -> np.ndarray:
    """Mean correlation per pair of areas (distinct units only, NaNs ignored)."""
    out = np.full((len(names), len(names)), np.nan)
    for a, na in enumerate(names):
        ia = np.flatnonzero(areas == na)
        for b, nb in enumerate(names):
            ib = np.flatnonzero(areas == nb)
            block = corr[np.ix_(ia, ib)]
            if a == b:
                block = block[~np.eye(len(ia), dtype=bool)]
            vals = block[np.isfinite(block)]
            if vals.size:
                out[a, b] = vals.mean()
    return out


def area_noise_correlation(counts: np.ndarray, keys: np.ndarray, areas: np.ndarray,
                           names: list[str]) -> np.ndarray:
    return area_mean(pearson(remove_group_means(counts, keys)), np.asarray(areas), names)
