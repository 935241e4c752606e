"""LFP power spectra: per channel, per stimulus, per brain structure; chunk-wise on Dask.

One pass over a probe's LFP (one task per storage-chunk row) accumulates periodogram sums for every
stimulus type at once, each segment transformed once (``kernels.segment_psd``); blocks are reduced
as a tree of neighbours, which also adds the segments straddling two blocks, so no worker ever
holds more than one block and the blocking does not change the result. ``"all"`` is the whole
recording (or ``time_range``).
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import session_tables as T
from ..kernels import segment_psd as K

ALL = "all"
#: Taper of every segment: welch's default, so "all" equals ``scipy.signal.welch`` as called
WINDOW = "hann"


def stimulus_intervals(session, stimuli: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{stimulus_name: (k, 2) start/stop}`` from the session's presentations."""
    sp = session.stimulus_presentations
    names = stimuli if stimuli is not None else list(dict.fromkeys(sp["stimulus_name"]))
    out = {}
    for name in names:
        rows = sp[sp["stimulus_name"] == name]
        out[name] = rows[["start_time", "stop_time"]].to_numpy(np.float64)
    return out


def _covered_s(intervals: np.ndarray, times: np.ndarray) -> float:
    """Seconds of the recording ``times`` that the ``(k, 2)`` intervals cover."""
    iv = np.clip(np.asarray(intervals, dtype=np.float64).reshape(-1, 2), times[0], times[-1])
    return float(np.clip(iv[:, 1] - iv[:, 0], 0, None).sum())


def _block_sums(block, start, seg):
    """One task per LFP block (the task prefix ``block_sums`` is what reliability tests watch)."""
    return K.block_partial(block, start, seg)


