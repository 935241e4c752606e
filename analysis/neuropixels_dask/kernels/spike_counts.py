"""AllenSDK 2.16 ``EcephysSession`` spike arithmetic on plain arrays (no I/O, no Dask).

Numerically identical to AllenSDK: bins are counted with ``searchsorted`` *left* on bin starts and
*right* on bin ends (a spike exactly on an inner edge counts in both neighbouring bins, as there);
presentation spike times keep spikes in ``[start, stop)``; condition ids are numbered in order of
first appearance of each distinct parameter row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.stats


def build_time_window_domain(bin_edges: np.ndarray, offsets: np.ndarray,
                             callback: Callable[[np.ndarray], np.ndarray] | None = None
                             ) -> np.ndarray:
    """``(n_offsets, n_edges)`` absolute bin edges: ``bin_edges`` shifted by each offset."""
    domain = np.tile(np.asarray(bin_edges, np.float64)[None, :], (len(offsets), 1))
    domain += np.asarray(offsets, np.float64)[:, None]
    return domain if callback is None else callback(domain)


def spike_histogram_domain(spike_times: Sequence[np.ndarray], domain: np.ndarray,
                           binarize: bool = False, dtype=None) -> np.ndarray:
    """Counts ``(n_presentations, n_bins, n_units)`` of each sorted train in each bin of
    ``domain`` (from ``build_time_window_domain``)."""
    domain = np.asarray(domain, np.float64)
    out_dtype = (np.uint8 if binarize else np.uint16) if dtype is None else dtype
    out = np.zeros((domain.shape[0], domain.shape[1] - 1, len(spike_times)), dtype=out_dtype)
    starts = domain[:, :-1].ravel()
    ends = domain[:, 1:].ravel()
    for i, train in enumerate(spike_times):
        data = np.asarray(train)
        counts = np.searchsorted(data, ends, side="right") - np.searchsorted(data, starts)
        out[:, :, i].flat = counts > 0 if binarize else counts
    return out


def assign_condition_ids(params: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Number distinct parameter rows in order of first appearance (AllenSDK's rule).

    Returns the id of each row and the condition table (index ``stimulus_condition_id``).
    """
    if params.shape[1] == 0:
        return np.zeros(len(params), dtype=np.int64), pd.DataFrame(
            index=pd.Index([0], name="stimulus_condition_id"))
    seen: dict[tuple, int] = {}
    ids = np.empty(len(params), dtype=np.int64)
    for k, row in enumerate(params.itertuples(index=False, name=None)):
        ids[k] = seen.setdefault(row, len(seen))
    table = pd.DataFrame(list(seen), columns=params.columns,
                         index=pd.Index(list(seen.values()), name="stimulus_condition_id"))
    return ids, table


def presentationwise_spike_times(trains: Sequence[np.ndarray], unit_ids: np.ndarray,
                                 presentation_ids: np.ndarray, starts: np.ndarray,
                                 stops: np.ndarray) -> pd.DataFrame:
    """Every spike that falls inside a presentation ``[start, stop)``.

    Index ``spike_time`` (sorted); columns ``stimulus_presentation_id``, ``unit_id``,
    ``time_since_stimulus_presentation_onset`` — AllenSDK's table. Presentations must not
    overlap (they do not in the Allen stimulus tables).
    """
    order = np.argsort(starts, kind="stable")
    starts, stops, pids = (np.asarray(a)[order] for a in (starts, stops, presentation_ids))
    bounds = np.empty(2 * len(starts))
    bounds[0::2], bounds[1::2] = starts, stops
    t_parts, p_parts, u_parts = [], [], []
    for uid, train in zip(unit_ids, trains, strict=True):
        data = np.asarray(train)
        idx = np.searchsorted(bounds, data, side="right") - 1
        inside = (idx >= 0) & (idx % 2 == 0)
        k = idx[inside] // 2
        t_parts.append(data[inside])
        p_parts.append(pids[k])
        u_parts.append(np.full(k.size, uid, dtype=np.int64))
    t = np.concatenate(t_parts) if t_parts else np.empty(0)
    p = np.concatenate(p_parts) if p_parts else np.empty(0, np.int64)
    u = np.concatenate(u_parts) if u_parts else np.empty(0, np.int64)
    onset = dict(zip(pids.tolist(), starts.tolist(), strict=True))
    since = t - np.array([onset[x] for x in p.tolist()], dtype=np.float64)
    df = pd.DataFrame({"stimulus_presentation_id": pd.array(p, dtype="Int64"),
                       "unit_id": pd.array(u, dtype="Int64"),
                       "time_since_stimulus_presentation_onset": since},
                      index=pd.Index(t, name="spike_time"))
    return df.sort_index(kind="stable")


def conditionwise_statistics(spikes: pd.DataFrame, presentations: pd.DataFrame,
                             unit_ids: np.ndarray, use_rates: bool = False) -> pd.DataFrame:
    """Per (unit, condition): spike_count, stimulus_presentation_count, spike_mean, spike_std
    (ddof 1), spike_sem — from ``presentationwise_spike_times`` output; presentations without
    spikes count as zero, as in AllenSDK."""
    full = pd.MultiIndex.from_product([presentations.index.to_numpy(), np.asarray(unit_ids)],
                                      names=["stimulus_presentation_id", "unit_id"])
    counts = spikes.groupby(["stimulus_presentation_id", "unit_id"]).size()
    counts.index = counts.index.set_levels([lvl.astype(np.int64) for lvl in counts.index.levels])
    counts = counts.reindex(full, fill_value=0).rename("spike_count").reset_index()
    merged = counts.merge(presentations[["stimulus_condition_id", "duration"]],
                          left_on="stimulus_presentation_id", right_index=True)
    value = "spike_count"
    if use_rates:
        merged["spike_rate"] = merged["spike_count"] / merged["duration"].astype(float)
        value = "spike_rate"
    g = merged.groupby(["unit_id", "stimulus_condition_id"])[value]
    out = pd.DataFrame({
        "stimulus_presentation_count": g.size(),
        "spike_mean": g.mean(),
        "spike_std": g.std(ddof=1),
        "spike_sem": g.agg(lambda v: scipy.stats.sem(v.to_numpy())),
    })
    if not use_rates:
        out.insert(0, "spike_count", g.sum())
    return out
