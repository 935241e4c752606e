"""LFP power spectra: per channel, per stimulus, per brain structure; chunk-wise on Dask.

One pass over a probe's LFP (one task per storage-chunk row) accumulates periodogram sums for every
stimulus type at once (``kernels.segment_psd``); blocks are reduced as a tree, so no worker ever
holds more than one block. ``"all"`` is the whole recording.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..kernels import segment_psd as K

ALL = "all"


def stimulus_intervals(session, stimuli: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{stimulus_name: (k, 2) start/stop}`` from the session's presentations."""
    sp = session.stimulus_presentations
    names = stimuli if stimuli is not None else list(dict.fromkeys(sp["stimulus_name"]))
    out = {}
    for name in names:
        rows = sp[sp["stimulus_name"] == name]
        out[name] = rows[["start_time", "stop_time"]].to_numpy(np.float64)
    return out


def _block_sums(block, t0, fs, intervals, nperseg, step):
    sums, counts = K.labelled_sums(block, t0, fs, intervals, nperseg, step)
    return sums, counts


def _add(a, b):
    return a[0] + b[0], a[1] + b[1]


def _tree_sum(parts: list):
    while len(parts) > 1:
        parts = [dask.delayed(_add)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _to_psd(total, fs, nperseg):
    sums, counts = total
    freqs, psd = K.finalize(sums, counts, fs, nperseg)
    return psd, counts


def lfp_spectra(session, probe_id: int, stimuli: list[str] | None = None, *,
                seconds_per_segment: float = 1.0, overlap: float = 0.5,
                include_all: bool = True, time_range=None) -> xr.DataArray:
    """Welch PSD (V²/Hz) per stimulus and channel: DataArray ``(stimulus, frequency, channel)``.

    Lazy: one task per LFP block plus a tree reduction. ``n_segments`` (per stimulus) says how
    much data each spectrum rests on. Segments are ``seconds_per_segment`` long (Hann window,
    ``overlap`` fraction) and lie entirely inside one presentation (or the whole recording for
    ``"all"``) and inside one block.
    """
    lfp = session.get_lfp(probe_id, time_range=time_range)
    fs = float(lfp.attrs["sampling_rate"])
    nperseg = int(round(seconds_per_segment * fs))
    step = max(1, int(round(nperseg * (1 - overlap))))
    intervals = stimulus_intervals(session, stimuli)
    if include_all:
        t = lfp.time.values
        intervals = {ALL: np.array([[t[0], t[-1] + 1.0 / fs]]), **intervals}
    labels = list(intervals)
    blocks = lfp.data.to_delayed().ravel()
    starts = np.cumsum((0,) + lfp.data.chunks[0][:-1])
    t_block = lfp.time.values[starts]
    parts = [dask.delayed(_block_sums)(b, float(t0), fs, intervals, nperseg, step)
             for b, t0 in zip(blocks, t_block, strict=True)]
    result = dask.delayed(_to_psd, nout=2)(_tree_sum(parts), fs, nperseg)
    n_freq, n_ch = nperseg // 2 + 1, lfp.sizes["channel"]
    psd = da.from_delayed(result[0], shape=(len(labels), n_freq, n_ch), dtype=np.float64)
    counts = da.from_delayed(result[1], shape=(len(labels),), dtype=np.int64)
    # Nominal frequencies (k / segment length): probes and sessions differ in their exact rate
    # by < 0.01 %, and a shared grid lets spectra from all of them line up.
    freqs = np.arange(n_freq) / seconds_per_segment
    coords = {k: v for k, v in lfp.coords.items() if v.dims == ("channel",)}
    coords.update({"stimulus": labels, "frequency": ("frequency", freqs, {"units": "Hz"}),
                   "n_segments": ("stimulus", counts)})
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
