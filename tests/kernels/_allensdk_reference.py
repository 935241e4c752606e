"""AllenSDK 2.16 ``EcephysSession`` algorithms, transcribed loop for loop as the tests' reference.

These follow upstream step by step (per-unit loops, pandas groupby/merge, a dict of parameter
tuples), slow but obviously faithful, so the vectorised kernels can be compared with them exactly.
Source: ``allensdk/brain_observatory/ecephys/ecephys_session.py`` (``build_time_window_domain``,
``build_spike_histogram``, ``presentationwise_spike_times``, ``conditionwise_spike_statistics``,
``_build_stimulus_presentations``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats


def time_window_domain(bin_edges, offsets):
    domain = np.tile(bin_edges[None, :], (len(offsets), 1))
    domain += offsets[:, None]
    return domain


def spike_histogram(domain, spike_times: dict, unit_ids, dtype=None, binarize=False):
    domain = np.array(domain)
    unit_ids = np.array(unit_ids)
    default = np.uint8 if binarize else np.uint16
    out = np.zeros((domain.shape[0], domain.shape[1] - 1, unit_ids.size),
                   dtype=default if dtype is None else dtype)
    lefts = domain[:, :-1]
    rights = domain[:, 1:]
    for column, uid in enumerate(unit_ids):
        train = np.array(spike_times[uid])
        n = np.searchsorted(train, rights.flat, side="right") - np.searchsorted(train, lefts.flat)
        out[:, :, column].flat = n > 0 if binarize else n
    return out


def presentationwise_spike_times(spike_times: dict, unit_ids, presentations: pd.DataFrame):
    """``presentations``: index stimulus_presentation_id, columns start_time, stop_time."""
    edges = np.zeros(2 * len(presentations))
    edges[::2] = presentations["start_time"].to_numpy()
    edges[1::2] = presentations["stop_time"].to_numpy()
    ids_all = np.array(presentations.index.values)
    out_p, out_u, out_t = [], [], []
    for uid in unit_ids:
        train = spike_times[uid]
        where = np.searchsorted(edges, train) - 1
        inside = where % 2 == 0
        pres = ids_all[np.floor(where / 2).astype(int)]
        order = np.argsort(pres)
        pres, inside, train = pres[order], inside[order], train[order]
        bounds = np.where(np.ediff1d(pres, to_begin=1, to_end=1))[0]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            vals = train[a:b][inside[a:b]]
            if vals.size == 0:
                continue
            out_u.append(np.zeros(vals.size) + uid)
            out_p.append(np.zeros(vals.size) + pres[a])
            out_t.append(vals)
    if not out_t:
        return None
    df = pd.DataFrame({"stimulus_presentation_id": np.concatenate(out_p).astype(int),
                       "unit_id": np.concatenate(out_u).astype(int)},
                      index=pd.Index(np.concatenate(out_t), name="spike_time"))
    onsets = presentations.loc[ids_all, "start_time"]
    df = df.join(onsets, on=["stimulus_presentation_id"])
    df["time_since_stimulus_presentation_onset"] = df.index - df["start_time"]
    df = df.sort_values("spike_time", axis=0)  # upstream sorts in place: same default sort
    return df.drop(columns=["start_time"])


def _count_stats(key, group):
    v = group["spike_count"].values
    return {"stimulus_condition_id": key[0], "unit_id": key[1],
            "spike_count": group["spike_count"].sum(), "stimulus_presentation_count": len(group),
            "spike_mean": np.mean(v), "spike_std": np.std(v, ddof=1),
            "spike_sem": scipy.stats.sem(v)}


def _rate_stats(key, group):
    v = group["spike_rate"].values
    return {"stimulus_condition_id": key[0], "unit_id": key[1],
            "stimulus_presentation_count": len(group), "spike_mean": np.mean(v),
            "spike_std": np.std(v, ddof=1), "spike_sem": scipy.stats.sem(v)}


def conditionwise_spike_statistics(spikes, presentations: pd.DataFrame, unit_ids,
                                   use_rates=False):
    """``presentations``: index stimulus_presentation_id; stimulus_condition_id, duration."""
    ids = presentations.index.values
    pres = presentations[["stimulus_condition_id", "duration"]]
    index = pd.MultiIndex.from_product([ids, unit_ids],
                                       names=["stimulus_presentation_id", "unit_id"])
    if spikes is None or spikes.empty:
        counts = pd.DataFrame({"spike_count": 0}, index=index)
    else:
        counts = spikes.copy()
        counts["spike_count"] = np.zeros(counts.shape[0])
        counts = counts.groupby(["stimulus_presentation_id", "unit_id"]).count()
        counts = counts.reindex(index, fill_value=0)
    sp = pd.merge(counts, pres, left_on="stimulus_presentation_id", right_index=True, how="left")
    sp = sp.reset_index()
    if use_rates:
        sp["spike_rate"] = sp["spike_count"] / sp["duration"]
        sp = sp.drop(columns=["spike_count"])
        extract = _rate_stats
    else:
        extract = _count_stats
    rows = [extract(key, group) for key, group in sp.groupby(["stimulus_condition_id",
                                                              "unit_id"])]
    return pd.DataFrame(rows).set_index(keys=["unit_id", "stimulus_condition_id"])


def stimulus_conditions(params: pd.DataFrame):
    """Condition id per presentation and the condition table (first-appearance numbering)."""
    seen = {}
    ids = []
    counter = -1
    for row in params.itertuples(index=False):
        if row in seen:
            cid = seen[row]
        else:
            counter += 1
            seen[row] = counter
            cid = counter
        ids.append(cid)
    table = pd.DataFrame(list(seen.keys()),
                         index=pd.Index(data=list(seen.values()), name="stimulus_condition_id"))
    return np.array(ids), table
