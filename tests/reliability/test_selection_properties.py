"""Property-based tests (hypothesis): LFP time/channel selections and spike-count binning agree
with a naive computation on data read straight from the NWB file with h5py, for any selection,
including the edge cases (windows at and beyond the ends, duplicate and reordered channels, bin
edges exactly on spike times, negative offsets, one bin, binarized and uint8 counts); any
malformed selection is refused with InvalidSelectionError.
"""

from __future__ import annotations

import os

import dask
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import neuropixels_dask as npd
from neuropixels_dask.errors import InvalidSelectionError

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
TOL = 1e-6  # s: the time model is linear; timestamps agree with it to far better than this


class Truth:
    """The first session read with h5py only: LFP of one probe, spike trains by unit id."""

    def __init__(self, cache_dir: str, sid: int, pid: int) -> None:
        self.session = npd.open_cache(cache_dir).get_session_data(
            sid, filter_by_validity=False, amplitude_cutoff_maximum=None,
            presence_ratio_minimum=None, isi_violations_maximum=None)
        self.pid = pid
        folder = os.path.join(cache_dir, f"session_{sid}")
        with h5py.File(os.path.join(folder, f"probe_{pid}_lfp.nwb"), "r") as f:
            base = f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data"
            self.lfp = f[f"{base}/data"][()]
            self.times = f[f"{base}/timestamps"][()]
            region = f[f"{base}/electrodes"][()]
            self.channels = f["general/extracellular_ephys/electrodes/id"][()][region]
        with h5py.File(os.path.join(folder, f"session_{sid}.nwb"), "r") as f:
            ids, ends = f["units/id"][()], f["units/spike_times_index"][()]
            flat = f["units/spike_times"][()]
        starts = np.concatenate([[0], ends[:-1]])
        self.trains = {int(u): flat[a:b] for u, a, b in zip(ids, starts, ends, strict=True)}
        self.pres = self.session.stimulus_presentations


@pytest.fixture(scope="module")
def truth(tiny_cache_dir, ids) -> Truth:
    return Truth(tiny_cache_dir, *ids)


@pytest.fixture(autouse=True)
def _sync():
    with dask.config.set(scheduler="sync"):
        yield


# ---- LFP ------------------------------------------------------------------------------------

@st.composite
def lfp_selections(draw, truth: Truth):
    t0, t1 = float(truth.times[0]), float(truth.times[-1])
    start = draw(st.one_of(
        st.floats(t0 - 3.0, t1 + 1.0),
        st.sampled_from([t0, t1, t0 - 1e-3, t1 - 1e-3]),  # the ends, exactly and just before
        st.integers(0, len(truth.times) - 1).map(lambda i: float(truth.times[i])),  # on a sample
    ))
    length = draw(st.one_of(st.floats(0.002, 40.0), st.sampled_from([1.0, 37.6, 75.2])))
    channels = draw(st.one_of(
        st.none(),
        st.lists(st.sampled_from([int(c) for c in truth.channels]), min_size=1, max_size=6),
    ))
    return start, start + length, channels


def test_lfp_selections_match_numpy(truth):
    @SETTINGS
    @given(sel=lfp_selections(truth))
    def check(sel):
        start, stop, channels = sel
        t = truth.times
        inside = (t >= start - TOL) & (t < stop + TOL)
        end = t[-1] + (t[-1] - t[0]) / (len(t) - 1)  # the last sample's period included
        if start < t[0] - TOL or stop > end + TOL:  # reaching outside: refused, never clipped
            with pytest.raises(InvalidSelectionError, match="outside"):
                truth.session.get_lfp(truth.pid, time_range=(start, stop), channel_ids=channels)
            return
        assume(start > t[0] + TOL and stop < end - TOL)  # not at an edge within rounding
        # a window holding no sample at all is test_empty_lfp_window below
        assume(np.any((t >= start + TOL) & (t < stop - TOL)))
        lfp = truth.session.get_lfp(truth.pid, time_range=(start, stop), channel_ids=channels)
        got_t = lfp.time.values
        i0 = int(np.searchsorted(t, got_t[0] - TOL))
        i1 = i0 + len(got_t)
        # the samples whose timestamps lie in [start, stop), no more, no fewer (edges: TOL)
        assert np.all(inside[i0:i1])
        assert i0 == 0 or t[i0 - 1] < start + TOL
        assert i1 == len(t) or t[i1] >= stop - TOL
        assert np.allclose(got_t, t[i0:i1], rtol=0, atol=TOL)
        cols = (slice(None) if channels is None else
                [int(np.flatnonzero(truth.channels == c)[0]) for c in channels])
        want = truth.lfp[i0:i1][:, cols]
        assert lfp.values.dtype == want.dtype and lfp.values.tobytes() == want.tobytes()
        if channels is not None:
            assert lfp.channel.values.tolist() == list(channels)

    check()


