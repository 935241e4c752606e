"""Stimulus responses of units from their spike counts: PSTHs with their statistics, tuning
curves and AllenSDK's response metrics. Plain numpy; ``analyses.spiking`` maps them over groups
of units.

- :func:`psth_stats`: per condition, bin and unit the trial-mean firing rate, its SEM across
  trials and the number of trials, optionally smoothed, baseline-subtracted or z-scored.
- :func:`osi`, :func:`dsi`: AllenSDK's global orientation / direction selectivity
  (``g_osi_dg``, ``g_dsi_dg``: ``stimulus_analysis.osi/dsi``, Ringach et al. 2002).
- :func:`tuning_table`: the (orientation × temporal frequency) mean-count table those metrics
  read, and :func:`grating_metrics` the metrics themselves, as AllenSDK's
  ``DriftingGratings.metrics`` computes ``pref_ori_dg``, ``pref_tf_dg``, ``g_osi_dg``,
  ``g_dsi_dg``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

NORMALIZE = ("none", "subtract", "zscore")
#: rows of :func:`psth_stats`' output
PSTH_FIELDS = ("value", "sem", "n_trials", "baseline_mean", "baseline_sd")


def psth_stats(counts: np.ndarray, bin_edges: np.ndarray, conditions: np.ndarray,
               n_conditions: int, valid: np.ndarray | None = None,
               smooth_sigma_bins: float | None = None, baseline_bins: np.ndarray | None = None,
               normalize: str = "none") -> np.ndarray:
    """PSTH statistics ``(5, n_conditions, n_bins, n_units)`` float64, rows :data:`PSTH_FIELDS`.

    Each trial's count per bin is a rate (÷ bin width, Hz), smoothed along time with a Gaussian
    of ``smooth_sigma_bins`` bins if given (``scipy.ndimage.gaussian_filter1d``, edges
    ``nearest``). Per condition and unit, over its valid trials: ``value`` the mean rate,
    ``sem`` its standard error (ddof=1; NaN below two trials), ``n_trials``. The baseline is the
    rate in the bins of ``baseline_bins`` (bool, per bin) over the same trials:
    ``baseline_mean``, and ``baseline_sd`` the standard deviation of all (trial, baseline bin)
    rates. ``normalize="subtract"`` returns ``value − baseline_mean``; ``"zscore"`` returns
    ``(value − baseline_mean) / baseline_sd`` (and ``sem / baseline_sd``), NaN where the unit
    did not vary in the baseline (``baseline_sd`` 0).

    Parameters
    ----------
    counts : (n_trials, n_bins, n_units) spike counts (any numeric dtype; summed in float64).
    bin_edges : (n_bins + 1,) seconds relative to onset.
    conditions : (n_trials,) int in ``[0, n_conditions)``: the condition of each trial.
    valid : (n_trials, n_units) bool, optional: trials to use per unit (invalid times out).
    """
    counts = np.asarray(counts)
    widths = np.diff(np.asarray(bin_edges, dtype=np.float64))
    if counts.ndim != 3 or counts.shape[1] != widths.size:
        raise ValueError(f"counts of shape {counts.shape} are not (trials, {widths.size} bins "
                         "of bin_edges, units)")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, not {normalize!r}")
    n_t, n_b, n_u = counts.shape
    rate = counts.astype(np.float64) / widths[None, :, None]
    if smooth_sigma_bins:
        rate = ndimage.gaussian_filter1d(rate, float(smooth_sigma_bins), axis=1, mode="nearest")
    if valid is None:
        valid = np.ones((n_t, n_u), dtype=bool)
    conditions = np.asarray(conditions, dtype=np.int64)
    out = np.full((len(PSTH_FIELDS), n_conditions, n_b, n_u), np.nan)
    base = np.zeros(n_b, bool) if baseline_bins is None else np.asarray(baseline_bins, bool)
    sq = rate * rate
    for c in range(n_conditions):
        # sums over a condition's valid trials as weighted contractions: no (trial × bin × unit)
        # temporaries beyond the rate and its square (thousands of trials × bins per task)
        w = ((conditions == c)[:, None] & valid).astype(np.float64)  # (trials, units)
        n = w.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.einsum("tbu,tu->bu", rate, w) / n
            var = np.maximum(np.einsum("tbu,tu->bu", sq, w) - n * mean * mean, 0) / (n - 1)
            sem = np.where(n > 1, np.sqrt(var / n), np.nan)
            if base.any():
                nb = n * base.sum()
                b_mean = np.einsum("tbu,tu->u", rate[:, base], w) / nb
                b_sq = np.einsum("tbu,tu->u", sq[:, base], w) / nb
                b_sd = np.sqrt(np.maximum(b_sq - b_mean * b_mean, 0))
                b_sd[b_sd <= 1e-9 * np.abs(b_mean)] = 0.0  # constant, up to rounding
            else:
                b_mean = b_sd = np.full(n_u, np.nan)
            value = mean
            if normalize == "subtract":
                value = mean - b_mean
            elif normalize == "zscore":
                sd = np.where(b_sd > 0, b_sd, np.nan)
                value, sem = (mean - b_mean) / sd, sem / sd
        out[0, c], out[1, c] = value, sem
        out[2, c] = n
        out[3, c], out[4, c] = b_mean, b_sd
    return out


def osi(orientations_deg: np.ndarray, tuning: np.ndarray) -> float:
    """Global orientation selectivity ``|Σ r·e^{2iθ}| / Σ r`` (AllenSDK ``osi``; 0 untuned, 1
    responds to one orientation only); NaN when the responses sum to 0."""
    return _vector_strength(orientations_deg, tuning, 2.0)


def dsi(directions_deg: np.ndarray, tuning: np.ndarray) -> float:
    """Global direction selectivity ``|Σ r·e^{iθ}| / Σ r`` (AllenSDK ``dsi``)."""
    return _vector_strength(directions_deg, tuning, 1.0)


def _vector_strength(angles_deg, tuning, k: float) -> float:
    tuning = np.asarray(tuning, dtype=np.float64)
    theta = np.asarray(angles_deg, dtype=np.float64) / 180 * np.pi
    if theta.size == 0 or theta.size != tuning.size:
        raise ValueError(f"{theta.size} angles for {tuning.size} responses")
    total = tuning.sum()
    if total == 0:
        return float("nan")
    return float(np.abs((tuning * np.exp(1j * k * theta)).sum()) / total)


def tuning_table(counts: np.ndarray, orientation: np.ndarray, temporal_frequency: np.ndarray,
                 valid: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean spike count per (orientation, temporal frequency) condition and unit, as AllenSDK's
    ``conditionwise_spike_statistics`` ``spike_mean``.

    Parameters
    ----------
    counts : (n_trials, n_units) counts in each trial's window.
    orientation, temporal_frequency : (n_trials,) each trial's condition.
    valid : (n_trials, n_units) bool, optional.

    Returns
    -------
    oris (n_ori,), tfs (n_tf,) sorted; mean (n_ori, n_tf, n_units) (NaN: never shown);
    n (n_ori, n_tf, n_units) trials.
    """
    counts = np.asarray(counts, dtype=np.float64)
    oris, oi = np.unique(np.asarray(orientation, dtype=np.float64), return_inverse=True)
    tfs, ti = np.unique(np.asarray(temporal_frequency, dtype=np.float64), return_inverse=True)
    if valid is None:
        valid = np.ones(counts.shape, dtype=bool)
    total = np.zeros((oris.size, tfs.size, counts.shape[1]))
    n = np.zeros_like(total)
    np.add.at(total, (oi.ravel(), ti.ravel()), np.where(valid, counts, 0.0))
    np.add.at(n, (oi.ravel(), ti.ravel()), valid.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return oris, tfs, total / n, n


def grating_metrics(oris: np.ndarray, tfs: np.ndarray, mean: np.ndarray,
                    selectivity_at: str = "preferred_tf") -> np.ndarray:
    """``(4, n_units)``: ``pref_ori_dg``, ``pref_tf_dg``, ``g_osi_dg``, ``g_dsi_dg`` from a
    :func:`tuning_table`, as AllenSDK's ``DriftingGratings``: the preferred orientation
    maximises the mean over temporal frequencies of the condition means, the preferred temporal
    frequency the mean over orientations (first maximum on ties); the selectivities use the
    orientation tuning at the preferred temporal frequency (AllenSDK; an orientation never shown
    at that frequency makes them NaN, as AllenSDK's differing lengths do), or with
    ``selectivity_at="all_tf"`` the tuning averaged over temporal frequencies."""
    n_u = mean.shape[2]
    out = np.full((4, n_u), np.nan)
    for u in range(n_u):
        m = mean[:, :, u]
        by_ori = np.nanmean(m, axis=1)
        by_tf = np.nanmean(m, axis=0)
        if np.all(np.isnan(by_ori)):
            continue
        i_tf = int(np.nanargmax(by_tf))
        out[0, u] = oris[int(np.nanargmax(by_ori))]
        out[1, u] = tfs[i_tf]
        tuning = m[:, i_tf] if selectivity_at == "preferred_tf" else by_ori
        if not np.any(np.isnan(tuning)):
            out[2, u] = osi(oris, tuning)
            out[3, u] = dsi(oris, tuning)
    return out


#: AllenSDK's Gabor grid: 10° per position, azimuth offset +10°, elevation offset −30°
RF_DEGREES_PER_POSITION = 10.0
RF_AZIMUTH_OFFSET = 10.0
RF_ELEVATION_OFFSET = -30.0


def grid_degrees(values, grid: np.ndarray, offset: float) -> np.ndarray:
    """Patch positions (``x_position`` or ``y_position``, stimulus degrees) on ``grid`` (the
    positions shown) in the release's ``azimuth_rf`` / ``elevation_rf`` degrees: AllenSDK counts
    grid steps from the lowest position, 10° each, plus ``offset`` (:data:`RF_AZIMUTH_OFFSET`
    or :data:`RF_ELEVATION_OFFSET`); on the release's −40…40° grid azimuth = x + 50°,
    elevation = y + 10°."""
    grid = np.unique(np.asarray(grid, dtype=np.float64))
    step = float(np.diff(grid).min()) if grid.size > 1 else 1.0
    return (np.asarray(values, dtype=np.float64) - grid[0]) / step * RF_DEGREES_PER_POSITION \
        + offset


def rf_centre(rf: np.ndarray, mask_threshold: float = 0.5,
              integer_smoothing: bool = False) -> tuple[float, float, float]:
    """Receptive-field centre as AllenSDK's ``ReceptiveFieldMapping`` finds it: ``(azimuth_rf,
    elevation_rf, area_rf)`` in degrees (and degrees²).

    The spike-count map ``rf`` (elevation rows flipped so row 0 is the top of the screen, as
    AllenSDK builds it; azimuth columns) is smoothed with a Gaussian of σ = 1 position; the
    positions above ``max − mask_threshold · std`` form connected regions; the one holding the
    maximum is the field, and its centre of mass (in positions) is converted to degrees:
    azimuth ``10·x + 10``, elevation ``10·(8 − y) − 30`` (AllenSDK's ``threshold_rf`` and
    ``convert_*_to_degrees``).

    AllenSDK smooths its maps of integer spike counts in their integer type (scipy keeps the
    input's dtype), so every smoothed value is truncated: sparse maps smooth to a few levels or
    to all zeros (then the field is NaN with area 0). ``integer_smoothing=True`` does the same
    and reproduces AllenSDK's and the release's numbers exactly; the default smooths in float64.
    """
    rf = np.asarray(rf, dtype=np.float64)
    filt = (ndimage.gaussian_filter(np.round(rf).astype(np.int64), 1).astype(np.float64)
            if integer_smoothing else ndimage.gaussian_filter(rf, 1))
    thresh = filt > np.max(filt) - np.std(filt) * mask_threshold
    labels, _ = ndimage.label(thresh)
    best = np.argmax(ndimage.maximum(filt, labels=labels, index=np.unique(labels)))
    mask = (labels == best) & (labels > 0)
    if not mask.any():  # nothing above the threshold (a flat map): no field, as AllenSDK
        return float("nan"), float("nan"), 0.0
    cy, cx = ndimage.center_of_mass(mask.astype(np.float64))
    cx, cy = np.around(cx, 4), np.around(cy, 4)
    d = RF_DEGREES_PER_POSITION
    return (float(cx * d + RF_AZIMUTH_OFFSET),
            float((rf.shape[0] - 1 - cy) * d + RF_ELEVATION_OFFSET), float(mask.sum() * d * d))
