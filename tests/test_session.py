"""The session API returns exactly what pynwb reads from the same files (the reference)."""

from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pytest
from pynwb import NWBHDF5IO

import neuropixels_dask as npd


@pytest.fixture(scope="module")
def cache(s3_cache):
    url, so = s3_cache
    return npd.open_cache(url, **so)


@pytest.fixture(scope="module")
def session(cache):
    sid = int(cache.get_session_table().index[0])
    return cache.get_session_data(sid, amplitude_cutoff_maximum=None,
                                  presence_ratio_minimum=None, isi_violations_maximum=None)


@pytest.fixture(scope="module")
def reference(tiny_cache_dir, session):
    """pynwb's reading of the session file and the first probe's LFP file."""
    sid = session.ecephys_session_id
    folder = os.path.join(tiny_cache_dir, f"session_{sid}")
    with NWBHDF5IO(os.path.join(folder, f"session_{sid}.nwb"), "r") as io:
        nwb = io.read()
        units = nwb.units.to_dataframe()
        stim = {k: v.to_dataframe() for k, v in nwb.intervals.items()
                if k.endswith("_presentations")}
        electrodes = nwb.electrodes.to_dataframe()
    pid = int(session.probes.index[session.probes["has_lfp_data"]][0])
    with NWBHDF5IO(glob.glob(os.path.join(folder, f"probe_{pid}_lfp.nwb"))[0], "r") as io:
        nwb = io.read()
        es = nwb.acquisition[f"probe_{pid}_lfp"].electrical_series[f"probe_{pid}_lfp_data"]
        lfp = es.data[:]
        ts = es.timestamps[:]
        lfp_channels = es.electrodes.data[:]
        lfp_ids = nwb.electrodes.id[:]
    return {"units": units, "stim": stim, "electrodes": electrodes, "pid": pid, "lfp": lfp,
            "ts": ts, "lfp_ids": np.asarray(lfp_ids)[lfp_channels]}


def test_cache_tables_have_allen_columns(cache):
    sessions = cache.get_session_table()
    assert {"session_type", "specimen_id", "unit_count", "probe_count", "channel_count",
            "ecephys_structure_acronyms"} <= set(sessions.columns)
    assert sessions["probe_count"].eq(3).all()
    units = cache.get_units()
    assert {"waveform_PT_ratio", "L_ratio", "ecephys_structure_acronym", "ecephys_session_id",
            "probe_horizontal_position"} <= set(units.columns)
    # AllenSDK defaults hold, and None disables a filter
    assert (units["amplitude_cutoff"] <= 0.1).all() and (units["presence_ratio"] >= 0.95).all()
    assert (units["isi_violations"] <= 0.5).all()
    loose = cache.get_units(amplitude_cutoff_maximum=None)
    assert len(loose) > len(units)
    assert (loose["amplitude_cutoff"] > 0.1).any()
    everything = cache.get_units(filter_by_validity=False, amplitude_cutoff_maximum=None,
                                 presence_ratio_minimum=None, isi_violations_maximum=None)
    assert len(everything) == len(cache._table("units"))


def test_units_equal_pynwb(session, reference):
    ref = reference["units"]
    good = ref[ref["quality"] == "good"]
    ours = session.units
    assert set(ours.index) == set(good.index)
    for col in ("snr", "isi_violations", "firing_rate", "presence_ratio", "amplitude_cutoff",
                "peak_channel_id", "cluster_id"):
        np.testing.assert_array_equal(ours.loc[good.index, col].to_numpy(),
                                      good[col].to_numpy())
    np.testing.assert_array_equal(ours.loc[good.index, "waveform_amplitude"],
                                  good["amplitude"])
    # AllenSDK ordering: probe, then depth
    assert ours["probe_description"].is_monotonic_increasing
    assert {"structure_acronym", "probe_vertical_position", "probe_sampling_rate",
            "probe_lfp_sampling_rate", "probe_has_lfp_data", "probe_channel_number",
            "ecephys_structure_acronym", "ecephys_structure_id"} <= set(ours.columns)


def test_spike_times_equal_pynwb(session, reference):
    ref = reference["units"]
    assert set(session.spike_times) == set(session.units.index)
    for uid in list(session.units.index)[:8]:
        np.testing.assert_array_equal(session.spike_times[uid], ref.loc[uid, "spike_times"])


def test_stimulus_presentations_equal_pynwb(session, reference):
    sp = session.stimulus_presentations
    assert sp.index.name == "stimulus_presentation_id"
    assert {"duration", "stimulus_condition_id", "stimulus_name"} <= set(sp.columns)
    for name, table in reference["stim"].items():
        stim = name.removesuffix("_presentations")
        mine = sp[sp["stimulus_name"] == stim]
        np.testing.assert_array_equal(mine.index.to_numpy(), table.index.to_numpy())
        np.testing.assert_array_equal(mine["start_time"].to_numpy(float),
                                      table["start_time"].to_numpy())
        np.testing.assert_allclose(mine["duration"].to_numpy(float),
                                   (table["stop_time"] - table["start_time"]).to_numpy())
        if "orientation" in table:
            np.testing.assert_array_equal(mine["orientation"].to_numpy(float),
                                          table["orientation"].to_numpy(float))
    dg = session.get_stimulus_table("drifting_gratings")
    assert set(dg["stimulus_name"]) == {"drifting_gratings"}
    assert "mask" not in dg.columns  # detailed parameters hidden, as in AllenSDK
    # presentations with the same parameters share a condition id
    groups = dg.groupby(["orientation", "temporal_frequency"])["stimulus_condition_id"].nunique()
    assert (groups == 1).all()