def _tree_sum(parts: list, seg):
    """Balanced tree that only ever joins neighbours, as :func:`K.combine` requires."""
    while len(parts) > 1:
        parts = [dask.delayed(K.combine)(parts[i], parts[i + 1], seg) if i + 1 < len(parts)
                 else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def _to_psd(total, fs, nperseg, window):
    freqs, psd = K.finalize(total.sums, total.counts, fs, nperseg, window)
    return psd, total.counts


def lfp_spectra(session, probe_id: int, stimuli: list[str] | None = None, *,
                seconds_per_segment: float = 1.0, overlap: float = 0.5,
                include_all: bool = True, time_range=None) -> xr.DataArray:
    """Welch PSD (V²/Hz) per stimulus and channel: DataArray ``(stimulus, frequency, channel)``.

    Lazy: one task per LFP block plus a tree reduction, and one FFT per segment whatever the
    number of stimuli. Segments are ``seconds_per_segment`` long (Hann window, ``overlap``
    fraction) on one grid over the whole selection, so ``"all"`` equals ``scipy.signal.welch``
    of the selected samples (in their float32 precision) whatever the blocks; a stimulus
    counts the grid segments lying inside its presentations, back-to-back presentations
    merged. ``n_segments`` (per stimulus) says how much data each spectrum rests on.

    The session's invalid intervals for this probe (tagged ``all_probes`` or with its name, those
    AllenSDK's ``get_lfp`` masks) are left out: no segment overlaps one, and
    ``invalid_s_skipped`` (per stimulus) says how many seconds of its intervals that removed.
    """
    lfp = session.get_lfp(probe_id, mask_invalid_intervals=False, time_range=time_range)
    fs = float(lfp.attrs["sampling_rate"])
    nperseg = int(round(seconds_per_segment * fs))
    step = max(1, int(round(nperseg * (1 - overlap))))
    intervals = stimulus_intervals(session, stimuli)
    times = lfp.time.values
    if include_all:
        intervals = {ALL: np.array([[times[0], times[-1] + 1.0 / fs]]), **intervals}
    bad = T.probe_invalid_times(session.invalid_times,
                                session.probes.loc[int(probe_id), "description"])
    valid = {k: T.subtract_intervals(v, bad) for k, v in intervals.items()}
    skipped = [_covered_s(intervals[k], times) - _covered_s(valid[k], times) for k in intervals]
    intervals = valid
    labels = list(intervals)
    seg = K.labelled_segmenting(times, intervals, nperseg, step, WINDOW)
    blocks = lfp.data.to_delayed().ravel()
    starts = np.cumsum((0,) + lfp.data.chunks[0][:-1])
    parts = [dask.delayed(_block_sums)(b, int(i0), seg)
             for b, i0 in zip(blocks, starts, strict=True)]
    result = dask.delayed(_to_psd, nout=2)(_tree_sum(parts, seg), fs, nperseg, WINDOW)
    n_freq, n_ch = nperseg // 2 + 1, lfp.sizes["channel"]
    psd = da.from_delayed(result[0], shape=(len(labels), n_freq, n_ch), dtype=np.float64)
    counts = da.from_delayed(result[1], shape=(len(labels),), dtype=np.int64)
    # Nominal frequencies (k / segment length): probes and sessions differ in their exact rate
    # by < 0.01 %, and a shared grid lets spectra from all of them line up.
    freqs = np.arange(n_freq) / seconds_per_segment
    coords = {k: v for k, v in lfp.coords.items() if v.dims == ("channel",)}
    coords.update({"stimulus": labels, "frequency": ("frequency", freqs, {"units": "Hz"}),
                   "n_segments": ("stimulus", counts),
                   "invalid_s_skipped": ("stimulus", np.asarray(skipped), {"units": "s"})})
    return xr.DataArray(psd, dims=("stimulus", "frequency", "channel"), coords=coords,
                        name="psd", attrs={"units": "V²/Hz", "probe_id": int(probe_id),
                                           "session_id": session.ecephys_session_id,
                                           "nperseg": nperseg, "step": step,
                                           "frequency_resolution_hz": fs / nperseg})


def by_structure(psd: xr.DataArray) -> xr.DataArray:
    """Mean over the channels of each brain structure (channels outside the brain dropped)."""
    inside = psd.where(psd.structure_acronym != "", drop=True) \
        if not isinstance(psd.data, da.Array) else psd.isel(
            channel=np.flatnonzero(psd.structure_acronym.values != ""))
    return inside.groupby("structure_acronym").mean("channel").rename(
        structure_acronym="structure")


def session_structure_spectra(session, stimuli: list[str] | None = None,
                              **kwargs) -> xr.DataArray:
    """Spectra of every probe with LFP, averaged per structure: ``(stimulus, frequency,
    structure)``. Probes are computed in parallel; a structure seen by several probes is the
    mean of their spectra."""
    probes = session.probes.index[session.probes["has_lfp_data"].astype(bool)]
    per_probe = [by_structure(lfp_spectra(session, int(p), stimuli, **kwargs))
                 .drop_vars("n_segments") for p in probes]
    stacked = xr.concat(per_probe, dim="probe", coords="minimal", compat="override",
                        join="outer")
    return stacked.mean("probe", skipna=True)


def relative_to(spectra: xr.DataArray, baseline: str = "spontaneous") -> xr.DataArray:
    """Power change relative to a baseline stimulus, in dB."""
    return 10 * np.log10(spectra / spectra.sel(stimulus=baseline))


def peak_frequency(spectrum: xr.DataArray, band: tuple[float, float],
                   flatten: bool = True) -> xr.DataArray:
    """Frequency (Hz) of the strongest rhythm within ``band``, along ``frequency``.

    LFP spectra fall off like 1/fᵃ, so the raw maximum is usually the band's lowest frequency;
    ``flatten`` first removes the aperiodic part (a straight line fitted to log power vs log
    frequency over the band, as FOOOF-style analyses do) so the peak is the rhythm's.
    """
    sub = spectrum.sel(frequency=slice(*band))
    if flatten:
        logf = np.log10(sub.frequency)
        logp = np.log10(sub)
        x = logf - logf.mean()
        slope = ((x * (logp - logp.mean("frequency"))).sum("frequency") / (x * x).sum())
        resid = logp - logp.mean("frequency") - slope * x
        return sub.frequency[resid.argmax("frequency")]
    return sub.frequency[sub.argmax("frequency")]
