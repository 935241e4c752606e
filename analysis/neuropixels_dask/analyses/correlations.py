"""Cross-area correlations of binned spike counts (and of band-limited LFP power) per stimulus.

Noise correlations: counts are binned inside each presentation, the mean over presentations of the
same condition (same stimulus parameters, same bin offset) is subtracted, and Pearson correlations
between units are averaged per pair of areas. A stimulus that drives areas with a shared gain shows
up as higher between-area correlation than spontaneous activity.
"""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import xarray as xr

from .. import session_tables as T
from ..kernels import correlation_blocks as KC
from ..tasks.spikes import per_group, unit_groups


def _interval_bins(pres: pd.DataFrame, bin_size: float) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """Full bins inside each presentation: starts, ends and a group key (condition, offset)."""
    starts, ends, keys = [], [], []
    for cond, a, b in zip(pres["stimulus_condition_id"].to_numpy(),
                          pres["start_time"].to_numpy(float), pres["stop_time"].to_numpy(float),
                          strict=True):
        n = int(np.floor((b - a) / bin_size + 1e-9))
        s = a + bin_size * np.arange(n)
        starts.append(s)
        ends.append(s + bin_size)
        # long single intervals (spontaneous) have one "condition" per bin offset otherwise
        keys.append(np.full(n, int(cond)) * 100_000 + (np.arange(n) if n < 1000 else 0))
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(keys)


def spike_count_correlations(session, stimuli: list[str] | None = None,
                             bin_size: float = 0.05, min_rate: float = 0.5) -> xr.DataArray:
    """Mean noise correlation between areas, per stimulus: ``(stimulus, area_a, area_b)``.

    Lazy (one Delayed per stimulus reading the units' spikes in groups). Units firing below
    ``min_rate`` Hz are left out; the diagonal is the mean correlation between distinct units of
    the same area. Bins overlapping an invalid interval of the spikes (tagged ``all_probes`` or
    with a probe's name) are left out; ``bins_skipped`` (per stimulus) counts them.
    """
    stimuli = stimuli or ["spontaneous", "drifting_gratings"]
    units = session.units[session.units["firing_rate"] >= min_rate]
    units = units[units["structure_acronym"].notna()]
    areas = units["structure_acronym"].to_numpy(object)
    names = sorted(set(areas))
    uids = units.index.to_numpy()
    src = session.reader.spike_source()
    groups = unit_groups(uids)
    per_stim, skipped = [], []
    bad = T.spike_invalid_times(session.invalid_times, session.probes["description"])
    for stim in stimuli:
        pres = session.get_stimulus_table(stim)
        starts, ends, keys = _interval_bins(pres, bin_size)
        hit = T.overlapping(starts, ends, bad)
        starts, ends, keys = starts[~hit], ends[~hit], keys[~hit]
        skipped.append(int(hit.sum()))
        parts = per_group(KC.count_in_bins, src, groups, session.spike_ranges, starts, ends)
        counts = dask.delayed(np.concatenate)(parts, axis=0)
        per_stim.append(dask.delayed(KC.area_noise_correlation)(counts, keys, areas, names))
    stacked = dask.delayed(np.stack)(per_stim)
    import dask.array as da

    arr = da.from_delayed(stacked, shape=(len(stimuli), len(names), len(names)),
                          dtype=np.float64)
    return xr.DataArray(arr, dims=("stimulus", "area_a", "area_b"),
                        coords={"stimulus": stimuli, "area_a": names, "area_b": names,
                                "bins_skipped": ("stimulus", np.asarray(skipped))},
                        name="noise_correlation",
                        attrs={"bin_size_s": bin_size, "session_id": session.ecephys_session_id})
