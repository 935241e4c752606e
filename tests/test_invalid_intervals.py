"""Invalid intervals are honoured as AllenSDK honours them: the synthetic generator corrupts the
data inside them (a probe that stops reads 0, gain fluctuations saturate), and the session masks
exactly those samples and renames the presentations under a ``stimulus`` interval (how the
analyses skip them: tests/test_analyses.py)."""

from __future__ import annotations

import numpy as np
import pytest

import neuropixels_dask as npd

pytestmark = pytest.mark.usefixtures("close_handles_after_module")


@pytest.fixture(scope="module")
def session(s3_cache):
    url, so = s3_cache
    cache = npd.open_cache(url, **so)
    return cache.get_session_data(int(cache.get_session_table().index[-1]))


def _probe_b(session) -> int:
    with_lfp = session.probes.index[session.probes["has_lfp_data"]]
    return int(with_lfp[1])  # the probe whose data stop (tagged with its name)


def test_masked_lfp_is_nan_exactly_where_the_data_are_corrupt(session):
    pid = _probe_b(session)
    raw = session.get_lfp(pid, mask_invalid_intervals=False).compute()
    masked = session.get_lfp(pid).compute()
    nan_rows = np.isnan(masked.values).all(axis=1)
    assert nan_rows.sum() == masked.attrs["masked_invalid_samples"] > 0
    assert not np.isnan(masked.values[~nan_rows]).any()
    np.testing.assert_array_equal(masked.values[~nan_rows], raw.values[~nan_rows])
    # inside: the probe sent nothing (zeros) or saturated; outside, ordinary LFP
    inside = raw.values[nan_rows]
    assert (np.abs(inside).max(axis=1) == 0).any()
    assert np.abs(inside).max() > 10 * np.abs(raw.values[~nan_rows]).std()


def test_invalid_presentations_are_named_and_their_parameters_gone(session):
    pres = session.stimulus_presentations
    invalid = pres[pres["stimulus_name"] == "invalid_presentation"]
    assert len(invalid) == 2  # the two natural-scene presentations under the 'stimulus' tag
    assert invalid["stimulus_condition_id"].isna().all() and invalid["duration"].isna().all()
    assert "invalid_presentation" in session.stimulus_names
    assert len(session.get_stimulus_table("natural_scenes")) == (
        len(session.reader.stimulus_tables()["natural_scenes_presentations"]) - 2)

