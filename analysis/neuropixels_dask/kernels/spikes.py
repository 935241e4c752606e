"""Spike-train kernels with AllenSDK 2.16 ``EcephysSession`` semantics, on plain arrays.

Everything here is pure numpy/pandas: no I/O, no Dask, no xarray. The Dask layer reads the spike
trains of a group of units in one task and calls these functions on them, so they must be cheap per
call, deterministic, and equal to what AllenSDK computes on the same numbers.

The boundary rules are AllenSDK's, which differ between its functions; they are kept on purpose so
numbers match what Allen users already have:

* ``presentationwise_spike_counts`` / :func:`spike_histogram_domain` count a spike in every bin
  ``[start, end]`` that contains it, **closed on both sides** (``searchsorted`` left on bin starts,
  right on bin ends). A spike lying exactly on an interior edge is counted in both bins.
* ``presentationwise_spike_times`` / :func:`presentationwise_spike_times` assign a spike to the
  presentation whose ``(start_time, stop_time]`` contains it (half-open on the left). A spike at the
  shared boundary of two back-to-back presentations belongs to the earlier one.

Bins for noise correlations (half-open, only inside presentations) are counted by
:func:`.correlation_blocks.count_in_bins`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from ..allen import NULL

#: presentation columns that are not stimulus parameters (AllenSDK's ``NON_STIMULUS_PARAMETERS``)
NON_STIMULUS_PARAMETERS = ("start_time", "stop_time", "duration", "stimulus_block",
                           "stimulus_condition_id")

SpikeTrains = Sequence[np.ndarray] | Mapping[Any, np.ndarray]


def _as_trains(spike_times: SpikeTrains, unit_ids: Sequence | np.ndarray | None
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Spike trains in ``unit_ids`` order (a mapping is looked up; a sequence is taken as is)."""
    if isinstance(spike_times, Mapping):
        ids = np.asarray(list(spike_times.keys()) if unit_ids is None else unit_ids)
        trains = [np.asarray(spike_times[u]) for u in ids.tolist()]
    else:
        trains = [np.asarray(t) for t in spike_times]
        ids = np.arange(len(trains)) if unit_ids is None else np.asarray(unit_ids)
        if len(ids) != len(trains):
            raise ValueError(f"{len(trains)} spike trains but {len(ids)} unit ids")
    return trains, ids


# ---- presentation-aligned counts -----------------------------------------------------------------
def build_time_window_domain(bin_edges: np.ndarray, offsets: np.ndarray,
                             callback: Callable[[np.ndarray], np.ndarray] | None = None
                             ) -> np.ndarray:
    """Absolute bin edges per presentation: ``bin_edges + offset`` for each offset (row).

    Same arithmetic as AllenSDK (edges tiled, then offsets added in place, so the dtype of the
    domain is that of ``bin_edges``), because the counts of spikes lying on an edge depend on the
    last bit of each edge. Integer edges are promoted to float64 instead of failing.

    Parameters
    ----------
    bin_edges : ndarray (n_edges,)
        Edges relative to onset, seconds.
    offsets : ndarray (n_presentations,)
        Onset times, seconds.
    callback : callable, optional
        Applied to the domain before it is returned (AllenSDK's ``time_domain_callback``).

    Returns
    -------
    ndarray (n_presentations, n_edges)
    """
    bin_edges = np.asarray(bin_edges)
    if not np.issubdtype(bin_edges.dtype, np.floating):
        bin_edges = bin_edges.astype(np.float64)
    offsets = np.asarray(offsets)
    domain = np.tile(bin_edges[None, :], (len(offsets), 1))
    domain += offsets[:, None]
    return domain if callback is None else callback(domain)


def _histogram_dtype(binarize: bool, dtype) -> np.dtype:
    return np.dtype((np.uint8 if binarize else np.uint16) if dtype is None else dtype)


