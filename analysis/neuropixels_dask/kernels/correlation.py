"""Pearson correlations of binned signals (spike counts, band power) and their area averages.

Correlations over a long recording are accumulated block by block: each block of bins yields a
:class:`CorrelationPartial` (count, means and co-moment matrix), partials are merged with Chan et
al.'s pairwise update (numerically stable: no ``sum(x*y) - sum(x)*sum(y)/n`` cancellation when
means are large relative to fluctuations), and :func:`finalize_correlation` divides once at the end.
The result equals ``np.corrcoef`` on the whole array to float precision, whatever the blocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


def area_mean(corr: np.ndarray, areas: Sequence) -> tuple[np.ndarray, np.ndarray]:
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
    return labels, mean


def area_correlation(counts: np.ndarray, areas: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise unit correlations averaged by area pair (:func:`area_mean` of
    :func:`pairwise_correlation`)."""
    return area_mean(pairwise_correlation(counts), areas)


# ---- block-wise accumulation ----------------------------------------------------------------------
@dataclass(frozen=True)
class CorrelationPartial:
    """Sufficient statistics of a block of bins: ``n``, per-signal ``mean``, ``comoment``.

    ``comoment = (x - mean) @ (x - mean).T`` over the block's bins; merging two partials adds the
    co-moments plus ``outer(d, d) * n_a * n_b / n`` with ``d`` the difference of the means.
    """

    n: int
    mean: np.ndarray
    comoment: np.ndarray

    def __add__(self, other: CorrelationPartial) -> CorrelationPartial:
        return combine_correlation([self, other])


def correlation_partial(x: np.ndarray) -> CorrelationPartial:
    """Partial of one block ``(n_signals, n_bins_in_block)`` (bins may be zero)."""
    x = _as_float2d(x)
    n = x.shape[1]
    if n == 0:
        return CorrelationPartial(0, np.zeros(x.shape[0]), np.zeros((x.shape[0], x.shape[0])))
    mean = x.mean(axis=1)
    xc = x - mean[:, None]
    return CorrelationPartial(n, mean, xc @ xc.T)


def _merge(a: CorrelationPartial, b: CorrelationPartial) -> CorrelationPartial:
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"partials of {a.mean.size} and {b.mean.size} signals")
    if a.n == 0:
        return b
    if b.n == 0:
        return a
    n = a.n + b.n
    d = b.mean - a.mean
    mean = a.mean + d * (b.n / n)
    comoment = a.comoment + b.comoment + np.outer(d, d) * (a.n * b.n / n)
    return CorrelationPartial(n, mean, comoment)


def combine_correlation(partials: Iterable[CorrelationPartial]) -> CorrelationPartial:
    """Merge partials of disjoint blocks of bins (associative; order changes only rounding)."""
    partials = list(partials)
    if not partials:
        raise ValueError("combine_correlation needs at least one partial")
    while len(partials) > 1:  # pairwise tree: balanced rounding for many blocks
        partials = [_merge(partials[i], partials[i + 1]) if i + 1 < len(partials)
                    else partials[i] for i in range(0, len(partials), 2)]
    return partials[0]


def finalize_correlation(partial: CorrelationPartial) -> np.ndarray:
    """Correlation matrix of everything accumulated (NaN rows for zero-variance signals)."""
    if partial.n == 0:
        return np.full(partial.comoment.shape, np.nan)
    return _normalise(partial.comoment.copy())
