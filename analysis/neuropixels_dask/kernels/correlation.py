"""Pearson correlations between units and their averages per pair of brain areas.

The noise-correlation analysis (``analyses.correlations``) counts spikes in bins inside the
presentations, removes condition means (``correlation_blocks``), then calls these two: one
correlation matrix over all bins of one stimulus (small: units × units), then area means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_float2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected (n_signals, n_bins), got shape {x.shape}")
    return x.astype(np.float64, copy=False)


def _normalise(cov: np.ndarray) -> np.ndarray:
    """Covariance (or co-moment) matrix -> correlation; zero-variance signals give NaN."""
    d = np.sqrt(np.diag(cov).copy())
    silent = d == 0
    d[silent] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / d[:, None] / d[None, :]
    np.clip(corr, -1.0, 1.0, out=corr)
    idx = np.arange(len(d))
    corr[idx[~silent], idx[~silent]] = 1.0
    return corr


def pairwise_correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation between rows, like ``np.corrcoef`` but without its warnings.

    A unit that never fires (zero variance) has an undefined correlation: its row and column are
    NaN, including the diagonal, so averages can skip it instead of the computation failing.

    Parameters
    ----------
    x : ndarray (n_signals, n_bins)

    Returns
    -------
    ndarray (n_signals, n_signals), float64, in [-1, 1]
    """
    x = _as_float2d(x)
    if x.shape[1] == 0:
        return np.full((x.shape[0], x.shape[0]), np.nan)
    xc = x - x.mean(axis=1, keepdims=True)
    return _normalise(xc @ xc.T)


def area_mean(corr: np.ndarray, areas: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean correlation between the units of each pair of areas.

    Off-diagonal entries average all cross pairs ``(i in A, j in B)``; diagonal entries average the
    distinct pairs within an area (``i != j``: the self-correlation of 1 is excluded, otherwise an
    area with few units would look artificially coherent). NaN correlations (silent units) are
    skipped; an area pair without a valid pair is NaN.

    Parameters
    ----------
    corr : ndarray (n_units, n_units)
    areas : sequence (n_units,)
        Area label of each unit (e.g. structure acronyms).

    Returns
    -------
    labels : ndarray (n_areas,), sorted unique labels
    mean : ndarray (n_areas, n_areas), symmetric
    pairs : ndarray (n_areas, n_areas), int64: how many unit pairs each mean averages (within
        an area each pair counted once)
    """
    corr = np.asarray(corr, dtype=np.float64)
    labels, inverse = np.unique(np.asarray(areas), return_inverse=True)
    onehot = np.zeros((corr.shape[0], labels.size))
    onehot[np.arange(corr.shape[0]), inverse.ravel()] = 1.0
    valid = ~np.isnan(corr)
    np.fill_diagonal(valid, False)
    total = onehot.T @ np.where(valid, corr, 0.0) @ onehot
    pairs = onehot.T @ valid.astype(np.float64) @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(pairs > 0, total / pairs, np.nan)
    n = np.rint(pairs).astype(np.int64)
    n[np.diag_indices_from(n)] //= 2  # (i, j) and (j, i) are one pair
    return labels, mean, n
