"""Noise correlations (r_sc) between brain areas, per stimulus; lazy, one task per unit group.

**Definition** (Kohn & Smith 2005; Cohen & Kohn 2011). A *trial* is one presentation; each unit's
spike count in the response window of every trial is compared with the mean of its *condition*
(AllenSDK's ``stimulus_condition_id``: every presentation with the same parameters, or the
parameters named in ``condition_by``). Conditions shown fewer than ``min_trials`` times are left
out (their means are too noisy to subtract), and the result says how many. ``average="pooled"``
z-scores each count within its condition and takes one Pearson correlation over all kept trials;
``average="fisher_z"`` correlates within each condition and averages Fisher z (weights: trials −
3). Area values average the unit pairs (distinct units within an area): their plain mean
(``area_average="mean"``) or ``tanh`` of the mean of their Fisher z (``"fisher_z"``), with the
spread across pairs (``sd``) and the numbers of pairs and of trials alongside.

**Spontaneous activity** has no presentations to repeat: each spontaneous block is cut into
back-to-back pseudo-trials of ``spontaneous_trial_s`` seconds, and each block is one condition
(its mean removed, which takes out slow drifts between blocks). The grouping does not depend on
how many pseudo-trials a block holds.

**Invalid times** (``analyses.validity``): trials overlapping an invalid interval of any analysed
unit's probe, or one tagged ``stimulus``, are dropped for every unit (a correlation needs the same
trials for both units); ``n_invalid_trials`` counts them.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InvalidSelectionError
from ..kernels import correlation_blocks as KC
from ..kernels.correlation import AREA_AVERAGES
from ..tasks.spikes import per_group, unit_groups
from . import checks, validity

SPONTANEOUS = "spontaneous"


def _spontaneous_trials(pres: pd.DataFrame, trial_s: float):
    """Back-to-back pseudo-trials tiling each spontaneous block; the block is the condition."""
    starts, keys = [], []
    for pid, a, b in zip(pres.index.to_numpy(), pres["start_time"].to_numpy(float),
                         pres["stop_time"].to_numpy(float), strict=True):
        n = int(np.floor((b - a) / trial_s + 1e-9))
        starts.append(a + trial_s * np.arange(n))
        keys.append(np.full(n, int(pid)))
    starts = np.concatenate(starts) if starts else np.zeros(0)
    return starts, starts + trial_s, np.concatenate(keys) if keys else np.zeros(0, int)


def _stimulus_trials(pres: pd.DataFrame, window, condition_by):
    onsets = pres["start_time"].to_numpy(float)
    if window is None:
        window = (0.0, float(pres["duration"].astype(float).min()))
    a, b = checks.window(window)
    if condition_by is None:
        keys = pres["stimulus_condition_id"].to_numpy(np.int64)
    else:
        keys = pd.MultiIndex.from_frame(pres[list(condition_by)].astype(str)).factorize()[0]
    return onsets + a, onsets + b, keys, (a, b)


def spike_count_correlations(session, stimuli: list[str] | None = None, *,
                             window: tuple[float, float] | None = None,
                             condition_by: list[str] | str | None = None,
                             min_trials: int = 5, average: str = "pooled",
                             area_average: str = "mean",
                             spontaneous_trial_s: float = 1.0, min_rate: float = 0.5,
                             unit_ids=None, exclude_invalid: bool = True) -> xr.DataArray:
    """Mean noise correlation between areas, per stimulus: ``(stimulus, area_a, area_b)``.

    Parameters (see the module's docstring for the definitions)
    ----------
    stimuli : default ``["spontaneous", "drifting_gratings"]``
    window : (start, stop) s relative to onset of the counting window; default the whole
        presentation (``0`` to the shortest presentation's duration).
    condition_by : stimulus parameters that define a condition; default every parameter
        (``stimulus_condition_id``).
    min_trials : conditions shown fewer times are excluded (default 5).
    average : over conditions, ``"pooled"`` (default) or ``"fisher_z"``.
    area_average : over the unit pairs of two areas, ``"mean"`` (default) of r, or
        ``"fisher_z"``: ``tanh`` of the mean of ``arctanh(r)``, pairs with |r| = 1 clipped to
        ±0.999999 and counted in ``n_clipped``.
    spontaneous_trial_s : length of the spontaneous pseudo-trials (default 1 s).
    min_rate : units firing below this overall rate (Hz) are left out.
    unit_ids : restrict to these units (default every unit with a structure).

    The result carries ``n_pairs`` and ``sd`` (stimulus, area_a, area_b): the standard deviation
    across pairs of what was averaged (r, or z for ``area_average="fisher_z"``, which also gives
    ``n_clipped``); pairs share units, so ``sd/√n_pairs`` is no standard error. Per stimulus
    ``n_trials``
    (kept), ``n_conditions``, ``n_conditions_excluded`` and ``n_invalid_trials``; attrs give
    the definition in words. Lazy: one task per group of units and stimulus, one kernel call
    per stimulus.
    """
    stimuli = checks.stimulus_names(session, stimuli, ["spontaneous", "drifting_gratings"])
    checks.choice("average", average, KC.AVERAGES)
    checks.choice("area_average", area_average, AREA_AVERAGES)
    if isinstance(condition_by, str):
        condition_by = [condition_by]
    if int(min_trials) < 2:
        raise InvalidSelectionError(f"min_trials={min_trials!r} must be at least 2: a "
                                    "condition shown once has no trial-to-trial fluctuation.")
    if not spontaneous_trial_s > 0:
        raise InvalidSelectionError(f"spontaneous_trial_s={spontaneous_trial_s!r} must be a "
                                    "positive number of seconds.")
    units = checks.units(session, unit_ids)
    units = units[(units["firing_rate"] >= min_rate) & units["structure_acronym"].notna()]
    areas = units["structure_acronym"].to_numpy(object)
    names = sorted(set(areas))
    uids = units.index.to_numpy()
    probes = pd.unique(validity.probe_names(units))
    src = session.reader.spike_source()
    groups = unit_groups(uids)
    stats, info = [], []
    for stim in stimuli:
        pres = session.get_stimulus_table(stim)
        if stim == SPONTANEOUS:
            starts, ends, keys = _spontaneous_trials(pres, float(spontaneous_trial_s))
        else:
            if condition_by is not None:
                for c in condition_by:
                    checks.parameter(pres, c, stim)
            starts, ends, keys, _ = _stimulus_trials(pres, window, condition_by)
        bad = np.zeros(starts.shape, bool)
        if exclude_invalid:
            bad = validity.overlapping(starts, ends,
                                       validity.invalid_intervals(session, probes, True))
        starts, ends, keys = starts[~bad], ends[~bad], keys[~bad]
        conds, n_per = np.unique(keys, return_counts=True)
        kept = conds[n_per >= int(min_trials)]
        if kept.size == 0:
            raise InvalidSelectionError(
                f"No condition of {stim!r} was shown at least min_trials={min_trials} times "
                f"(at most {int(n_per.max()) if n_per.size else 0} valid trials per condition, "
                f"{len(conds)} conditions): lower min_trials, or group conditions with "
                "condition_by=[...] (e.g. ['orientation']).")
        use = np.isin(keys, kept)
        info.append((int(use.sum()), int(kept.size), int(conds.size - kept.size),
                     int(bad.sum())))
        parts = per_group(KC.count_in_bins, src, groups, session.spike_ranges, starts[use],
                          ends[use])
        counts = dask.delayed(np.concatenate)(parts, axis=0)
        res = dask.delayed(KC.area_noise_correlation)(counts, keys[use], areas, names, average,
                                                      area_average)
        stats.append(da.from_delayed(res, shape=(4, len(names), len(names)), dtype=np.float64))
    n_trials, n_cond, n_excl, n_invalid = (np.array(v) for v in zip(*info, strict=True))
    dims = ("stimulus", "area_a", "area_b")
    stats = da.stack(stats, axis=1)  # (value | sd | pairs | clipped, stimulus, a, b)
    sd_units = "z (Fisher)" if area_average == "fisher_z" else "r (Pearson)"
    extra = {"n_clipped": (dims, stats[3].astype(np.int64))} if area_average == "fisher_z" else {}
    return xr.DataArray(
        stats[0], dims=dims, name="noise_correlation",
        coords={"stimulus": stimuli, "area_a": names, "area_b": names,
                "n_pairs": (dims, stats[2].astype(np.int64)),
                "sd": (dims, stats[1], {"units": sd_units,
                                        "description": "SD across unit pairs (ddof 1)"}),
                **extra, "n_trials": ("stimulus", n_trials),
                "n_conditions": ("stimulus", n_cond),
                "n_conditions_excluded": ("stimulus", n_excl),
                "n_invalid_trials": ("stimulus", n_invalid)},
        attrs={"units": "r (Pearson)", "session_id": session.ecephys_session_id,
               "average": average, "area_average": area_average,
               "min_trials": int(min_trials),
               "window_s": "whole presentation" if window is None else list(window),
               "condition_by": "stimulus_condition_id" if condition_by is None
               else list(condition_by),
               "spontaneous_trial_s": float(spontaneous_trial_s), "min_rate_hz": min_rate,
               "definition": "spike counts per trial minus their condition's mean (z-scored "
                             "within condition for 'pooled'); spontaneous blocks cut into "
                             "pseudo-trials, one condition per block; area value = "
                             + ("tanh of the mean Fisher z (arctanh r, |r| clipped at "
                                "0.999999) over unit pairs" if area_average == "fisher_z"
                                else "mean of r over unit pairs")
                             + "; sd = standard deviation across those pairs"})
