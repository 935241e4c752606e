"""Spike-train analyses: PSTHs (per unit, per condition, per structure), tuning curves and
AllenSDK's drifting-grating metrics (receptive fields: ``receptive_fields.py``).

Built on ``presentationwise_spike_counts`` (lazy, one task per group of units), so they run on
the cluster and combine across sessions with ``map_sessions``; the statistics are the kernels of
``kernels.responses``, mapped over the same groups of units. Trials overlapping an invalid
interval of a unit's probe (or one tagged ``stimulus``) are left out for that unit
(``analyses.validity``), and ``n_trials`` says how many remained.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ..allen import NULL
from ..errors import InvalidSelectionError
from ..kernels import responses as R
from . import checks, validity

TIME = "time_relative_to_stimulus_onset"
WEIGHTS = ("units", "trials")
METRICS = ("pref_ori_dg", "pref_tf_dg", "g_osi_dg", "g_dsi_dg", "n_trials")


def _trial_validity(session, units: pd.DataFrame, pres: pd.DataFrame, a: float, b: float,
                    exclude_invalid: bool) -> np.ndarray:
    """``(n_trials, n_units)``: trials to use per unit."""
    onsets = pres["start_time"].to_numpy(np.float64)
    if not exclude_invalid:
        return np.ones((len(onsets), len(units)), dtype=bool)
    return ~validity.invalid_trials(session, units, onsets + a, onsets + b)


def _skipped(valid: np.ndarray) -> dict[str, int]:
    """What the attrs say was left out: presentations invalid for at least one unit, and
    (unit, presentation) pairs."""
    return {"presentations_skipped": int((~valid).any(axis=1).sum()),
            "n_trials_excluded_invalid": int((~valid).sum())}


def _conditions(pres: pd.DataFrame, condition_by, stimulus_name: str):
    """Per-trial condition index, the condition values, and the dimension name."""
    if condition_by is None:
        return np.zeros(len(pres), np.int64), None, None
    checks.parameter(pres, condition_by, stimulus_name)
    values = pres[condition_by].astype(str).to_numpy()
    labels, index = np.unique(values, return_inverse=True)
    return index.astype(np.int64), labels, condition_by


def psth(session, stimulus_name: str = "flashes", bin_edges=None, unit_ids=None, *,
         condition_by: str | None = None, baseline: tuple[float, float] | None = None,
         normalize: str = "none", smooth_sigma_s: float | None = None,
         exclude_invalid: bool = True) -> xr.DataArray:
    """Peri-stimulus time histogram: ``(unit_id, [condition_by,] time_relative_to_stimulus
    _onset)``, lazy.

    Parameters
    ----------
    stimulus_name : a stimulus the session shows (default ``"flashes"``).
    bin_edges : seconds relative to onset (default −50 to 250 ms in 5 ms bins).
    unit_ids : default every unit of ``session.units``.
    condition_by : a stimulus parameter (e.g. ``"color"`` for flashes): one PSTH per value.
    baseline : (start, stop) s, the bins whose centres lie inside are the baseline (default:
        the bins before onset, when there are any).
    normalize : ``"none"`` (firing rate, Hz), ``"subtract"`` (rate − baseline rate, Hz) or
        ``"zscore"`` ((rate − baseline mean) / baseline SD, the SD of all trial × baseline-bin
        rates; NaN for a unit that never varied in the baseline).
    smooth_sigma_s : Gaussian smoothing of each trial's rate, σ in seconds (equal bins only).

    Coordinates: ``sem`` (standard error across trials, same units), ``n_trials`` (valid
    trials per unit [and condition]), ``baseline_rate`` and ``baseline_sd`` (Hz),
    ``structure_acronym``; attrs: units, the options, trials excluded as invalid.
    """
    stimulus_name = checks.stimulus_names(session, [stimulus_name])[0]
    checks.choice("normalize", normalize, R.NORMALIZE)
    if bin_edges is None:
        bin_edges = np.arange(-0.05, 0.25 + 1e-9, 0.005)
    bin_edges = np.asarray(bin_edges, dtype=np.float64)
    pres = session.get_stimulus_table(stimulus_name)
    units = checks.units(session, unit_ids)
    counts = session.presentationwise_spike_counts(bin_edges, pres.index, units.index)
    centres = counts[TIME].values
    if baseline is None and bin_edges[0] < 0:
        baseline = (float(bin_edges[0]), 0.0)
    base_bins = None
    if baseline is not None:
        lo, hi = checks.window(baseline, "baseline")
        base_bins = (centres >= lo) & (centres <= hi)
        if not base_bins.any():
            raise InvalidSelectionError(f"baseline={baseline!r} holds no bin centre of "
                                        f"bin_edges ({bin_edges[0]:g} … {bin_edges[-1]:g} s).")
    elif normalize != "none":
        raise InvalidSelectionError(f"normalize={normalize!r} needs a baseline: pass "
                                    "baseline=(start, stop) or bin_edges starting before 0.")
    sigma_bins = None
    if smooth_sigma_s:
        widths = np.diff(bin_edges)
        if not np.allclose(widths, widths[0], rtol=1e-6):
            raise InvalidSelectionError("smooth_sigma_s needs equal bins in bin_edges.")
        sigma_bins = float(smooth_sigma_s) / widths[0]
    cond, labels, cdim = _conditions(pres, condition_by, stimulus_name)
    n_cond = 1 if labels is None else len(labels)
    valid = _trial_validity(session, units, pres, bin_edges[0], bin_edges[-1], exclude_invalid)
    data = counts.data.rechunk({0: -1})  # chunks are groups of units: a no-op
    valid_d = da.from_array(valid, chunks=((valid.shape[0],), data.chunks[2]))
    stats = da.map_blocks(
        lambda c, v: R.psth_stats(c, bin_edges, cond, n_cond, v[:, 0, :], sigma_bins,
                                  base_bins, normalize),
        data, valid_d[:, None, :], new_axis=[0], chunks=((5,), (n_cond,), data.chunks[1],
                                                            data.chunks[2]),
        dtype=np.float64)
    dims = ("condition", TIME, "unit_id")
    coords = {TIME: centres, "unit_id": units.index.to_numpy()}

    def field(i, reduce_time=False):
        arr = stats[i][:, 0] if reduce_time else stats[i]
        return xr.DataArray(arr, dims=("condition", "unit_id") if reduce_time else dims)

    out = field(0).assign_coords(coords)
    out = out.assign_coords(sem=field(1), n_trials=field(2, True), baseline_rate=field(3, True),
                            baseline_sd=field(4, True))
    if labels is None:
        out = out.isel(condition=0, drop=True)
    else:
        out = out.rename(condition=cdim).assign_coords({cdim: labels})
    order = ["unit_id"] + ([cdim] if cdim else []) + [TIME]
    out = out.transpose(*order).assign_coords(structure_acronym=(
        "unit_id", units["structure_acronym"].fillna("").to_numpy(object)))
    out.name = "firing_rate" if normalize == "none" else (
        "firing_rate_change" if normalize == "subtract" else "firing_rate_z")
    out.attrs.update(units="z" if normalize == "zscore" else "Hz",
                     stimulus_name=stimulus_name, session_id=session.ecephys_session_id,
                     normalize=normalize, baseline_s=list(baseline) if baseline else None,
                     smooth_sigma_s=smooth_sigma_s, n_presentations=len(pres),
                     **_skipped(valid))
    return out


def psth_by_structure(rate: xr.DataArray, weight: str | xr.DataArray = "units"
                      ) -> xr.DataArray:
    """Mean PSTH of the units of each structure: ``(structure, [condition,] time)``.

    ``weight``: ``"units"`` (each unit counts once, default), ``"trials"`` (each unit by its
    number of valid trials), or a DataArray of weights over ``unit_id`` (e.g. a quality
    metric). ``sem`` is the weighted standard error across units (``Σ w²(x − x̄)²`` ÷ ``(Σw)²``
    × n/(n − 1)) and ``n_units`` counts the units with a value.
    """
    keep = np.flatnonzero(rate.structure_acronym.values != "")
    r = rate.isel(unit_id=keep)
    if isinstance(weight, str):
        checks.choice("weight", weight, WEIGHTS)
        w = r["n_trials"].variable.to_base_variable() if weight == "trials" else None
        w = xr.DataArray(w, dims=w.dims) if w is not None else \
            xr.DataArray(np.ones(r.sizes["unit_id"]), dims="unit_id")
    else:
        w = weight.sel(unit_id=r.unit_id.values).reset_coords(drop=True)
    values = r.reset_coords(drop=True)
    has = values.notnull()
    w = w.where(has, 0.0)
    struct = xr.DataArray(r.structure_acronym.values, dims="unit_id", name="structure")
    wsum = w.groupby(struct).sum("unit_id")
    mean = (values.fillna(0) * w).groupby(struct).sum("unit_id") / wsum
    n = has.groupby(struct).sum("unit_id")
    dev = (values - mean.sel(structure=struct)).fillna(0)
    var = ((w * dev) ** 2).groupby(struct).sum("unit_id") / wsum ** 2
    sem = np.sqrt(var * n / (n - 1)).where(n > 1)
    out = mean.assign_coords(sem=sem, n_units=n)
    out.name = rate.name
    out.attrs = {**rate.attrs, "weight": weight if isinstance(weight, str) else "custom"}
    return out


def _numeric_parameter(pres: pd.DataFrame, parameter: str, stimulus_name: str) -> np.ndarray:
    values = pd.to_numeric(pres[parameter], errors="coerce")
    if values.isna().any():
        raise InvalidSelectionError(f"parameter={parameter!r} of {stimulus_name!r} is not "
                                    f"numeric ({pres[parameter].iloc[0]!r}); tuning curves need "
                                    "numbers.")
    return values.to_numpy(np.float64)


def tuning_curves(session, stimulus_name: str = "drifting_gratings",
                  parameter: str = "orientation", window: tuple[float, float] | None = None,
                  unit_ids=None, *, exclude_invalid: bool = True) -> xr.DataArray:
    """Mean firing rate (Hz) per value of ``parameter`` during each presentation:
    ``(unit_id, <parameter>)``, with ``sem`` and ``n_trials``. The window defaults to the
    presentation duration. Presentations without the parameter (blank sweeps, ``"null"``) are
    left out."""
    stimulus_name = checks.stimulus_names(session, [stimulus_name])[0]
    pres = session.get_stimulus_table(stimulus_name)
    checks.parameter(pres, parameter, stimulus_name)
    pres = pres[pres[parameter].astype(str) != NULL]
    a, b = checks.window(window) if window is not None else (
        0.0, float(pres["duration"].astype(float).min()))
    values = _numeric_parameter(pres, parameter, stimulus_name)
    levels, index = np.unique(values, return_inverse=True)
    units = checks.units(session, unit_ids)
    edges = np.array([a, b])
    counts = session.presentationwise_spike_counts(edges, pres.index, units.index)
    valid = _trial_validity(session, units, pres, a, b, exclude_invalid)
    data = counts.data.rechunk({0: -1})
    valid_d = da.from_array(valid, chunks=((valid.shape[0],), data.chunks[2]))
    stats = da.map_blocks(
        lambda c, v: R.psth_stats(c, edges, index, len(levels), v[:, 0, :]),
        data, valid_d[:, None, :], new_axis=[0],
        chunks=((5,), (len(levels),), (1,), data.chunks[2]), dtype=np.float64)[:, :, 0]
    dims = (parameter, "unit_id")
    curves = xr.DataArray(stats[0], dims=dims, coords={parameter: levels,
                                                       "unit_id": units.index.to_numpy()})
    curves = curves.assign_coords(sem=(dims, stats[1]), n_trials=(dims, stats[2]))
    curves = curves.transpose("unit_id", parameter).assign_coords(
        structure_acronym=("unit_id", units["structure_acronym"].fillna("").to_numpy(object)))
    curves.name = "firing_rate"
    curves.attrs.update(units="Hz", stimulus_name=stimulus_name, window_s=[a, b],
                        session_id=session.ecephys_session_id,
                        **_skipped(valid))
    return curves


def preferred(curves: xr.DataArray, parameter: str = "orientation") -> xr.DataArray:
    """The parameter value of each unit's largest response (first on ties)."""
    checks.choice("parameter", parameter, [d for d in curves.dims if d != "unit_id"])
    return curves[parameter][curves.fillna(-np.inf).argmax(parameter)].drop_vars(
        parameter, errors="ignore")


