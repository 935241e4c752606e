"""Counts in arbitrary (non-contiguous) bins and removal of condition means — the two steps
that turn spike trains into noise-correlation input for :mod:`.correlation`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .correlation import area_mean, pairwise_correlation


def count_in_bins(trains: Sequence[np.ndarray], starts: np.ndarray,
                  ends: np.ndarray) -> np.ndarray:
    """Spikes of each sorted train in each half-open bin ``[start, end)``: ``(n_units, n_bins)``.

    The bins need not be contiguous: they tile the presentations of one stimulus and skip
    everything between them. Half-open, so a spike on the edge of two adjacent bins counts once.
    """
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


def area_noise_correlation(counts: np.ndarray, keys: np.ndarray, areas: np.ndarray,
                           names: list[str]) -> np.ndarray:
    """Mean noise correlation per pair of ``names`` (areas absent from ``areas`` give NaN)."""
    labels, mean = area_mean(pairwise_correlation(remove_group_means(counts, keys)),
                             np.asarray(areas))
    out = np.full((len(names), len(names)), np.nan)
    pos = {str(label): k for k, label in enumerate(labels)}
    idx = [pos.get(n) for n in names]
    for a, ia in enumerate(idx):
        for b, ib in enumerate(idx):
            if ia is not None and ib is not None:
                out[a, b] = mean[ia, ib]
    return out
