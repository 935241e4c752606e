"""Numbers equal AllenSDK 2.16's on the same file: AllenSDK itself (its own environment,
``scripts/install-allensdk.sh``) reads a synthetic session; we read it over S3 and compare."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import neuropixels_dask as npd

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reference(allensdk_python, tiny_cache_dir, tmp_path_factory):
    cache = npd.open_cache(tiny_cache_dir)
    sid = int(cache.get_session_table().index[0])
    out = tmp_path_factory.mktemp("allensdk")
    subprocess.run([allensdk_python, str(ROOT / "tests" / "allensdk" / "reference.py"),
                    os.path.join(tiny_cache_dir, f"session_{sid}"), str(out)],
                   check=True, timeout=600, capture_output=True)
    meta = json.loads((out / "meta.json").read_text())
    return out, meta


@pytest.fixture(scope="module")
def session(s3_cache, reference):
    url, so = s3_cache
    return npd.open_cache(url, **so).get_session_data(reference[1]["session_id"])


def test_units_equal_allensdk(session, reference):
    out, _ = reference
    ref = pd.read_pickle(out / "units.pkl")
    ours = session.units
    assert list(ours.index) == list(ref.index)  # same units, same (AllenSDK) order
    for col in ("firing_rate", "snr", "isi_violations", "presence_ratio", "amplitude_cutoff",
                "waveform_PT_ratio", "L_ratio", "peak_channel_id", "probe_vertical_position",
                "probe_description", "structure_acronym"):
        np.testing.assert_array_equal(ours[col].to_numpy(), ref[col].to_numpy(), err_msg=col)


def test_stimulus_presentations_equal_allensdk(session, reference):
    out, _ = reference
    ref = pd.read_pickle(out / "stimulus_presentations.pkl")
    ours = session.stimulus_presentations
    assert list(ours.index) == list(ref.index)
    for col in ("start_time", "stop_time", "duration", "stimulus_name", "stimulus_block"):
        np.testing.assert_array_equal(ours[col].to_numpy(), ref[col].to_numpy(), err_msg=col)
    # condition ids: the same partition of presentations (AllenSDK parses colour strings into
    # numbers and adds a colour-triplet column, which may renumber but not regroup)
    pairs = pd.DataFrame({"ours": ours["stimulus_condition_id"].to_numpy(),
                          "ref": ref["stimulus_condition_id"].to_numpy()})
    assert (pairs.groupby("ours")["ref"].nunique() == 1).all()
    assert (pairs.groupby("ref")["ours"].nunique() == 1).all()


def test_spike_counts_equal_allensdk(session, reference):
    out, meta = reference
    counts = session.presentationwise_spike_counts(
        np.asarray(meta["edges"]), meta["flash_ids"], session.units.index).compute()
    ref = np.load(out / "counts.npy")
    assert counts.dtype == ref.dtype
    np.testing.assert_array_equal(counts.values, ref)


def test_spike_tables_equal_allensdk(session, reference):
    out, meta = reference
    uids = meta["unit_ids"]
    np.testing.assert_array_equal(session.spike_times[uids[0]],
                                  np.load(out / "spikes_first_unit.npy"))
    ref = pd.read_pickle(out / "spike_times_table.pkl")
    ours = session.presentationwise_spike_times(meta["dg_ids"], uids)
    np.testing.assert_array_equal(ours.index.to_numpy(), ref.index.to_numpy())
    for col in ("stimulus_presentation_id", "unit_id"):
        np.testing.assert_array_equal(ours[col].to_numpy(np.int64), ref[col].to_numpy(np.int64))
    np.testing.assert_array_equal(ours["time_since_stimulus_presentation_onset"].to_numpy(),
                                  ref["time_since_stimulus_presentation_onset"].to_numpy())
    ref_stats = pd.read_pickle(out / "conditionwise.pkl")
    stats = session.conditionwise_spike_statistics(meta["dg_ids"], uids)
    assert len(stats) == len(ref_stats)
    np.testing.assert_array_equal(np.sort(stats["spike_count"].to_numpy()),
                                  np.sort(ref_stats["spike_count"].to_numpy()))
    np.testing.assert_allclose(np.sort(stats["spike_mean"].to_numpy()),
                               np.sort(ref_stats["spike_mean"].to_numpy()))


def test_lfp_equals_allensdk(session, reference):
    out, meta = reference
    lfp = session.get_lfp(meta["probe_id"], exact_timestamps=True)
    np.testing.assert_array_equal(lfp.channel.values, np.load(out / "lfp_channel.npy"))
    np.testing.assert_array_equal(lfp.time.values, np.load(out / "lfp_time.npy"))
    np.testing.assert_array_equal(lfp.values, np.load(out / "lfp.npy"))
    # the default (linear) time coordinate agrees to well below a sample
    linear = session.get_lfp(meta["probe_id"]).time.values
    np.testing.assert_allclose(linear, np.load(out / "lfp_time.npy"), rtol=0, atol=1e-6)
