"""Waveforms, amplitudes, optotagging, eye tracking, rig geometry, CSD, analysis metrics and
templates equal AllenSDK 2.16.2's on the same files, and carry the generator's ground truth.

AllenSDK runs in its own environment and opens the tiny cache through its own
``EcephysProjectCache`` (``tests/allensdk/reference_extras.py``); we read the same cache over S3.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest

import neuropixels_dask as npd
from neuropixels_dask.errors import (
    CacheNotFoundError,
    InvalidFileError,
    InvalidSelectionError,
    NoLFPError,
    UnknownSessionError,
    UnknownUnitError,
)
from neuropixels_dask.local.synth import analysis_metrics as AM
from neuropixels_dask.local.synth import csd as CSD
from neuropixels_dask.local.synth import templates as TPL
from neuropixels_dask.local.synth.generate import load_ground_truth

ROOT = Path(__file__).resolve().parent.parent
# AllenSDK reads a session's extras in ~30 s of CPU; on a loaded machine that is minutes
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: every name of AllenSDK's two classes this file covers (tests/test_allensdk_coverage.py)
COVERED = {
    "EcephysSession": ["mean_waveforms", "spike_amplitudes", "optogenetic_stimulation_epochs",
                       "get_current_source_density", "get_pupil_data", "get_screen_gaze_data",
                       "rig_geometry_data", "rig_equipment_name"],
    "EcephysProjectCache": ["get_unit_analysis_metrics_by_session_type",
                            "get_unit_analysis_metrics_for_session",
                            "get_natural_scene_template", "get_natural_movie_template"],
}


@pytest.fixture(scope="module")
def reference(allensdk_python, tiny_cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("allensdk-extras")
    subprocess.run([allensdk_python, str(ROOT / "tests" / "allensdk" / "reference_extras.py"),
                    tiny_cache_dir, str(out)], check=True, timeout=900, capture_output=True)
    return out, json.loads((out / "meta.json").read_text())


@pytest.fixture(scope="module")
def cache(s3_cache):
    """The tiny cache over S3 (AllenSDK reads the same files from disk)."""
    return npd.open_cache(s3_cache[0], **s3_cache[1])


@pytest.fixture(scope="module")
def truth(tiny_cache_dir):
    return load_ground_truth(tiny_cache_dir)


def assert_frames_equal(ours: pd.DataFrame, ref: pd.DataFrame, exact: bool = True) -> None:
    """Same index (values, name), columns (names, order), dtypes and values. Text columns may be
    ``str`` here where pandas 1.5 (AllenSDK's) has ``object``; everything else must match.
    ``exact=False`` for numbers parsed from CSV: pandas 1.5's parser (AllenSDK pins it) misses
    the nearest double by up to ~2e-13 relative on some 17-digit values that pandas 2+ reads
    exactly."""
    assert list(ours.columns) == list(ref.columns)
    assert ours.index.name == ref.index.name
    np.testing.assert_array_equal(ours.index.to_numpy(), ref.index.to_numpy())
    for col in ref.columns:
        a, b = ours[col], ref[col]
        if b.dtype == object:
            assert a.dtype == object or pd.api.types.is_string_dtype(a.dtype), col
            assert a.astype(object).tolist() == b.tolist(), col
            continue
        assert a.dtype == b.dtype, (col, a.dtype, b.dtype)
        if exact:
            np.testing.assert_array_equal(a.to_numpy(), b.to_numpy(), err_msg=col)
        else:
            np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12, err_msg=col)


def load_array(path: Path) -> dict:
    z = np.load(path, allow_pickle=False)
    return {k: z[k] for k in z.files}


# ---- analysis metrics and templates (the cache) ------------------------------------------------

def test_analysis_metrics_equal_allensdk(cache, reference):
    out, meta = reference
    kind = "brain_observatory_1.1"
    raw = cache.get_unit_analysis_metrics_by_session_type(kind, annotate=False)
    assert_frames_equal(raw, pd.read_pickle(out / f"metrics_{kind}_raw.pkl"), exact=False)
    for sid in meta["sessions"]:
        assert_frames_equal(cache.get_unit_analysis_metrics_for_session(sid, annotate=False),
                            pd.read_pickle(out / f"metrics_{sid}_raw.pkl"), exact=False)
    # annotated: get_units() merged on (inner join, index ecephys_unit_id): the same units and
    # metrics as AllenSDK's; the unit columns are get_units()' (compared with AllenSDK's by the
    # catalog's own tests)
    units = cache.get_units()
    for ours, ref, sid in [(cache.get_unit_analysis_metrics_by_session_type(kind),
                            pd.read_pickle(out / f"metrics_{kind}.pkl"), None),
                           *[(cache.get_unit_analysis_metrics_for_session(sid),
                              pd.read_pickle(out / f"metrics_{sid}.pkl"), sid)
                             for sid in meta["sessions"]]]:
        assert list(ours.columns) == list(units.columns) + AM.COLUMNS
        assert list(ref.columns[-len(AM.COLUMNS):]) == AM.COLUMNS
        assert_frames_equal(ours[AM.COLUMNS], ref[AM.COLUMNS], exact=False)
        if sid is not None:
            assert (ours["ecephys_session_id"] == sid).all()


def test_analysis_metrics_carry_the_planted_truth(cache, truth):
    metrics = cache.get_unit_analysis_metrics_by_session_type("brain_observatory_1.1",
                                                              annotate=False)
    units = {int(u): t for s in truth["sessions"].values() for u, t in s["units"].items()}
    good = sorted(u for u, t in units.items() if t["quality"] == "good")
    assert sorted(metrics.index) == good  # one row per good unit
    tuned = [u for u in good if units[u]["preferred_orientation"] is not None]
    assert tuned and len(tuned) < len(good)
    for u in good:
        row, t = metrics.loc[u], units[u]
        if t["preferred_orientation"] is not None:
            assert row["pref_ori_dg"] == t["preferred_orientation"]
            # a direction-tuned von Mises over 8 directions on a baseline: OSI 0.13, DSI 0.30
            assert 0.1 < row["g_osi_dg"] < row["g_dsi_dg"] < 1
        else:
            assert row["g_osi_dg"] == 0.0 and row["g_dsi_dg"] == 0.0
        flash = t["flash_responsive"] and t["area"].startswith(("VIS", "LGd", "LP"))
        assert (row["time_to_peak_fl"] == (0.045 if t["area"].startswith("VIS") else 0.03)
                if flash else np.isnan(row["time_to_peak_fl"]))
        if t["rf_centre"] is not None:  # the planted centre, in AllenSDK's degrees
            assert (row["azimuth_rf"], row["elevation_rf"]) == pytest.approx(
                (t["rf_centre"][0] + 50, t["rf_centre"][1] + 10), rel=1e-12)
            assert row["on_screen_rf"]
        else:
            assert np.isnan(row["azimuth_rf"]) and not row["on_screen_rf"]
    assert metrics["area_rf"].isna().all()  # the estimator's, not the model's


def test_analysis_metrics_errors(cache):
    with pytest.raises(InvalidSelectionError, match="functional_connectivity"):
        cache.get_unit_analysis_metrics_by_session_type("functional_connectivity")
    with pytest.raises(UnknownSessionError, match="not in this cache"):
        cache.get_unit_analysis_metrics_for_session(123)


def test_templates_equal_allensdk_and_truth(cache, reference):
    out, _ = reference
    for n in (0, 5, 117):
        scene = cache.get_natural_scene_template(n)
        ref = np.load(out / f"scene_{n}.npy")
        assert scene.dtype == ref.dtype == np.uint8
        np.testing.assert_array_equal(scene, ref)
        assert abs(scene.mean() - (TPL.SCENE_MEAN0 + n)) < 1.0  # planted mean grey level
    for n in (1, 3):
        movie = cache.get_natural_movie_template(n)
        assert isinstance(movie, da.Array)  # lazy: read with ranged requests when computed
        ref = np.load(out / f"movie_{n}.npy")
        assert movie.shape == ref.shape and movie.dtype == ref.dtype
        np.testing.assert_array_equal(movie.compute(), ref)
        assert movie.shape[0] == TPL.MOVIE_FRAMES[n]
        frame = np.asarray(movie[7])  # the bar's left edge is at column 7
        assert (frame[:, 7] == 255).all() and (frame[:, 6] == TPL.MOVIE_BACKGROUND).all()
    with pytest.raises(CacheNotFoundError, match="natural scene 999"):
        cache.get_natural_scene_template(999)
    with pytest.raises(CacheNotFoundError, match="movies 1 and 3"):
        cache.get_natural_movie_template(2)


# ---- session data ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sessions(cache, reference):
    """The session AllenSDK read its data of (the first; its metrics are read for all)."""
    sid = reference[1]["sessions"][0]
    return {sid: cache.get_session_data(sid)}


def test_mean_waveforms_equal_allensdk(sessions, reference, truth):
    out, meta = reference
    for sid, s in sessions.items():
        waves = s.mean_waveforms
        assert list(waves) == meta[f"waveform_units_{sid}"]
        units = truth["sessions"][str(sid)]["units"]
        for u in waves:
            w = waves[u]
            assert isinstance(w.data, da.Array)  # nothing read yet
            ref = load_array(out / f"waveform_{sid}_{u}.npz")
            assert w.dims == tuple(ref["dims"]) and w.name is None
            np.testing.assert_array_equal(w.channel_id.values, ref["coord_channel_id"])
            np.testing.assert_array_equal(w.time.values, ref["coord_time"])
            values = w.values
            assert values.dtype == ref["values"].dtype
            np.testing.assert_array_equal(values, ref["values"])
            # ground truth: the trough is on the unit's peak channel
            peak = w.channel_id.values[np.argmin(values.min(axis=1))]
            assert peak == units[str(u)]["waveform_peak_channel_id"]
    with pytest.raises(UnknownUnitError):
        next(iter(sessions.values())).mean_waveforms[1]


def test_spike_amplitudes_equal_allensdk(sessions, reference):
    out, meta = reference
    for sid, s in sessions.items():
        amps = s.spike_amplitudes
        assert list(amps) == meta[f"amplitude_units_{sid}"]  # every unit, noise included
        ref = np.load(out / f"amplitudes_{sid}.npz")
        for u in amps:
            a = amps[u]
            assert a.dtype == ref[str(u)].dtype
            np.testing.assert_array_equal(a, ref[str(u)])
        for u in s.units.index[:3]:  # one amplitude per spike
            assert amps[u].shape == s.spike_times[u].shape


def test_optotagging_equals_allensdk_and_tags_units(sessions, reference, truth):
    out, _ = reference
    for sid, s in sessions.items():
        opto = s.optogenetic_stimulation_epochs
        assert_frames_equal(opto, pd.read_pickle(out / f"opto_{sid}.pkl"))
        t = truth["sessions"][str(sid)]
        assert len(opto) == t["optotagging"]["trials"]
        # tagged units fire 2-4 ms after 10 ms pulses, the others do not
        pulses = opto[(opto["stimulus_name"] == "pulse")
                      & (opto["duration"] == 0.01)]["start_time"].to_numpy()
        assert len(pulses) >= 2
        for uid in s.units.index:
            st = s.spike_times[uid]
            lag = st[None, :] - pulses[:, None]
            hits = ((lag > 0.001) & (lag < 0.006)).any(axis=1).mean()
            if t["units"][str(uid)]["optotagged"]:
                assert hits >= 0.4, uid  # p = 0.9 × min(1, level), levels 0.5-1.5
            else:
                assert hits <= 0.3, uid
    assert any(u["optotagged"] for s in truth["sessions"].values() for u in s["units"].values())


def test_eye_tracking_and_rig_equal_allensdk(sessions, reference):
    out, meta = reference
    for sid, s in sessions.items():
        pupil = s.get_pupil_data()
        assert_frames_equal(pupil, pd.read_pickle(out / f"pupil_{sid}.pkl"))
        assert_frames_equal(s.get_screen_gaze_data(), pd.read_pickle(out / f"gaze_{sid}.pkl"))
        gaze = s.get_screen_gaze_data(include_filtered_data=True)
        assert_frames_equal(gaze, pd.read_pickle(out / f"gaze_filtered_{sid}.pkl"))
        assert_frames_equal(s.rig_geometry_data, pd.read_pickle(out / f"rig_{sid}.pkl"))
        assert s.rig_equipment_name == meta[f"rig_equipment_{sid}"]
        # ground truth: the pupil dilates with running; blinks are NaN only when filtered
        run = s.running_speed
        speed = np.interp(gaze.index.to_numpy(), run["start_time"], run["velocity"])
        smooth = pd.Series(speed).rolling(30, center=True, min_periods=1).mean().to_numpy()
        assert np.corrcoef(smooth, gaze["raw_pupil_area"])[0, 1] > 0.8
        assert gaze["filtered_pupil_area"].isna().any()
        assert not gaze["raw_pupil_area"].isna().any()


def test_current_source_density_equals_allensdk_and_truth(sessions, reference, truth):
    out, meta = reference
    for sid, s in sessions.items():
        for pid in meta["lfp_probes"][str(sid)]:
            csd = s.get_current_source_density(pid)
            assert isinstance(csd.data, da.Array)
            ref = load_array(out / f"csd_{pid}.npz")
            assert csd.name == str(ref["name"]) and csd.dims == tuple(ref["dims"])
            for c in ("virtual_channel_index", "time", "vertical_position",
                      "horizontal_position"):
                np.testing.assert_array_equal(csd[c].values, ref[f"coord_{c}"], err_msg=c)
                assert csd[c].dtype == ref[f"coord_{c}"].dtype, c
            values = csd.values
            assert values.dtype == ref["values"].dtype
            np.testing.assert_array_equal(values, ref["values"])
            # ground truth: the extremum is at the planted depth and latency
            ch, ti = np.unravel_index(np.argmax(np.abs(values)), values.shape)
            depth = truth["sessions"][str(sid)]["csd_sink_depth_um"][str(pid)]
            assert abs(float(csd.vertical_position[ch]) - depth) <= CSD.VIRTUAL_SPACING_UM
            assert abs(float(csd.time[ti]) - CSD.PEAK_LATENCY_S) < 1e-3
    s = next(iter(sessions.values()))
    no_lfp = [p for p, row in s.probes.iterrows() if not row["has_lfp_data"]]
    with pytest.raises(NoLFPError, match="has no LFP file"):
        s.get_current_source_density(no_lfp[0])



def test_missing_extras_say_so(scratch_cache):
    """A session file without eye tracking or optotagging: AllenSDK's ``None`` (with a warning
    here, not a print) for eye tracking and rig, a named error for optotagging."""
    import h5py

    cache = npd.open_cache(scratch_cache)
    sid = int(cache.get_session_table().index[0])
    with h5py.File(f"{scratch_cache}/session_{sid}/session_{sid}.nwb", "a") as f:
        for module in ("eye_tracking", "raw_gaze_mapping", "filtered_gaze_mapping",
                       "eye_tracking_rig_metadata", "optotagging"):
            del f[f"processing/{module}"]
    s = cache.get_session_data(sid)
    with pytest.warns(UserWarning, match="no eye tracking data"):
        assert s.get_pupil_data() is None
    with pytest.warns(UserWarning, match="no eye tracking data"):
        assert s.get_screen_gaze_data(include_filtered_data=True) is None
    assert s.rig_geometry_data is None and s.rig_equipment_name is None
    with pytest.raises(InvalidFileError, match="no optotagging"):
        _ = s.optogenetic_stimulation_epochs
