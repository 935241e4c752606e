"""Counts in arbitrary (non-contiguous) bins and removal of condition means — the two steps
that turn spike trains into noise-correlation input for :mod:`.correlation`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .correlation import R_CLIP, area_stats, pairwise_correlation


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
    """Subtract, per unit, the mean count of the trials sharing a key (a condition): what is
    left are the trial-to-trial fluctuations that noise correlations measure."""
    x = counts.astype(np.float64)
    _, inv = np.unique(keys, return_inverse=True)
    n = np.bincount(inv)
    for i in range(x.shape[0]):
        x[i] -= (np.bincount(inv, weights=x[i]) / n)[inv]
    return x


def zscore_within(counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per unit, each trial's count as a z-score within its condition (mean removed, divided
    by the condition's standard deviation, ddof=0); a unit constant within a condition gets 0
    there (no fluctuation to correlate)."""
    x = remove_group_means(counts, keys)
    _, inv = np.unique(keys, return_inverse=True)
    n = np.bincount(inv)
    for i in range(x.shape[0]):
        sd = np.sqrt(np.bincount(inv, weights=x[i] ** 2) / n)[inv]
        with np.errstate(invalid="ignore", divide="ignore"):
            x[i] = np.where(sd > 0, x[i] / sd, 0.0)
    return x


AVERAGES = ("pooled", "fisher_z")


def noise_correlation(counts: np.ndarray, keys: np.ndarray, average: str = "pooled"
                      ) -> np.ndarray:
    """Noise correlation ``(n_units, n_units)`` of trial counts ``(n_units, n_trials)`` whose
    conditions are ``keys``.

    ``"pooled"``: counts z-scored within each condition, then one Pearson correlation over all
    trials (r_sc as in Kohn & Smith 2005, Cohen & Kohn 2011). ``"fisher_z"``: one Pearson
    correlation per condition (its own trials), averaged as Fisher z (``arctanh``) weighted by
    the condition's trials − 3 (the inverse variance of z), then ``tanh``; conditions of 3 or
    fewer trials carry no weight. A unit without fluctuation is NaN (see
    :func:`.correlation.pairwise_correlation`).
    """
    if average == "pooled":
        return pairwise_correlation(zscore_within(counts, keys))
    if average != "fisher_z":
        raise ValueError(f"average must be one of {AVERAGES}, not {average!r}")
    n_u = counts.shape[0]
    total = np.zeros((n_u, n_u))
    weight = np.zeros((n_u, n_u))
    for k in np.unique(keys):
        sel = keys == k
        w = float(sel.sum()) - 3.0
        if w <= 0:
            continue
        r = pairwise_correlation(counts[:, sel])
        ok = ~np.isnan(r)
        z = np.arctanh(np.clip(np.where(ok, r, 0.0), -R_CLIP, R_CLIP))
        total += np.where(ok, w * z, 0.0)
        weight += np.where(ok, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(weight > 0, np.tanh(total / weight), np.nan)
    idx = np.arange(n_u)
    out[idx, idx] = np.where(weight[idx, idx] > 0, 1.0, np.nan)
    return out


def area_noise_correlation(counts: np.ndarray, keys: np.ndarray, areas: np.ndarray,
                           names: list[str], average: str = "pooled",
                           area_average: str = "mean") -> np.ndarray:
    """Noise correlation per pair of ``names`` averaged over unit pairs (``area_average``, see
    :func:`.correlation.area_stats`), stacked ``(4, n_names, n_names)``: the average, the SD
    across pairs, the number of pairs and the number clipped (areas absent from ``areas`` give
    NaN and 0). One array, so one Dask task returns it."""
    st = area_stats(noise_correlation(counts, keys, average), np.asarray(areas), area_average)
    out = np.full((4, len(names), len(names)), np.nan)
    out[2:] = 0
    pos = {str(label): k for k, label in enumerate(st.labels)}
    idx = [pos.get(name) for name in names]
    for a, ia in enumerate(idx):
        for b, ib in enumerate(idx):
            if ia is not None and ib is not None:
                out[:, a, b] = (st.value[ia, ib], st.sd[ia, ib], st.pairs[ia, ib],
                                st.clipped[ia, ib])
    return out
