"""Pearson correlations between units and their averages per pair of brain areas.

The noise-correlation analysis (``analyses.correlations``) counts spikes in bins inside the
presentations, removes condition means (``correlation_blocks``), then calls these two: one
correlation matrix over all bins of one stimulus (small: units × units), then area means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


#: |r| is clipped to this before ``arctanh`` (Fisher z): two units whose counts are
#: proportional give r = ±1, whose z is infinite; the clipped pairs are counted.
R_CLIP = 0.999999
AREA_AVERAGES = ("mean", "fisher_z")


@dataclass(frozen=True)
class AreaStats:
    """Correlations averaged per pair of areas (all ``(n_areas, n_areas)``, symmetric).

    ``value``: the average of the pairs' r (``"mean"``) or ``tanh`` of the mean of their
    Fisher z (``"fisher_z"``). ``sd``: the standard deviation across pairs (ddof 1, NaN below 2
    pairs) of what was averaged: r, or z. ``pairs``: how many unit pairs; ``clipped``: how many of
    them had |r| ≥ ``R_CLIP`` and were clipped to it before ``arctanh`` (0 for ``"mean"``).
    """

    labels: np.ndarray
    value: np.ndarray
    sd: np.ndarray
    pairs: np.ndarray
    clipped: np.ndarray


def area_stats(corr: np.ndarray, areas: Sequence, how: str = "mean") -> AreaStats:
    """Average, spread and count of the correlations between the units of each pair of areas.

    Off-diagonal entries take all cross pairs ``(i in A, j in B)``; diagonal entries the distinct
    pairs within an area (``i != j``: the self-correlation of 1 is excluded, otherwise an area
    with few units would look artificially coherent). NaN correlations (silent units) are
    skipped; an area pair without a valid pair is NaN. ``how="fisher_z"`` averages
    ``arctanh(r)`` and maps back with ``tanh`` (Fisher 1921): r is bounded and skewed near ±1,
    z roughly normal with a variance that does not depend on r.
    """
    if how not in AREA_AVERAGES:
        raise ValueError(f"how must be one of {AREA_AVERAGES}, not {how!r}")
    corr = np.asarray(corr, dtype=np.float64)
    labels, inverse = np.unique(np.asarray(areas), return_inverse=True)
    onehot = np.zeros((corr.shape[0], labels.size))
    onehot[np.arange(corr.shape[0]), inverse.ravel()] = 1.0
    valid = ~np.isnan(corr)
    np.fill_diagonal(valid, False)
    r = np.where(valid, corr, 0.0)
    clip = valid & (np.abs(r) >= R_CLIP) & (how == "fisher_z")
    x = np.arctanh(np.clip(r, -R_CLIP, R_CLIP)) if how == "fisher_z" else r

    def per_area(m: np.ndarray) -> np.ndarray:
        out = onehot.T @ m @ onehot
        out[np.diag_indices_from(out)] /= 2  # within an area (i, j) and (j, i) are one pair
        return out

    n, s1, s2 = per_area(valid.astype(np.float64)), per_area(x), per_area(x * x)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, s1 / n, np.nan)
        var = np.where(n > 1, np.maximum(s2 - n * mean * mean, 0.0) / (n - 1), np.nan)
    value = np.tanh(mean) if how == "fisher_z" else mean
    clipped = np.rint(per_area(clip.astype(np.float64))).astype(np.int64)
    return AreaStats(labels, value, np.sqrt(var), np.rint(n).astype(np.int64), clipped)


def area_mean(corr: np.ndarray, areas: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean correlation between the units of each pair of areas (:func:`area_stats`, ``"mean"``).

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
    st = area_stats(corr, areas)
    return st.labels, st.value, st.pairs
