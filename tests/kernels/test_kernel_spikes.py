"""Spike kernels: equal to AllenSDK's algorithms (transcribed in _allensdk_reference) and to naive
loops, including spikes exactly on bin edges and presentation boundaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from _allensdk_reference import (
    conditionwise_spike_statistics as ref_conditionwise,
)
from _allensdk_reference import (
    presentationwise_spike_times as ref_presentationwise,
)
from _allensdk_reference import spike_histogram as ref_histogram
from _allensdk_reference import stimulus_conditions as ref_conditions
from _allensdk_reference import time_window_domain as ref_domain
from hypothesis import given, settings
from hypothesis import strategies as st

from neuropixels_dask.kernels import spikes as K

FS = 30000.0  # spike times are sample counts / 30 kHz, so simultaneous spikes of units happen


def _trains(rng, n_units, t_max, rate=20.0, quantize=True):
    trains = {}
    for i in range(n_units):
        n = rng.poisson(rate * t_max) if i % 5 != 4 else 0  # every 5th unit is silent
        t = np.sort(rng.uniform(0, t_max, n))
        trains[1000 + 7 * i] = np.round(t * FS) / FS if quantize else t
    return trains


def _presentations(rng, n, t0=1.0, back_to_back=True):
    """Stimulus table in time order; back-to-back (stop == next start) or with gaps."""
    dur = rng.choice([0.25, 0.5], size=n)
    gap = np.zeros(n) if back_to_back else rng.uniform(0.0, 0.3, n)
    starts = t0 + np.concatenate([[0], np.cumsum(dur + gap)[:-1]])
    starts = np.round(starts * FS) / FS
    stops = np.round((starts + dur) * FS) / FS
    return pd.DataFrame({"start_time": starts, "stop_time": stops, "duration": stops - starts},
                        index=pd.Index(np.arange(n) * 3 + 11, name="stimulus_presentation_id"))


# ---- histogram -----------------------------------------------------------------------------------
def test_time_window_domain_arithmetic():
    edges = np.array([-0.1, 0.0, 0.05, 0.2])
    offsets = np.array([1.5, 10.125, 3.3])
    assert np.array_equal(K.build_time_window_domain(edges, offsets), ref_domain(edges, offsets))
    f32 = K.build_time_window_domain(edges.astype(np.float32), offsets)
    assert f32.dtype == np.float32  # in-place add into the edges' dtype, as upstream
    assert K.build_time_window_domain(np.arange(3), offsets).dtype == np.float64
    doubled = K.build_time_window_domain(edges, offsets, callback=lambda d: d * 2)
    assert np.array_equal(doubled, 2 * ref_domain(edges, offsets))


def test_spike_on_interior_edge_counts_in_both_bins():
    # AllenSDK: searchsorted left on bin starts, right on bin ends -> closed bins
    trains = [np.array([10.0, 10.5, 10.75, 11.0, 12.0]), np.array([]), np.array([10.5, 10.5])]
    counts = K.spike_histogram(trains, np.array([10.0]), np.array([0.0, 0.5, 1.0]))
    assert counts.dtype == np.uint16
    assert counts.shape == (1, 2, 3)
    assert counts[0, :, 0].tolist() == [2, 3]  # 10.5 in both; 11.0 (last edge) included
    assert counts[0, :, 1].tolist() == [0, 0]  # empty unit
    assert counts[0, :, 2].tolist() == [2, 2]  # duplicate spike on the edge


def test_histogram_matches_allensdk_and_naive_loop():
    rng = np.random.default_rng(1)
    trains = _trains(rng, 12, 60.0)
    pres = _presentations(rng, 80)
    # edges on the 30 kHz grid, so many spikes sit exactly on edges
    edges = np.round(np.arange(-0.05, 0.3, 0.01) * FS) / FS
    ids = list(trains)
    got = K.spike_histogram(trains, pres["start_time"].to_numpy(), edges, unit_ids=ids)
    domain = ref_domain(edges, pres["start_time"].to_numpy())
    want = ref_histogram(domain, trains, ids)
    assert got.dtype == want.dtype == np.uint16
    assert np.array_equal(got, want)
    # the sequence form and the explicit-domain form agree
    seq = K.spike_histogram_domain([trains[u] for u in ids], domain)
    assert np.array_equal(seq, want)
    # naive loop over (presentation, bin, unit), closed bins
    for p in range(0, len(pres), 17):
        for b in range(len(edges) - 1):
            for j, u in enumerate(ids):
                t = trains[u]
                n = np.count_nonzero((t >= domain[p, b]) & (t <= domain[p, b + 1]))
                assert got[p, b, j] == n


@pytest.mark.parametrize(("binarize", "dtype", "want_dtype"), [
    (True, None, np.uint8), (False, np.int32, np.int32), (True, np.float32, np.float32)])
def test_histogram_binarize_and_dtype(binarize, dtype, want_dtype):
    rng = np.random.default_rng(2)
    trains = _trains(rng, 6, 20.0, rate=80.0)
    starts = np.arange(1.0, 19.0, 0.6)
    edges = np.linspace(0, 0.5, 11)
    got = K.spike_histogram(trains, starts, edges, binarize=binarize, dtype=dtype)
    want = ref_histogram(ref_domain(edges, starts), trains, list(trains), dtype=dtype,
                         binarize=binarize)
    assert got.dtype == want_dtype
    assert np.array_equal(got, want)
    if binarize:
        assert set(np.unique(got)) <= {0, 1}


def test_histogram_uint16_wraps_like_allensdk():
    train = np.linspace(0.0, 0.99, 70000)  # 70,000 spikes in one bin: more than uint16 holds
    got = K.spike_histogram([train], np.array([0.0]), np.array([0.0, 1.0]))
    want = ref_histogram(np.array([[0.0, 1.0]]), {0: train}, [0])
    assert got[0, 0, 0] == want[0, 0, 0] == 70000 % 65536


def test_histogram_empty_inputs():
    assert K.spike_histogram([], np.array([1.0, 2.0]), np.array([0, 0.1])).shape == (2, 1, 0)
    assert K.spike_histogram([np.array([1.0])], np.zeros(0), np.array([0, 0.1])).shape == (0, 1, 1)


_grid = st.integers(min_value=-4, max_value=44).map(lambda k: k / 8)  # exact binary fractions


@settings(max_examples=150, deadline=None)
@given(spikes=st.lists(st.lists(_grid, max_size=25), min_size=1, max_size=4),
       rel_edges=st.lists(st.integers(0, 16), min_size=1, max_size=6, unique=True),
       offsets=st.lists(st.integers(0, 24), min_size=1, max_size=4))
def test_histogram_edge_cases_property(spikes, rel_edges, offsets):
    """Spikes and edges on one grid: many spikes exactly on edges; closed bins as AllenSDK."""
    trains = [np.sort(np.array(s, dtype=np.float64)) for s in spikes]
    edges = np.sort(np.array(rel_edges, dtype=np.float64)) / 8
    starts = np.array(offsets, dtype=np.float64) / 8
    got = K.spike_histogram(trains, starts, edges)
    want = ref_histogram(ref_domain(edges, starts), dict(enumerate(trains)), range(len(trains)))
    assert np.array_equal(got, want)
    for p, s0 in enumerate(starts):
        for b in range(len(edges) - 1):
            for j, t in enumerate(trains):
                lo, hi = s0 + edges[b], s0 + edges[b + 1]
                assert got[p, b, j] == np.count_nonzero((t >= lo) & (t <= hi))


# ---- presentation-wise spike times -------------------------------------------------------------------
@pytest.mark.parametrize("back_to_back", [True, False])
def test_presentationwise_spike_times_equals_allensdk(back_to_back):
    rng = np.random.default_rng(4)
    pres = _presentations(rng, 120, back_to_back=back_to_back)
    t_end = pres["stop_time"].iloc[-1] + 2.0
    trains = _trains(rng, 10, t_end, rate=40.0)
    u0 = next(iter(trains))
    # spikes exactly on starts and stops, before the first and after the last presentation
    trains[u0] = np.sort(np.concatenate([trains[u0], pres["start_time"].to_numpy()[::7],
                                         pres["stop_time"].to_numpy()[::5], [0.1, t_end - 0.1]]))
    ids = list(trains)
    got = K.presentationwise_spike_times(trains, ids, pres.index.to_numpy(),
                                         pres["start_time"].to_numpy(),
                                         pres["stop_time"].to_numpy())
    want = ref_presentationwise(trains, ids, pres)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert list(got.columns) == ["stimulus_presentation_id", "unit_id",
                                 "time_since_stimulus_presentation_onset"]
    assert got.index.name == "spike_time"
    # (start, stop]: no spike exactly at its presentation's start
    onset = pres.loc[got["stimulus_presentation_id"], "start_time"].to_numpy()
    stop = pres.loc[got["stimulus_presentation_id"], "stop_time"].to_numpy()
    t = got.index.to_numpy()
    assert np.all((t > onset) & (t <= stop))
    # ties across units exist in this data, and their order matched the reference above
    assert got.index.duplicated().any()


def test_presentationwise_spike_times_sequence_input_and_empty():
    pres_ids = np.array([5, 6])
    starts, stops = np.array([1.0, 2.0]), np.array([1.5, 2.5])
    got = K.presentationwise_spike_times([np.array([1.0, 1.2, 1.5, 2.25])], [42], pres_ids,
                                         starts, stops)
    assert got.index.tolist() == [1.2, 1.5, 2.25]
    assert got["stimulus_presentation_id"].tolist() == [5, 5, 6]
    assert got["unit_id"].tolist() == [42, 42, 42]
    assert np.allclose(got["time_since_stimulus_presentation_onset"], [0.2, 0.5, 0.25])
    empty = K.presentationwise_spike_times([np.array([0.5, 3.0])], [1], pres_ids, starts, stops)
    assert empty.empty and list(empty.columns) == list(got.columns)
    assert empty["unit_id"].dtype == np.int64


# ---- conditions and condition statistics -------------------------------------------------------------
def _stimulus_table(rng, n=300):
    ori = rng.choice([0.0, 45.0, 90.0], n).astype(object)
    tf = rng.choice([1.0, 2.0], n).astype(object)
    name = np.where(np.arange(n) < n // 3, "flashes", "drifting_gratings").astype(object)
    ori[: n // 3] = "null"
    tf[: n // 3] = "null"
    return pd.DataFrame({"start_time": np.arange(n) * 1.0, "stop_time": np.arange(n) + 0.5,
                         "stimulus_block": 1, "stimulus_name": name, "orientation": ori,
                         "temporal_frequency": tf, "duration": 0.5})


def test_assign_condition_ids_matches_allensdk():
    rng = np.random.default_rng(6)
    table = _stimulus_table(rng)
    ids, conds = K.assign_condition_ids(table)
    params = table.drop(columns=["start_time", "stop_time", "duration", "stimulus_block"])
    want_ids, want_conds = ref_conditions(params)
    assert np.array_equal(ids, want_ids)
    pd.testing.assert_frame_equal(conds, want_conds, check_dtype=False)
    assert ids[0] == 0 and len(conds) == 1 + 3 * 2  # flashes + 3 orientations x 2 TFs
    # first-appearance numbering
    first = pd.Series(ids).drop_duplicates().to_numpy()
    assert np.array_equal(first, np.arange(len(conds)))
    # explicit columns; 45 == 45.0 is one condition; NaN is "null" (NaN != NaN otherwise)
    t = pd.DataFrame({"stimulus_name": ["a", "a", "a", "a"], "x": [45, 45.0, np.nan, None]},
                     dtype=object)
    ids2, conds2 = K.assign_condition_ids(t, ["stimulus_name", "x"])
    assert ids2.tolist() == [0, 0, 1, 1]
    assert conds2["x"].tolist() == [45, "null"]


@pytest.mark.parametrize("use_rates", [False, True])
def test_conditionwise_statistics_equals_allensdk(use_rates):
    rng = np.random.default_rng(7)
    pres = _presentations(rng, 150, back_to_back=False)
    pres["stimulus_condition_id"] = rng.integers(0, 9, len(pres))
    pres.loc[pres.index[-1], "stimulus_condition_id"] = 9  # a single-presentation condition
    trains = _trains(rng, 9, pres["stop_time"].iloc[-1] + 1, rate=15.0)
    ids = np.array(list(trains))
    spikes = K.presentationwise_spike_times(trains, ids, pres.index, pres["start_time"],
                                            pres["stop_time"])
    got = K.conditionwise_statistics(spikes, pres, ids, use_rates=use_rates)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = ref_conditionwise(spikes, pres, ids, use_rates=use_rates)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    # the single-presentation condition has an undefined std, as upstream
    assert got.xs(9, level="stimulus_condition_id")["spike_std"].isna().all()


def test_conditionwise_statistics_vs_plain_groupby():
    """Independent check: pandas groupby on a hand-made (presentation, unit) count table."""
    rng = np.random.default_rng(8)
    pres = _presentations(rng, 90)
    pres["stimulus_condition_id"] = rng.integers(0, 4, len(pres))
    trains = _trains(rng, 6, pres["stop_time"].iloc[-1] + 1, rate=25.0)
    ids = np.array(list(trains))
    got = K.conditionwise_statistics(
        K.presentationwise_spike_times(trains, ids, pres.index, pres["start_time"],
                                       pres["stop_time"]), pres, ids)
    rows = []
    for pid, r in pres.iterrows():
        for u in ids:
            t = trains[u]
            n = np.count_nonzero((t > r["start_time"]) & (t <= r["stop_time"]))
            rows.append((pid, u, r["stimulus_condition_id"], n))
    df = pd.DataFrame(rows, columns=["pid", "unit_id", "stimulus_condition_id", "n"])
    g = df.groupby(["unit_id", "stimulus_condition_id"])["n"]
    want = pd.DataFrame({"spike_count": g.sum(), "stimulus_presentation_count": g.size(),
                         "spike_mean": g.mean(), "spike_std": g.std(ddof=1),
                         "spike_sem": g.sem()})
    got_sorted = got.sort_index()
    assert np.array_equal(got_sorted.index.to_numpy(), want.index.to_numpy())
    for col in want:
        assert np.allclose(got_sorted[col], want[col], rtol=1e-12, equal_nan=True), col


def test_condition_statistics_no_spikes():
    counts = np.zeros((4, 2), dtype=np.int64)
    out = K.condition_statistics(counts, np.array([0, 1, 0, 1]), np.array([8, 3]))
    assert out.index.tolist() == [(3, 0), (8, 0), (3, 1), (8, 1)]
    assert (out["spike_count"] == 0).all() and (out["stimulus_presentation_count"] == 2).all()
    assert np.allclose(out[["spike_mean", "spike_std", "spike_sem"]], 0)
    with pytest.raises(ValueError):
        K.condition_statistics(counts, np.zeros(4), [1, 2], use_rates=True)
    assert np.isclose(scipy.stats.sem([1.0, 3.0]), 1.0)