def test_lfp_equals_pynwb(session, reference):
    pid = reference["pid"]
    lfp = session.get_lfp(pid)
    assert lfp.name == "LFP" and lfp.dims == ("time", "channel")
    assert lfp.chunks[0][0] == 46989  # aligned with the file's storage chunks
    np.testing.assert_array_equal(lfp.channel.values, reference["lfp_ids"])
    np.testing.assert_allclose(lfp.time.values, reference["ts"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(lfp.values, reference["lfp"])
    exact = session.get_lfp(pid, time_range=(30.0, 31.0), exact_timestamps=True)
    sel = (reference["ts"] >= 30.0) & (reference["ts"] < 31.0)
    np.testing.assert_array_equal(exact.time.values, reference["ts"][sel])
    np.testing.assert_array_equal(exact.values, reference["lfp"][sel])
    # channel coordinates carry depth and structure
    el = reference["electrodes"].loc[lfp.channel.values]
    np.testing.assert_array_equal(lfp.depth.values, el["probe_vertical_position"].to_numpy())
    np.testing.assert_array_equal(lfp.structure_acronym.values, el["location"].to_numpy())


def test_lfp_selection_before_read(session, reference):
    pid = reference["pid"]
    chans = reference["lfp_ids"][[1, 4, 2]]
    lfp = session.get_lfp(pid, time_range=(30.0, 32.0), channel_ids=chans)
    ts = reference["ts"]
    sel = (ts >= 30.0) & (ts < 32.0)
    assert lfp.shape == (sel.sum(), 3)
    np.testing.assert_array_equal(lfp.values, reference["lfp"][sel][:, [1, 4, 2]])
    # a window inside one storage chunk is one task; one across a boundary is two
    assert lfp.data.npartitions == 1
    boundary = float(ts[46989])
    across = session.get_lfp(pid, time_range=(boundary - 1, boundary + 1), channel_ids=chans)
    assert across.data.npartitions == 2
    sel = (ts >= boundary - 1) & (ts < boundary + 1)
    np.testing.assert_array_equal(across.values, reference["lfp"][sel][:, [1, 4, 2]])


def test_spike_counts_match_naive(session):
    pres = session.get_stimulus_table("flashes")
    uids = session.units.index.to_numpy()[:10]
    edges = np.linspace(-0.05, 0.25, 16)
    counts = session.presentationwise_spike_counts(edges, pres.index, uids)
    assert counts.dims == ("stimulus_presentation_id", "time_relative_to_stimulus_onset",
                           "unit_id")
    assert counts.dtype == np.uint16
    values = counts.values
    for j, uid in enumerate(uids):
        st = session.spike_times[uid]
        for i, onset in enumerate(pres["start_time"].to_numpy(float)):
            for k in range(len(edges) - 1):
                lo, hi = onset + edges[k], onset + edges[k + 1]
                # AllenSDK: searchsorted left on starts, right on ends
                expected = np.searchsorted(st, hi, "right") - np.searchsorted(st, lo, "left")
                assert values[i, k, j] == expected
    np.testing.assert_allclose(counts.time_relative_to_stimulus_onset,
                               edges[:-1] + np.diff(edges) / 2)


def test_presentationwise_spike_times_and_conditionwise(session):
    pres = session.get_stimulus_table("drifting_gratings")
    uids = session.units.index.to_numpy()[:6]
    spikes = session.presentationwise_spike_times(pres.index, uids)
    assert spikes.index.name == "spike_time"
    assert spikes.index.is_monotonic_increasing
    onset = pres.loc[spikes["stimulus_presentation_id"].to_numpy(), "start_time"].to_numpy(float)
    stop = pres.loc[spikes["stimulus_presentation_id"].to_numpy(), "stop_time"].to_numpy(float)
    t = spikes.index.to_numpy()
    assert np.all(t >= onset) and np.all(t <= stop)
    np.testing.assert_allclose(spikes["time_since_stimulus_presentation_onset"], t - onset)
    total = sum(((session.spike_times[u][:, None] >= pres["start_time"].to_numpy(float)) &
                 (session.spike_times[u][:, None] < pres["stop_time"].to_numpy(float))).sum()
                for u in uids)
    assert len(spikes) == total
    stats = session.conditionwise_spike_statistics(pres.index, uids)
    assert {"spike_count", "spike_mean", "spike_sem", "spike_std",
            "stimulus_presentation_count"} <= set(stats.columns)
    assert stats["spike_count"].sum() == total
    assert stats["stimulus_presentation_count"].groupby(level="unit_id").sum().eq(
        len(pres)).all()


def test_channel_structure_intervals(session):
    pid = session.probes.index[0]
    ids = session.channels.index[session.channels["probe_id"] == pid]
    labels, intervals = session.channel_structure_intervals(ids)
    assert len(intervals) == len(labels) + 1
    assert intervals[0] == 0 and intervals[-1] == len(ids)
    assert "CA1" in list(labels) and pd.isna(labels[-1])


def test_running_speed(session):
    rs = session.running_speed
    assert list(rs.columns) == ["start_time", "end_time", "velocity"]
    assert len(rs) > 100 and (rs["end_time"] > rs["start_time"]).all()
