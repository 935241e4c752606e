"""Invalid intervals are honoured: the synthetic generator corrupts the data inside them (a probe
that stops reads 0, gain fluctuations saturate), so an analysis that reads them is wrong; ours
skip them and say how much they skipped."""

from __future__ import annotations

import numpy as np
import pytest

import neuropixels_dask as npd
from neuropixels_dask.analyses.spectra import lfp_spectra

pytestmark = pytest.mark.usefixtures("close_handles_after_module")


@pytest.fixture(scope="module")
def session(s3_cache):
    url, so = s3_cache
    cache = npd.open_cache(url, **so)
    return cache.get_session_data(int(cache.get_session_table().index[-1]))


def _probe_b(session) -> int:
    with_lfp = session.probes.index[session.probes["has_lfp_data"]]
    return int(with_lfp[1])  # the probe whose data stop (tagged with its name)


def test_spectra_skip_the_probes_invalid_intervals(session):
    pid = _probe_b(session)
    name = session.probes.loc[pid, "description"]
    bad = session.invalid_times[[("all_probes" in t or name in t)
                                 for t in session.invalid_times["tags"]]]
    assert len(bad) == 2  # the probe's own stop and the all-probe gain fluctuations
    psd = lfp_spectra(session, pid, stimuli=["drifting_gratings", "spontaneous"]).compute()
    assert np.isfinite(psd.values).all()  # never a NaN from a masked sample
    skipped = psd["invalid_s_skipped"].to_series()
    np.testing.assert_allclose(skipped["all"], (bad["stop_time"] - bad["start_time"]).sum())
    assert skipped["drifting_gratings"] > 0 and skipped["spontaneous"] > 0
    lfp = session.get_lfp(pid, mask_invalid_intervals=False)
    t = lfp.time.values
    fs = lfp.attrs["sampling_rate"]
    # no segment overlaps an invalid interval: fewer segments than the whole recording holds
    full = (len(t) - psd.attrs["nperseg"]) // psd.attrs["step"] + 1
    assert int(psd["n_segments"].sel(stimulus="all")) < full - 4 * fs / psd.attrs["step"] + 2


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


def test_psth_tuning_and_correlations_skip_spikes_invalid_times(session):
    """The gain-fluctuation interval lies in the third drifting-grating trial and the probe stop
    in the first spontaneous block: those presentations and bins are left out, and counted."""
    from neuropixels_dask.analyses.correlations import spike_count_correlations
    from neuropixels_dask.analyses.spiking import psth, tuning_curves

    bad = session.invalid_times[[("stimulus" not in t) for t in session.invalid_times["tags"]]]
    dg = session.get_stimulus_table("drifting_gratings")
    window = (0.0, float(dg["duration"].min()))
    hit = sum(((dg["start_time"] + window[0] <= b) & (dg["start_time"] + window[1] >= a)).sum()
              for a, b in zip(bad["start_time"], bad["stop_time"], strict=True))
    curves = tuning_curves(session, "drifting_gratings")
    assert curves.attrs["presentations_skipped"] == hit >= 1
    rate = psth(session, "drifting_gratings", bin_edges=np.arange(-0.1, 2.0, 0.1))
    assert rate.attrs["presentations_skipped"] >= 1 and np.isfinite(rate.values).all()
    corr = spike_count_correlations(session, ["spontaneous", "drifting_gratings"])
    skipped = dict(zip(corr.stimulus.values, corr.bins_skipped.values, strict=True))
    assert skipped["spontaneous"] >= 2 / 0.05 and skipped["drifting_gratings"] >= 1