def test_empty_lfp_window(truth):
    t = truth.times
    gap = (t[1000] + 0.2 / 1250, t[1000] + 0.6 / 1250)  # between two samples
    lfp = truth.session.get_lfp(truth.pid, time_range=gap)
    assert lfp.shape == (0, len(truth.channels))


# ---- spike counts ---------------------------------------------------------------------------

@st.composite
def binnings(draw, truth: Truth):
    pres_ids = draw(st.lists(st.sampled_from(truth.pres.index.tolist()), min_size=1, max_size=8,
                             unique=True))
    unit_ids = draw(st.one_of(st.none(), st.lists(
        st.sampled_from(sorted(truth.session.units.index.tolist())), min_size=1, max_size=12,
        unique=True)))
    edges = draw(st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=2, max_size=7,
                          unique=True).map(sorted))
    if draw(st.booleans()):  # put an edge exactly on a spike (bins are closed on both sides)
        p = truth.pres.loc[pres_ids[0]]
        uids = unit_ids or truth.session.units.index.tolist()
        train = truth.trains[int(uids[0])]
        near = train[(train > p.start_time - 0.5) & (train < p.start_time + 1.5)]
        if len(near):
            edges = sorted(set(edges) | {float(draw(st.sampled_from(near.tolist()))
                                               - p.start_time)})
    assume(len(edges) >= 2 and np.all(np.diff(edges) > 0))
    binarize = draw(st.booleans())
    dtype = draw(st.sampled_from([None, np.uint8, np.uint32]))
    return np.asarray(edges), pres_ids, unit_ids, binarize, dtype


def naive_counts(truth: Truth, edges, pres_ids, unit_ids, binarize, dtype) -> np.ndarray:
    units = truth.session.units.index.tolist() if unit_ids is None else unit_ids
    out = np.zeros((len(pres_ids), len(edges) - 1, len(units)), dtype=np.int64)
    for i, p in enumerate(pres_ids):
        onset = float(truth.pres.loc[p, "start_time"])
        for j in range(len(edges) - 1):
            lo, hi = edges[j] + onset, edges[j + 1] + onset
            for k, u in enumerate(units):
                train = truth.trains[int(u)]
                out[i, j, k] = np.count_nonzero((train >= lo) & (train <= hi))
    if binarize:
        out = out > 0
    kind = dtype if dtype is not None else (np.uint8 if binarize else np.uint16)
    return out.astype(kind)


def test_spike_counts_match_a_naive_count(truth):
    @SETTINGS
    @given(spec=binnings(truth))
    def check(spec):
        edges, pres_ids, unit_ids, binarize, dtype = spec
        counts = truth.session.presentationwise_spike_counts(
            edges, pres_ids, unit_ids, binarize=binarize, dtype=dtype,
            large_bin_size_threshold=np.inf)
        want = naive_counts(truth, edges, pres_ids, unit_ids, binarize, dtype)
        got = counts.values
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert counts.stimulus_presentation_id.values.tolist() == list(pres_ids)
        units = truth.session.units.index.tolist() if unit_ids is None else unit_ids
        assert counts.unit_id.values.tolist() == list(units)
        assert np.array_equal(counts.time_relative_to_stimulus_onset.values,
                              edges[:-1] + np.diff(edges) / 2)

    check()


def test_malformed_bin_edges_are_refused(truth):
    pres = truth.pres.index[:3]

    @SETTINGS
    @given(edges=st.lists(st.floats(-1, 1, allow_nan=False), min_size=0, max_size=6))
    def check(edges):
        assume(len(edges) < 2 or np.any(np.diff(edges) <= 0))
        with pytest.raises(InvalidSelectionError, match="strictly increasing"):
            truth.session.presentationwise_spike_counts(edges, pres, None)

    check()


def test_no_units_selected_gives_an_empty_array(truth):
    counts = truth.session.presentationwise_spike_counts([0.0, 0.1], truth.pres.index[:4], [])
    assert counts.shape == (4, 1, 0)
