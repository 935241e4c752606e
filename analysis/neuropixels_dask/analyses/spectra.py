"""LFP power spectra: per channel, per stimulus, per brain structure; chunk-wise on Dask.

One pass over a probe's LFP (one task per storage-chunk row) accumulates periodogram sums for every
stimulus type at once, each segment transformed once (``kernels.segment_psd``); blocks are reduced
as a tree of neighbours, which also adds the segments straddling two blocks, so no worker ever
holds more than one block and the blocking does not change the result. ``"all"`` is the whole
recording (or ``time_range``). Welch (1 s Hann segments on one grid) for long epochs, multitaper
(DPSS tapers on segments fitted to each presentation) for short ones such as 250 ms flashes;
every result carries its segment counts, standard errors, chi-square confidence intervals and
the invalid time it left out (docs/analyses.md).
"""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..errors import InvalidSelectionError
from ..kernels import segment_psd as K
from . import checks, validity
from .checks import choice

ALL = "all"
#: Taper of every welch segment: welch's default, so "all" equals ``scipy.signal.welch``
WINDOW = "hann"
METHODS = ("welch", "multitaper")


def stimulus_intervals(session, stimuli: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{stimulus_name: (k, 2) start/stop}`` from the session's presentations."""
    sp = session.stimulus_presentations
    names = stimuli if stimuli is not None else list(dict.fromkeys(sp["stimulus_name"]))
    out = {}
    for name in names:
        rows = sp[sp["stimulus_name"] == name]
        out[name] = rows[["start_time", "stop_time"]].to_numpy(np.float64)
    return out


def _block_sums(block, start, seg):
    """One task per LFP block (the task prefix ``block_sums`` is what reliability tests watch)."""
    return K.block_partial(block, start, seg)


def _tree_sum(parts: list, seg):
    """Balanced tree that only ever joins neighbours, as :func:`K.combine` requires."""
    while len(parts) > 1:
        parts = [dask.delayed(K.combine)(parts[i], parts[i + 1], seg) if i + 1 < len(parts)
                 else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def _to_psd(total, fs, nperseg):
    _, psd, sem = K.finalize(total.sums, total.counts, fs, nperseg, total.sumsq)
    return psd, sem


def _segment_seconds(method: str, seconds_per_segment, intervals: dict[str, np.ndarray]
                     ) -> float:
    if seconds_per_segment is None:
        if method == "welch":
            return 1.0
        # multitaper: the shortest presentation asked for, so every stimulus holds segments
        durations = [float(np.min(iv[:, 1] - iv[:, 0])) for iv in intervals.values() if len(iv)]
        return min([1.0, *durations])
    try:
        value = float(seconds_per_segment)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise InvalidSelectionError(f"seconds_per_segment={seconds_per_segment!r} must be a "
                                    "positive number of seconds.")
    return value


def _confidence(value) -> float:
    try:
        level = float(value)
    except (TypeError, ValueError):
        level = float("nan")
    if not 0 < level < 1:
        raise InvalidSelectionError(f"confidence={value!r} must be a level in (0, 1), e.g. "
                                    "0.95 for a 95 % interval.")
    return level


def _with_ci(spectra: xr.DataArray, confidence: float) -> xr.DataArray:
    """``spectra`` with ``ci_low``/``ci_high`` (V²/Hz), the chi-square ``confidence`` interval
    of each value from its ``dof`` coordinate ``(stimulus, frequency)``, and ``attrs["ci"]``.

    The bounds are the value times a factor of its degrees of freedom, so they stay lazy, and a
    mean over channels with one ``dof`` (``by_structure``) has as bounds the mean of theirs.
    """
    dof = spectra["dof"]
    low, high = K.chi2_factors(dof.values, confidence)
    data = spectra.variable
    units = {"units": spectra.attrs.get("units", "V²/Hz")}
    out = spectra.assign_coords({
        name: (spectra.dims, (xr.Variable(dof.dims, f) * data).transpose(*spectra.dims).data,
               units) for name, f in (("ci_low", low), ("ci_high", high))})
    if spectra.attrs.get("method") == "multitaper":
        how = (f"chi-square, ν = 2·K·N (K = {spectra.attrs['n_tapers']} DPSS tapers, N "
               "segments; Percival & Walden 1993)")
    else:
        how = ("chi-square, ν = equivalent degrees of freedom of the overlapping Hann segments "
               "(Welch 1967; Percival & Walden 1993 eq. 292a, from the window's overlap "
               "correlation and the segments' starts)")
    interior = dof.fillna(0.0).max([d for d in dof.dims if d != "stimulus"]).values
    freqs = dof.frequency.values[dof.notnull().any([d for d in dof.dims if d != "frequency"])
                                 .values]
    out.attrs = {**spectra.attrs, "ci": {
        "level": float(confidence), "method": how,
        "dof": dict(zip(map(str, dof.stimulus.values), np.round(interior, 3).tolist(),
                        strict=True)),
        "frequencies_hz": [float(freqs.min()), float(freqs.max())] if freqs.size else [],
        "note": "no interval (NaN) within the taper's bandwidth of 0 Hz and Nyquist"}}
    return out


def _refuse_empty(labels, counts, intervals, seconds, method, invalid_s_skipped):
    empty = [name for name, n in zip(labels, counts, strict=True) if n == 0]
    if not empty:
        return
    lines = []
    for name in empty:
        iv = intervals[name]
        longest = float(np.max(iv[:, 1] - iv[:, 0])) if len(iv) else 0.0
        lines.append(f"{name!r} ({len(iv)} presentations, the longest {longest:.3f} s, "
                     f"{invalid_s_skipped[name]:.1f} s of them invalid)")
    hint = ("use method='multitaper' (segments fitted to each presentation) or a shorter "
            "seconds_per_segment" if method == "welch" else "use a shorter seconds_per_segment")
    raise InvalidSelectionError(
        f"No {seconds:g} s {method} segment fits inside {', '.join(lines)}: that spectrum "
        f"would rest on nothing. {hint}.")


def lfp_spectra(session, probe_id: int, stimuli: list[str] | None = None, *,
                method: str = "welch", seconds_per_segment: float | None = None,
                overlap: float = 0.5, time_half_bandwidth: float = 2.0,
                include_all: bool = True, time_range=None,
                exclude_invalid: bool = True, confidence: float = 0.95) -> xr.DataArray:
    """LFP power spectral density (V²/Hz) per stimulus and channel: ``(stimulus, frequency,
    channel)``, lazy.

    ``method="welch"`` (default): segments of ``seconds_per_segment`` (default 1 s), Hann
    window, ``overlap`` fraction, on one grid over the whole selection, so ``"all"`` equals
    ``scipy.signal.welch`` of the selected samples; a stimulus counts the grid segments lying
    inside its presentations, back-to-back presentations merged. ``method="multitaper"``: each
    presentation (back-to-back ones merged) is tiled from its onset by segments of
    ``seconds_per_segment`` (default: the shortest presentation asked for, at most 1 s; 250 ms
    for flashes), each tapered by the ``2·NW − 1`` DPSS tapers of ``NW = time_half_bandwidth``
    (``scipy.signal.windows.dpss``) and their periodograms averaged: the estimate for short
    epochs, with a frequency resolution of ``1/seconds_per_segment`` and a smoothing bandwidth
    of ``±NW/seconds_per_segment`` Hz.

    Every result says what it rests on: ``n_segments`` and ``invalid_s_skipped`` (seconds of the
    stimulus's intervals within the recording that are invalid, see ``analyses.validity``, and
    that no segment touches) per stimulus, and ``sem``, the
    standard error of the mean periodogram across segments (overlapping welch segments are not
    independent, so then a lower bound). ``ci_low``/``ci_high`` (V²/Hz) are the two-sided
    ``confidence`` interval of each value, chi-square with the ``dof`` coordinate's degrees of
    freedom: ``2·K·N`` for ``K`` tapers and ``N`` back-to-back multitaper segments, the
    equivalent degrees of freedom of the overlapping Hann segments for welch (Percival & Walden
    1993); NaN within the taper's bandwidth of 0 Hz and Nyquist, where the chi-square law fails;
    ``attrs["ci"]`` states the level, method and dof. A stimulus that would hold no segment is
    refused (:class:`InvalidSelectionError`), as is an unknown one. One task per LFP block plus a tree
    reduction; one FFT per segment and taper whatever the number of stimuli.
    """
    choice("method", method, METHODS)
    confidence = _confidence(confidence)
    asked = stimuli is not None
    stimuli = checks.stimulus_names(session, stimuli)
    try:
        overlap = float(overlap)
    except (TypeError, ValueError):
        overlap = float("nan")
    if not 0 <= overlap < 1:
        raise InvalidSelectionError(f"overlap={overlap!r} must be a fraction in [0, 1).")
    # unmasked: the segments leave the invalid intervals out themselves (exclude_invalid)
    lfp = session.get_lfp(probe_id, mask_invalid_intervals=False, time_range=time_range)
    probe_id = int(lfp.attrs["probe_id"])
    fs = float(lfp.attrs["sampling_rate"])
    intervals = stimulus_intervals(session, stimuli)
    seconds = _segment_seconds(method, seconds_per_segment, intervals)
    times = lfp.time.values
    if method == "welch":
        nperseg = int(round(seconds * fs))
        step = max(1, int(round(nperseg * (1 - overlap))))
        window, placement = WINDOW, "grid"
    else:
        nperseg = max(1, int(np.floor(seconds * fs + 1e-6)))
        step, placement = nperseg, "epoch"
        window = ("dpss", float(time_half_bandwidth))
        if not 0.5 <= time_half_bandwidth <= nperseg / 2:
            raise InvalidSelectionError(f"time_half_bandwidth={time_half_bandwidth!r} must lie "
                                        f"in [0.5, {nperseg / 2}] for {nperseg}-sample segments.")
    if include_all and len(times):
        intervals = {ALL: np.array([[times[0], times[-1] + 1.0 / fs]]), **intervals}
    labels = list(intervals)
    probe_name = str(session.probes.loc[probe_id, "description"])
    exclude = {}
    if exclude_invalid:
        bad_probe = validity.invalid_intervals(session, [probe_name], stimulus=False)
        bad_stim = validity.invalid_intervals(session, [probe_name], stimulus=True)
        exclude = {name: (bad_probe if name == ALL else bad_stim) for name in labels}
    seg = K.labelled_segmenting(times, intervals, nperseg, step, window, placement, exclude)
    span = (float(times[0]), float(times[-1])) if len(times) else (0.0, 0.0)
    invalid_s_skipped = {name: validity.overlap_s(intervals[name], exclude.get(name, ()), span)
                  for name in labels}
    counts = K.segment_counts(len(times), seg)
    left_out = []
    if not asked:  # "every stimulus": those that hold no segment are named, not NaN
        left_out = [n for n, c in zip(labels, counts, strict=True) if c == 0 and n != ALL]
        if left_out:
            warnings.warn(f"lfp_spectra: no {seconds:g} s {method} segment fits inside "
                          f"{left_out}, left out (attrs['stimuli_left_out']); ask for them "
                          "with method='multitaper'.", stacklevel=2)
            keep = [j for j, n in enumerate(labels) if n not in left_out]
            labels = [labels[j] for j in keep]
            intervals = {n: intervals[n] for n in labels}
            seg = K.Segmenting(seg.nperseg, seg.step, tuple(seg.ranges[j] for j in keep),
                               seg.window, seg.placement)
            counts = counts[keep]
    _refuse_empty(labels, counts, intervals, seconds, method, invalid_s_skipped)
    dof = K.frequency_dof(K.segment_dof(len(times), seg), nperseg, K.edge_bins(window))
    blocks = lfp.data.to_delayed().ravel()
    starts = np.cumsum((0,) + lfp.data.chunks[0][:-1])
    seg_d = dask.delayed(seg, pure=True)  # one key: every task shares it
    parts = [dask.delayed(_block_sums)(b, int(i0), seg_d)
             for b, i0 in zip(blocks, starts, strict=True)]
    result = dask.delayed(_to_psd, nout=2)(_tree_sum(parts, seg_d), fs, nperseg)
    n_freq, n_ch = nperseg // 2 + 1, lfp.sizes["channel"]
    shape = (len(labels), n_freq, n_ch)
    psd = da.from_delayed(result[0], shape=shape, dtype=np.float64)
    sem = da.from_delayed(result[1], shape=shape, dtype=np.float64)
    # Nominal frequencies (k × the nominal rate / nperseg): probes and sessions differ in their
    # exact rate by < 0.01 %, and a shared grid lets spectra from all of them line up.
    freqs = np.arange(n_freq) * round(fs) / nperseg
    coords = {k: v for k, v in lfp.coords.items() if v.dims == ("channel",)}
    coords.update({"stimulus": labels, "frequency": ("frequency", freqs, {"units": "Hz"}),
                   "n_segments": ("stimulus", counts),
                   "invalid_s_skipped": ("stimulus", [invalid_s_skipped[n] for n in labels], {"units": "s"}),
                   "sem": (("stimulus", "frequency", "channel"), sem, {"units": "V²/Hz"}),
                   "dof": (("stimulus", "frequency"), dof)})
    attrs = {"units": "V²/Hz", "probe_id": probe_id, "session_id": session.ecephys_session_id,
             "method": method, "nperseg": nperseg, "step": step,
             "segment_s": nperseg / fs, "frequency_resolution_hz": fs / nperseg,
             "exclude_invalid": bool(exclude_invalid), "stimuli_left_out": left_out}
    if method == "multitaper":
        attrs.update(time_half_bandwidth=float(time_half_bandwidth), n_tapers=seg.n_tapers,
                     bandwidth_hz=2 * float(time_half_bandwidth) * fs / nperseg)
    return _with_ci(xr.DataArray(psd, dims=("stimulus", "frequency", "channel"),
                                 coords=coords, name="psd", attrs=attrs), confidence)


def by_structure(psd: xr.DataArray) -> xr.DataArray:
    """Mean over the channels of each brain structure (channels outside the brain dropped).

    ``sem`` becomes the mean of the channels' standard errors: exact if the channels' segment
    powers move together (neighbouring LFP channels nearly do), an upper bound otherwise.
    ``ci_low``/``ci_high`` are the chi-square interval of the mean with one channel's degrees
    of freedom (the mean of the channels' bounds): exact under the same condition, too wide
    (conservative) otherwise.
    """
    keep = np.flatnonzero(psd.structure_acronym.values != "")
    inside = psd.isel(channel=keep).drop_vars(["ci_low", "ci_high"], errors="ignore")
    sem = inside["sem"] if "sem" in inside.coords else None
    inside = inside.drop_vars("sem", errors="ignore")
    out = inside.groupby("structure_acronym").mean("channel")
    if sem is not None:
        sem = sem.variable.to_base_variable()
        sem_da = xr.DataArray(sem, dims=sem.dims, coords={
            "structure_acronym": ("channel", inside.structure_acronym.values)})
        out = out.assign_coords(sem=sem_da.groupby("structure_acronym").mean("channel")
                                .transpose(*out.dims).variable)
    out.attrs = dict(psd.attrs)
    out = out.rename(structure_acronym="structure")
    return _with_ci(out, psd.attrs["ci"]["level"]) if "ci" in psd.attrs else out


def session_structure_spectra(session, stimuli: list[str] | None = None,
                              **kwargs) -> xr.DataArray:
    """Spectra of every probe with LFP, averaged per structure: ``(stimulus, frequency,
    structure)``. Probes are computed in parallel; a structure seen by several probes is the
    mean of their spectra. ``attrs['probe_ids']`` lists the probes, ``attrs['n_segments']``
    each probe's segments per stimulus; the ``n_segments`` coordinate is the fewest of any
    probe, and ``dof`` the fewest degrees of freedom: ``ci_low``/``ci_high`` are the chi-square
    interval of the probe mean with them (conservative: probes seeing one structure are not
    fully correlated). Keyword arguments are :func:`lfp_spectra`'s."""
    probes = session.probes.index[session.probes["has_lfp_data"].astype(bool)]
    per_probe = [by_structure(lfp_spectra(session, int(p), stimuli, **kwargs)) for p in probes]
    if not per_probe:
        raise InvalidSelectionError(f"Session {session.ecephys_session_id} has no probe with "
                                    "LFP (session.probes.has_lfp_data).")
    n_seg = {int(p): dict(zip(s.stimulus.values.tolist(), s.n_segments.values.tolist(),
                              strict=True)) for p, s in zip(probes, per_probe, strict=True)}
    fewest = np.min([s.n_segments.values for s in per_probe], axis=0)
    excluded = np.max([s.invalid_s_skipped.values for s in per_probe], axis=0)
    sems = [s["sem"].reset_coords(drop=True) for s in per_probe]
    dof = np.min([s["dof"].values for s in per_probe], axis=0)
    per_probe = [s.drop_vars(["n_segments", "invalid_s_skipped", "sem", "dof", "ci_low",
                              "ci_high"]) for s in per_probe]

    def over_probes(arrays):
        return xr.concat(arrays, dim="probe", coords="minimal", compat="override",
                         join="outer", combine_attrs="drop").mean("probe", skipna=True)

    out = over_probes(per_probe)
    out = out.assign_coords(sem=over_probes(sems).transpose(*out.dims).variable)
    attrs = {k: v for k, v in per_probe[0].attrs.items() if k != "probe_id"}
    attrs.update(probe_ids=[int(p) for p in probes], n_segments=n_seg)
    out.attrs = attrs
    out = out.assign_coords(n_segments=("stimulus", fewest),
                            invalid_s_skipped=("stimulus", excluded, {"units": "s"}),
                            dof=(("stimulus", "frequency"), dof))
    return _with_ci(out, attrs["ci"]["level"])


def relative_to(spectra: xr.DataArray, baseline: str = "spontaneous") -> xr.DataArray:
    """Power change relative to a baseline stimulus, in dB: ``10·log10(P / P_baseline)``.

    ``ci_low``/``ci_high`` (dB) are the interval of the ratio at the spectra's confidence level:
    two independent chi-square estimates with ``ν`` and ``ν_b`` degrees of freedom (the ``dof``
    coordinate) have ``(P̂/P̂_b)/(P/P_b) ~ F(ν, ν_b)``, so the true ratio lies in
    ``[R̂/F(1 − α/2), R̂/F(α/2)]``. Only stimuli whose segments are disjoint from the baseline's
    are independent of it: the baseline itself and ``"all"`` (which contains every stimulus)
    have NaN bounds, and so has everything when the baseline is ``"all"``. The V²/Hz bounds
    and ``sem`` are dropped: they do not apply to a ratio.
    """
    choice("baseline", baseline, list(spectra.stimulus.values))
    base = spectra.drop_vars(["sem", "ci_low", "ci_high", "dof"], errors="ignore")
    out = 10 * np.log10(base / base.sel(stimulus=baseline))
    out.name = "power_change"
    attrs = {k: v for k, v in spectra.attrs.items() if k != "ci"}
    attrs.update(units="dB", baseline=baseline)
    if "dof" in spectra.coords and "ci" in spectra.attrs:
        dof = spectra["dof"]
        level = spectra.attrs["ci"]["level"]
        num, den = xr.broadcast(dof, dof.sel(stimulus=baseline, drop=True))
        low, high = K.ratio_factors_db(num.values, den.values, level)
        shared = xr.Variable("stimulus", [str(name) in (baseline, ALL) or baseline == ALL
                                          for name in dof.stimulus.values])
        out = out.assign_coords({
            name: (out.dims, (out.variable + xr.Variable(num.dims, f).where(~shared))
                   .transpose(*out.dims).data, {"units": "dB"})
            for name, f in (("ci_low", low), ("ci_high", high))})
        attrs["ci"] = {
            "level": level, "dof": spectra.attrs["ci"]["dof"],
            "method": "F interval of the ratio of two independent chi-square estimates, "
                      "(P̂/P̂_b)/(P/P_b) ~ F(ν, ν_b); NaN for the baseline and 'all', "
                      "which share its segments"}
    out.attrs = attrs
    return out


def peak_frequency(spectrum: xr.DataArray, band: tuple[float, float],
                   flatten: bool = True) -> xr.DataArray:
    """Frequency (Hz) of the strongest rhythm within ``band``, along ``frequency``.

    LFP spectra fall off like 1/fᵃ, so the raw maximum is usually the band's lowest frequency;
    ``flatten`` first removes the aperiodic part (a straight line fitted to log power vs log
    frequency over the band, as FOOOF-style analyses do) so the peak is the rhythm's.
    """
    lo, hi = checks.window(band, "band")
    sub = spectrum.sel(frequency=slice(lo, hi))
    if sub.sizes["frequency"] < (3 if flatten else 1):
        f = spectrum.frequency.values
        raise InvalidSelectionError(
            f"band={band!r} holds {sub.sizes['frequency']} frequencies of this spectrum "
            f"({f[0]:g} to {f[-1]:g} Hz, every {f[1] - f[0]:g} Hz); widen it.")
    if flatten:
        logf = np.log10(sub.frequency)
        logp = np.log10(sub)
        x = logf - logf.mean()
        slope = ((x * (logp - logp.mean("frequency"))).sum("frequency") / (x * x).sum())
        resid = logp - logp.mean("frequency") - slope * x
        return sub.frequency[resid.argmax("frequency").compute()]
    return sub.frequency[sub.argmax("frequency").compute()]