def spike_histogram_domain(spike_times: SpikeTrains, domain: np.ndarray, binarize: bool = False,
                           dtype=None, unit_ids=None) -> np.ndarray:
    """Spike counts per (presentation, bin, unit) over an explicit time domain.

    AllenSDK's ``build_spike_histogram``: each bin ``[domain[p, b], domain[p, b + 1]]`` is closed on
    both sides. Counts are cast to ``dtype`` the way AllenSDK stores them (``uint16`` by default,
    ``uint8`` 0/1 when ``binarize``; a count above the dtype's range wraps, as in AllenSDK), so the
    arrays are identical element for element.

    Parameters
    ----------
    spike_times : sequence of ndarray, or mapping unit id -> ndarray
        One **sorted** spike train per unit (seconds), as stored in the NWB file.
    domain : ndarray (n_presentations, n_edges)
        From :func:`build_time_window_domain`.
    binarize : bool
        Store ``count > 0`` instead of the count.
    dtype : numpy dtype, optional
        Output dtype; default ``uint16`` (``uint8`` if ``binarize``).
    unit_ids : sequence, optional
        Order of units when ``spike_times`` is a mapping.

    Returns
    -------
    ndarray (n_presentations, n_edges - 1, n_units)
    """
    trains, _ = _as_trains(spike_times, unit_ids)
    domain = np.asarray(domain)
    out_dtype = _histogram_dtype(binarize, dtype)
    n_p, n_e = domain.shape
    out = np.zeros((n_p, max(n_e - 1, 0), len(trains)), dtype=out_dtype)
    if n_p == 0 or n_e < 2:
        return out
    starts = domain[:, :-1].ravel()
    ends = domain[:, 1:].ravel()
    for i, data in enumerate(trains):
        counts = np.searchsorted(data, ends, side="right") - np.searchsorted(data, starts)
        counts = counts > 0 if binarize else counts
        out[:, :, i] = counts.reshape(n_p, n_e - 1).astype(out_dtype, copy=False)
    return out


