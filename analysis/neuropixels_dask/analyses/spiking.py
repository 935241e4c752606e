"""Spike-train analyses: PSTHs per unit and per structure, tuning curves (rate per condition).

Built on ``presentationwise_spike_counts`` (lazy, one task per group of units), so they run on
the cluster and combine across sessions with ``map_sessions``. The PSTH itself is the kernel
``kernels.spikes.psth``, mapped over the same groups of units.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from .. import session_tables as T
from ..allen import NULL
from ..kernels import spikes as K


def psth(session, stimulus_name: str = "flashes", bin_edges=None,
         unit_ids=None) -> xr.DataArray:
    """Mean firing rate (Hz) around presentation onsets: ``(unit_id, time_relative_to_stimulus
    _onset)``, with the unit's ``structure_acronym`` as a coordinate. Lazy.

    Presentations whose window overlaps an invalid interval of the spikes (tagged
    ``all_probes`` or with a probe's name) are left out; ``attrs["presentations_skipped"]``
    counts them."""
    if bin_edges is None:
        bin_edges = np.arange(-0.05, 0.25 + 1e-9, 0.005)
    bin_edges = np.asarray(bin_edges, dtype=np.float64)
    pres, skipped = _valid_presentations(session, session.get_stimulus_table(stimulus_name),
                                         bin_edges[0], bin_edges[-1])
    units = session.units if unit_ids is None else session.units.loc[unit_ids]
    counts = session.presentationwise_spike_counts(bin_edges, pres.index, units.index)
    time = "time_relative_to_stimulus_onset"
    # all presentations in one chunk (they are: chunks are groups of units); a no-op then
    data = counts.data.rechunk({0: -1})
    rate = xr.DataArray(da.map_blocks(K.psth, data, bin_edges, drop_axis=0, dtype=np.float64),
                        dims=(time, "unit_id"),
                        coords={time: counts[time].values, "unit_id": counts.unit_id.values})
    rate = rate.transpose("unit_id", time)
    rate = rate.assign_coords(structure_acronym=("unit_id",
                                                 units["structure_acronym"].fillna("").to_numpy(
                                                     object)))
    rate.name = "firing_rate"
    rate.attrs.update(units="Hz", stimulus_name=stimulus_name,
                      session_id=session.ecephys_session_id, presentations_skipped=skipped)
    return rate


def _valid_presentations(session, pres, before: float, after: float):
    """``pres`` without the presentations whose ``[onset + before, onset + after]`` overlaps
    an invalid interval of the spikes, and how many were left out."""
    bad = T.spike_invalid_times(session.invalid_times, session.probes["description"])
    onset = pres["start_time"].to_numpy(np.float64)
    hit = T.overlapping(onset + before, onset + after, bad)
    return pres[~hit], int(hit.sum())


def psth_by_structure(rate: xr.DataArray) -> xr.DataArray:
    """Mean PSTH of the units of each structure: ``(structure, time)``."""
    keep = rate.structure_acronym.values != ""
    out = rate.isel(unit_id=np.flatnonzero(keep)).groupby("structure_acronym").mean("unit_id")
    return out.rename(structure_acronym="structure")


def tuning_curves(session, stimulus_name: str = "drifting_gratings",
                  parameter: str = "orientation", window: tuple[float, float] | None = None,
                  unit_ids=None) -> xr.DataArray:
    """Mean firing rate (Hz) per value of ``parameter`` during each presentation:
    ``(unit_id, <parameter>)``. The window defaults to the presentation duration; presentations
    overlapping an invalid interval of the spikes are left out (``presentations_skipped``)."""
    pres = session.get_stimulus_table(stimulus_name)
    pres = pres[pres[parameter].astype(str) != NULL]
    if window is None:
        window = (0.0, float(pres["duration"].astype(float).min()))
    pres, skipped = _valid_presentations(session, pres, window[0], window[1])
    units = session.units if unit_ids is None else session.units.loc[unit_ids]
    counts = session.presentationwise_spike_counts(np.asarray(window, dtype=float), pres.index,
                                                   units.index)
    rate = counts.isel(time_relative_to_stimulus_onset=0).astype(np.float64) / (
        window[1] - window[0])
    rate = rate.assign_coords({parameter: ("stimulus_presentation_id",
                                           pres[parameter].astype(float).to_numpy())})
    curves = rate.groupby(parameter).mean("stimulus_presentation_id")
    curves = curves.transpose("unit_id", parameter).assign_coords(
        structure_acronym=("unit_id", units["structure_acronym"].fillna("").to_numpy(object)))
    curves.name = "firing_rate"
    curves.attrs.update(units="Hz", stimulus_name=stimulus_name, presentations_skipped=skipped)
    return curves


def preferred(curves: xr.DataArray, parameter: str = "orientation") -> xr.DataArray:
    """The parameter value of each unit's largest response."""
    return curves[parameter][curves.argmax(parameter)].drop_vars(parameter, errors="ignore")


def selectivity_index(curves: xr.DataArray, parameter: str = "orientation") -> xr.DataArray:
    """(max - min) / (max + min) of each unit's tuning curve: 0 untuned, 1 perfectly selective."""
    hi, lo = curves.max(parameter), curves.min(parameter)
    return (hi - lo) / (hi + lo)