def tuning_contrast(curves: xr.DataArray, parameter: str = "orientation") -> xr.DataArray:
    """``(max − min) / (max + min)`` of each unit's tuning curve: the contrast between its
    strongest and weakest response (0 flat, 1 silent at one value). Not Allen's orientation
    selectivity: for ``g_osi_dg`` / ``g_dsi_dg`` use :func:`grating_metrics`."""
    checks.choice("parameter", parameter, [d for d in curves.dims if d != "unit_id"])
    hi, lo = curves.max(parameter), curves.min(parameter)
    return ((hi - lo) / (hi + lo)).rename("tuning_contrast")


def grating_metrics(session, unit_ids=None, *, stimulus_name: str = "drifting_gratings",
                    selectivity_at: str = "preferred_tf",
                    exclude_invalid: bool = True) -> xr.DataArray:
    """AllenSDK's drifting-grating metrics per unit, as the release's analysis-metrics tables
    hold them: ``pref_ori_dg``, ``pref_tf_dg``, ``g_osi_dg``, ``g_dsi_dg``.

    Responses are spike counts over each whole presentation, averaged per (orientation,
    temporal frequency) condition (AllenSDK's ``conditionwise_spike_statistics``). The preferred
    orientation maximises the mean over temporal frequencies, the preferred temporal frequency
    the mean over orientations. ``g_osi_dg = |Σ r·e^{2iθ}| / Σ r`` and ``g_dsi_dg = |Σ r·e^{iθ}|
    / Σ r`` over orientations θ (Ringach et al. 2002), with ``r`` the tuning at the preferred
    temporal frequency (``selectivity_at="preferred_tf"``, AllenSDK's definition: NaN when an
    orientation was never shown at it) or averaged over temporal frequencies
    (``"all_tf"``). Lazy (one task per unit group): ``(unit_id, metric)``, metrics
    ``pref_ori_dg, pref_tf_dg, g_osi_dg, g_dsi_dg, n_trials``; ``.to_pandas()`` after
    ``.compute()`` gives the release table's columns.
    """
    checks.choice("selectivity_at", selectivity_at, ["preferred_tf", "all_tf"])
    stimulus_name = checks.stimulus_names(session, [stimulus_name])[0]
    pres = session.get_stimulus_table(stimulus_name)
    for p in ("orientation", "temporal_frequency"):
        checks.parameter(pres, p, stimulus_name)
    pres = pres[(pres["orientation"].astype(str) != NULL)
                & (pres["temporal_frequency"].astype(str) != NULL)]
    ori = _numeric_parameter(pres, "orientation", stimulus_name)
    tf = _numeric_parameter(pres, "temporal_frequency", stimulus_name)
    units = checks.units(session, unit_ids)
    trial = float(pres["duration"].astype(float).max())
    edges = np.array([0.0, trial])
    counts = session.presentationwise_spike_counts(edges, pres.index, units.index)
    valid = _trial_validity(session, units, pres, 0.0, trial, exclude_invalid)

    def kernel(c, v):
        oris, tfs, mean, _ = R.tuning_table(c[:, 0, :], ori, tf, v[:, 0, :])
        return np.concatenate([R.grating_metrics(oris, tfs, mean, selectivity_at),
                               v[:, 0, :].sum(0)[None]])

    data = counts.data.rechunk({0: -1})
    valid_d = da.from_array(valid[:, None, :], chunks=((valid.shape[0],), (1,),
                                                       data.chunks[2]))
    arr = da.map_blocks(kernel, data, valid_d, drop_axis=[1], chunks=((5,), data.chunks[2]),
                        dtype=np.float64)
    out = xr.DataArray(arr.T, dims=("unit_id", "metric"),
                       coords={"unit_id": units.index.to_numpy(), "metric": list(METRICS),
                               "structure_acronym": ("unit_id", units["structure_acronym"]
                                                     .fillna("").to_numpy(object))},
                       name="grating_metrics",
                       attrs={"selectivity_at": selectivity_at, "stimulus_name": stimulus_name,
                              "session_id": session.ecephys_session_id,
                              "units": "pref_ori_dg: degrees, pref_tf_dg: Hz, g_osi_dg and "
                                       "g_dsi_dg: 0–1, n_trials: presentations",
                              **_skipped(valid)})
    return out