def spike_histogram(spike_times: SpikeTrains, starts: np.ndarray, bin_edges: np.ndarray,
                    binarize: bool = False, dtype=None, unit_ids=None,
                    callback: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``presentationwise_spike_counts`` on arrays: counts (n_presentations, n_bins, n_units).

    Parameters
    ----------
    spike_times : sequence of ndarray, or mapping unit id -> ndarray
        Sorted spike trains (seconds).
    starts : ndarray (n_presentations,)
        Presentation onsets (``start_time``), seconds.
    bin_edges : ndarray (n_bins + 1,)
        Edges relative to onset, seconds. Bins are closed on both sides (AllenSDK).
    binarize, dtype, unit_ids, callback
        As in :func:`spike_histogram_domain` and :func:`build_time_window_domain`.
    """
    domain = build_time_window_domain(bin_edges, starts, callback=callback)
    return spike_histogram_domain(spike_times, domain, binarize=binarize, dtype=dtype,
                                  unit_ids=unit_ids)


# ---- presentation assignment (presentationwise_spike_times) --------------------------------------
def _interleaved(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    times = np.zeros(2 * len(starts))
    times[::2] = starts
    times[1::2] = stops
    return times


_SPIKE_TIME_COLUMNS = ("stimulus_presentation_id", "unit_id",
                       "time_since_stimulus_presentation_onset")


def _empty_spike_table() -> pd.DataFrame:
    return pd.DataFrame({"stimulus_presentation_id": np.zeros(0, dtype=np.int64),
                         "unit_id": np.zeros(0, dtype=np.int64),
                         "time_since_stimulus_presentation_onset": np.zeros(0)},
                        index=pd.Index(np.zeros(0), name="spike_time"))


def presentationwise_spike_times(spike_times: SpikeTrains, unit_ids, presentation_ids,
                                 starts: np.ndarray, stops: np.ndarray) -> pd.DataFrame:
    """Every spike that falls in a presentation, one row per spike (AllenSDK semantics).

    A spike is assigned to the presentation whose ``(start, stop]`` contains it; spikes outside all
    presentations are dropped. The table is built in the same order AllenSDK builds it (units in
    the given order; within a unit, spikes ordered by ``np.argsort`` of their presentation id) and
    then sorted by ``spike_time`` with pandas' default (unstable) sort, so that even the order of
    simultaneous spikes of different units equals AllenSDK's.

    Presentations must be in time order and not overlap; otherwise the assignment, like AllenSDK's,
    is meaningless. With no spikes, the result is an empty table with the columns below (AllenSDK
    returns a table with different, misspelled columns in that case).

    Parameters
    ----------
    spike_times : sequence of ndarray, or mapping unit id -> ndarray
        Spike trains (seconds), one per unit in ``unit_ids`` order (or looked up by id).
    unit_ids : array-like or None
        Unit ids (None: the mapping's keys, or 0..n-1).
    presentation_ids, starts, stops : array-like (n_presentations,)
        The presentations, in the order of the stimulus table.

    Returns
    -------
    DataFrame
        Index ``spike_time`` (float64); columns ``stimulus_presentation_id`` (int64), ``unit_id``
        (int64), ``time_since_stimulus_presentation_onset`` (float64, spike time minus start).
    """
    trains, ids = _as_trains(spike_times, unit_ids)
    presentation_ids = np.asarray(presentation_ids)
    starts = np.asarray(starts, dtype=np.float64)
    stops = np.asarray(stops, dtype=np.float64)
    if len(presentation_ids) == 0:
        return _empty_spike_table()
    times = _interleaved(starts, stops)
    parts_t, parts_p, parts_u, parts_s = [], [], [], []
    for uid, data in zip(ids.tolist(), trains, strict=True):
        data = np.asarray(data)
        if data.size == 0:
            continue
        pos = np.searchsorted(times, data) - 1
        valid = pos % 2 == 0
        row = np.floor(pos / 2).astype(int)  # -1 (before the first) indexes the last, as upstream
        pres = presentation_ids[row]
        order = np.argsort(pres)
        keep = valid[order]
        sel = order[keep]
        if sel.size == 0:
            continue
        parts_t.append(data[sel])
        parts_p.append(pres[sel])
        parts_s.append(starts[row[sel]])
        parts_u.append(np.full(sel.size, uid))
    if not parts_t:
        return _empty_spike_table()
    spike_t = np.concatenate(parts_t)
    table = pd.DataFrame({
        "stimulus_presentation_id": np.concatenate(parts_p).astype(np.int64),
        "unit_id": np.concatenate(parts_u).astype(np.int64),
        "time_since_stimulus_presentation_onset": spike_t - np.concatenate(parts_s),
    }, index=pd.Index(spike_t, name="spike_time"))
    return table.sort_values("spike_time", axis=0)


# ---- stimulus conditions ---------------------------------------------------------------------------
def assign_condition_ids(presentations: pd.DataFrame,
                         parameter_columns: Sequence[str] | None = None
                         ) -> tuple[np.ndarray, pd.DataFrame]:
    """Number each distinct combination of stimulus parameters, in order of first appearance.

    AllenSDK's rule: every presentation whose parameter values (``stimulus_name`` included) are all
    equal gets the same ``stimulus_condition_id``; ids count up from 0 in the order conditions first
    appear in the table. Values are compared as Python objects (``45.0 == 45``; ``"45" != 45``), as
    upstream. Missing values must be AllenSDK's ``"null"``; NaN/None are replaced by ``"null"`` here
    so that they compare equal (NaN never equals itself).

    Parameters
    ----------
    presentations : DataFrame
        The stimulus table, in presentation order.
    parameter_columns : sequence of str, optional
        The parameter columns; default: every column but ``start_time, stop_time, duration,
        stimulus_block, stimulus_condition_id``.

    Returns
    -------
    condition_ids : ndarray (n_presentations,), int64
    conditions : DataFrame
        One row per condition (index ``stimulus_condition_id``), the parameter columns.
    """
    if parameter_columns is None:
        params = presentations.drop(columns=list(NON_STIMULUS_PARAMETERS), errors="ignore")
    else:
        params = presentations.loc[:, list(parameter_columns)]
    if params.isna().to_numpy().any():
        params = params.astype(object).where(params.notna(), NULL)
    seen: dict[tuple, int] = {}
    ids = np.empty(len(params), dtype=np.int64)
    for i, row in enumerate(params.itertuples(index=False, name=None)):
        ids[i] = seen.setdefault(row, len(seen))
    conditions = pd.DataFrame(list(seen.keys()), columns=params.columns,
                              index=pd.Index(np.arange(len(seen), dtype=np.int64),
                                             name="stimulus_condition_id"))
    return ids, conditions


# ---- condition-wise statistics ---------------------------------------------------------------------
def condition_statistics(counts: np.ndarray, condition_ids: np.ndarray, unit_ids,
                         durations: np.ndarray | None = None,
                         use_rates: bool = False) -> pd.DataFrame:
    """Spike statistics per (unit, condition) from a (presentation × unit) count matrix.

    The numbers are AllenSDK's ``conditionwise_spike_statistics``: per condition and unit, over the
    presentations of that condition (zero-spike presentations included), ``spike_count`` (sum),
    ``stimulus_presentation_count``, ``spike_mean`` (``np.mean``), ``spike_std`` (``np.std``,
    ddof=1) and ``spike_sem`` (``scipy.stats.sem``); with ``use_rates`` the statistics are of
    ``count / duration`` and there is no ``spike_count``. Groups of equal size are stacked and
    reduced along rows, which numpy sums exactly like the one group at a time upstream does, so the
    floats are bit-identical while avoiding a Python loop over (condition × unit) groups.

    Parameters
    ----------
    counts : ndarray (n_presentations, n_units)
        Spikes per presentation and unit (:func:`conditionwise_statistics` counts them from the
        presentation-wise spike table).
    condition_ids : ndarray (n_presentations,)
    unit_ids : array-like (n_units,)
    durations : ndarray (n_presentations,), optional
        Needed with ``use_rates`` (seconds).
    use_rates : bool

    Returns
    -------
    DataFrame indexed by (``unit_id``, ``stimulus_condition_id``), rows ordered by condition then
    unit (AllenSDK's order).
    """
    counts = np.asarray(counts)
    condition_ids = np.asarray(condition_ids)
    unit_ids = np.asarray(unit_ids)
    n_p, n_u = counts.shape
    if use_rates:
        if durations is None:
            raise ValueError("use_rates needs the presentations' durations")
        values = counts.astype(np.float64) / np.asarray(durations, dtype=np.float64)[:, None]
    else:
        values = counts.astype(np.float64)  # exact for counts < 2**53; numpy means go via float64
    conds = np.unique(condition_ids)
    if conds.dtype.kind == "f":  # masked (invalid) presentations have none: no group, as upstream
        conds = conds[~np.isnan(conds)]
    u_order = np.argsort(unit_ids, kind="stable")
    rows_by_cond = [np.flatnonzero(condition_ids == c) for c in conds]
    n_groups = len(conds) * n_u
    mean = np.empty(n_groups)
    std = np.empty(n_groups)
    sem = np.empty(n_groups)
    total = np.zeros(n_groups, dtype=np.int64)
    size = np.empty(n_groups, dtype=np.int64)
    for c, rows in enumerate(rows_by_cond):
        size[c * n_u:(c + 1) * n_u] = rows.size
    for n in np.unique([r.size for r in rows_by_cond]):
        cs = [c for c, r in enumerate(rows_by_cond) if r.size == n]
        # (groups of this size, n): one row per (condition, unit), presentation order kept
        block = np.concatenate([values[rows_by_cond[c]][:, u_order].T for c in cs], axis=0)
        where = (np.asarray(cs)[:, None] * n_u + np.arange(n_u)[None, :]).ravel()
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            mean[where] = np.mean(block, axis=1)
            std[where] = np.std(block, axis=1, ddof=1)
            sem[where] = scipy.stats.sem(block, axis=1)
        if not use_rates:
            total[where] = np.concatenate(
                [counts[rows_by_cond[c]][:, u_order].sum(axis=0, dtype=np.int64) for c in cs])
    index = pd.MultiIndex.from_arrays(
        [np.tile(unit_ids[u_order], len(conds)).astype(np.int64),
         np.repeat(conds, n_u)],  # the table's dtype: float once a presentation is masked
        names=["unit_id", "stimulus_condition_id"])
    columns: dict[str, np.ndarray] = {}
    if not use_rates:
        columns["spike_count"] = total
    columns.update(stimulus_presentation_count=size, spike_mean=mean, spike_std=std,
                   spike_sem=sem)
    return pd.DataFrame(columns, index=index)


def conditionwise_statistics(spikes: pd.DataFrame, presentations: pd.DataFrame,
                             unit_ids=None, use_rates: bool = False) -> pd.DataFrame:
    """AllenSDK's ``conditionwise_spike_statistics`` from a presentation-wise spike table.

    Parameters
    ----------
    spikes : DataFrame
        From :func:`presentationwise_spike_times` over ``presentations`` and ``unit_ids``.
    presentations : DataFrame
        Index ``stimulus_presentation_id`` (the selection, in order); columns
        ``stimulus_condition_id`` and, for ``use_rates``, ``duration``.
    unit_ids : array-like, optional
        Units to report (zero-spike units included); default: units present in ``spikes``, in order
        of appearance, as upstream.
    use_rates : bool
        Statistics of spikes per second instead of spike counts.

    Returns
    -------
    DataFrame, see :func:`condition_statistics`.
    """
    if unit_ids is None:
        unit_ids = pd.unique(spikes["unit_id"].to_numpy()) if len(spikes) else np.zeros(0, int)
    unit_ids = np.asarray(unit_ids)
    pres_ids = presentations.index.to_numpy()
    counts = np.zeros((len(pres_ids), len(unit_ids)), dtype=np.int64)
    if len(spikes) and len(pres_ids) and len(unit_ids):
        p_pos = pd.Index(pres_ids).get_indexer(spikes["stimulus_presentation_id"].to_numpy())
        u_pos = pd.Index(unit_ids).get_indexer(spikes["unit_id"].to_numpy())
        ok = (p_pos >= 0) & (u_pos >= 0)
        np.add.at(counts, (p_pos[ok], u_pos[ok]), 1)
    durations = presentations["duration"].to_numpy(np.float64) if use_rates else None
    return condition_statistics(counts, presentations["stimulus_condition_id"].to_numpy(),
                                unit_ids, durations=durations, use_rates=use_rates)
