"""The synthetic cache has the published layout, opens with pynwb over S3, passes nwbinspector,
is deterministic, and records its ground truth."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from pynwb import NWBHDF5IO

from neuropixels_dask.local.synth import generate_cache
from neuropixels_dask.local.synth.generate import GROUND_TRUTH_FILE

HEADERS = {
    "sessions.csv": "id,date_of_acquisition,isi_experiment_id,published_at,specimen_id,"
                    "session_type,age_in_days,sex,genotype,has_nwb",
    "probes.csv": "id,air_channel_index,ecephys_session_id,lfp_sampling_rate,"
                  "lfp_temporal_subsampling_factor,name,phase,sampling_rate,"
                  "surface_channel_index,has_lfp_data",
    "channels.csv": "id,ecephys_probe_id,local_index,probe_horizontal_position,"
                    "probe_vertical_position,anterior_posterior_ccf_coordinate,"
                    "dorsal_ventral_ccf_coordinate,left_right_ccf_coordinate,"
                    "ecephys_structure_id,ecephys_structure_acronym",
    "units.csv": "id,PT_ratio,amplitude,amplitude_cutoff,cumulative_drift,d_prime,duration,"
                 "ecephys_channel_id,firing_rate,halfwidth,isi_violations,isolation_distance,"
                 "l_ratio,max_drift,nn_hit_rate,nn_miss_rate,presence_ratio,quality,"
                 "recovery_slope,repolarization_slope,silhouette_score,snr,spread,"
                 "velocity_above,velocity_below",
}


def test_listing_and_tables_over_s3(s3_server, s3_cache):
    url, so = s3_cache
    fs = s3_server.filesystem()
    root = url.removeprefix("s3://")
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(root)}
    assert {"manifest.json", *HEADERS, GROUND_TRUTH_FILE} <= names
    sessions = [n for n in names if n.startswith("session_")]
    assert len(sessions) == 2
    for name, header in HEADERS.items():
        with fs.open(f"{root}/{name}") as f:
            assert f.readline().decode().strip() == header
    manifest = json.loads(fs.cat_file(f"{root}/manifest.json"))
    entries = {e.get("key"): e for e in manifest["manifest"]}
    assert manifest["manifest"][0] == {"type": "manifest_version", "value": "0.3.0"}
    assert entries["session_nwb"]["spec"] == "session_%d.nwb"
    assert entries["probe_lfp_nwb"]["spec"] == "probe_%d_lfp.nwb"


def test_nwb_opens_with_pynwb_over_s3(s3_server, s3_cache):
    url, _ = s3_cache
    fs = s3_server.filesystem()
    root = url.removeprefix("s3://")
    sessions = pd.read_csv(fs.open(f"{root}/sessions.csv"))
    probes = pd.read_csv(fs.open(f"{root}/probes.csv"))
    sid = int(sessions["id"][0])
    with fs.open(f"{root}/session_{sid}/session_{sid}.nwb", "rb") as f, \
            h5py.File(f, "r") as h5, NWBHDF5IO(file=h5, load_namespaces=True) as io:
        nwb = io.read()
        assert nwb.identifier == str(sid)
        assert sorted(nwb.electrode_groups) == sorted(probes.loc[
            probes["ecephys_session_id"] == sid, "name"])
        group = nwb.electrode_groups["probeA"]
        assert type(group).__name__ == "EcephysElectrodeGroup"
        assert {"has_lfp_data", "probe_id", "lfp_sampling_rate"} <= set(group.fields)
        units = nwb.units.to_dataframe()
        assert {"good", "noise"} == set(units["quality"])
        assert units["spike_times"].map(len).sum() > 1000
        assert {f"{s}_presentations" for s in ("drifting_gratings", "flashes", "spontaneous",
                                               "natural_scenes", "static_gratings")} <= set(
            nwb.intervals)
        dg = nwb.intervals["drifting_gratings_presentations"].to_dataframe()
        assert {"orientation", "temporal_frequency", "contrast", "stimulus_name",
                "stimulus_block", "stimulus_index"} <= set(dg.columns)
        assert "running_speed" in nwb.processing["running"].data_interfaces
    pid = int(probes.loc[(probes["ecephys_session_id"] == sid) & probes["has_lfp_data"],
                         "id"].iloc[0])
    with fs.open(f"{root}/session_{sid}/probe_{pid}_lfp.nwb", "rb") as f, \
            h5py.File(f, "r") as h5, NWBHDF5IO(file=h5, load_namespaces=True) as io:
        nwb = io.read()
        es = nwb.acquisition[f"probe_{pid}_lfp"].electrical_series[f"probe_{pid}_lfp_data"]
        assert es.data.dtype == np.float32 and es.data.ndim == 2
        assert es.data.shape[1] == len(es.electrodes.data)


def test_storage_matches_the_published_files(tiny_cache_dir):
    sid = sorted(d for d in os.listdir(tiny_cache_dir) if d.startswith("session_"))[0]
    folder = os.path.join(tiny_cache_dir, sid)
    with h5py.File(os.path.join(folder, f"{sid}.nwb")) as f:
        st = f["units/spike_times"]
        assert st.dtype == np.float64 and st.compression is None
        assert f["general/extracellular_ephys/electrodes"].attrs["neurodata_type"] == \
            "DynamicTable"
        cols = set(f["general/extracellular_ephys/electrodes"])
        assert {"x", "y", "z", "location", "probe_vertical_position", "probe_horizontal_position",
                "probe_id", "local_index", "valid_data", "imp", "filtering", "group"} <= cols
        assert {"waveform_duration", "waveform_halfwidth", "waveform_mean", "PT_ratio",
                "spike_amplitudes_index"} <= set(f["units"])
    lfp = [n for n in os.listdir(folder) if n.endswith("_lfp.nwb")][0]
    pid = lfp.split("_")[1]
    with h5py.File(os.path.join(folder, lfp)) as f:
        base = f"acquisition/probe_{pid}_lfp/probe_{pid}_lfp_data"
        data, ts = f[f"{base}/data"], f[f"{base}/timestamps"]
        assert data.dtype == np.float32 and data.chunks == (46989, 1)
        assert data.compression == "gzip" and data.compression_opts == 9
        assert ts.dtype == np.float64 and ts.compression == "gzip"
        t = ts[:1000]
        assert 13.0 < t[0] < 14.2
        assert 1249.9 < 1 / np.median(np.diff(t)) < 1250.1
        # int16 × 0.195 µV, as the real LFP
        q = data[:1000, 0] / 0.195e-6
        np.testing.assert_allclose(q, np.round(q), atol=1e-3)


def test_nwbinspector_finds_no_critical_or_error(tiny_cache_dir):
    from nwbinspector import Importance, inspect_all

    messages = list(inspect_all(path=tiny_cache_dir, n_jobs=1))
    assert messages, "nwbinspector inspected nothing"
    bad = [m for m in messages
           if m.importance in (Importance.CRITICAL, Importance.PYNWB_VALIDATION, Importance.ERROR)]
    assert not bad, [(m.check_function_name, m.message) for m in bad]


def test_ground_truth_and_determinism(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    kw = dict(progress=False, n_sessions=1, n_probes=2, units_per_probe=4,
              n_drifting_gratings=8, n_flashes=4, n_static_gratings=4, n_natural_scenes=4)
    generate_cache(a, "tiny", **kw)
    generate_cache(b, "tiny", **kw)
    ta, tb = (json.loads(Path(d, GROUND_TRUTH_FILE).read_text()) for d in (a, b))
    assert ta == tb
    assert ta["rhythms"]["hippocampus"]["frequency_hz"] == 8.0
    units = next(iter(ta["sessions"].values()))["units"]
    assert any(u["preferred_orientation"] is not None for u in units.values())
    sid = next(iter(ta["sessions"]))
    for name in ("units.csv", "channels.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(os.path.join(a, name)),
                                      pd.read_csv(os.path.join(b, name)))
    with h5py.File(os.path.join(a, f"session_{sid}", f"session_{sid}.nwb")) as fa, \
            h5py.File(os.path.join(b, f"session_{sid}", f"session_{sid}.nwb")) as fb:
        np.testing.assert_array_equal(fa["units/spike_times"][:], fb["units/spike_times"][:])
    # a complete cache with the same parameters is reused, a different one regenerated
    assert generate_cache(a, "tiny", **kw).reused
    assert not generate_cache(a, "tiny", **{**kw, "seed": 1}).reused


def test_unknown_preset_and_option():
    with pytest.raises(ValueError, match="unknown preset"):
        generate_cache("/tmp/never", "huge")
    with pytest.raises(ValueError, match="unknown generator option"):
        generate_cache("/tmp/never", "tiny", n_sesions=3)


def test_release_scale_catalog(tiny_cache_dir, tmp_path):
    """``release_catalog``: the tables of the generated sessions padded with catalog-only
    sessions to the release's size, consistent, with the published columns; the package opens
    them, and a catalog-only session says that its file is missing."""
    import shutil

    import neuropixels_dask as npd
    from neuropixels_dask.errors import CacheNotFoundError
    from neuropixels_dask.local.synth import catalog

    rows = {name: pd.read_csv(os.path.join(tiny_cache_dir, f"{name}.csv")).to_dict("records")
            for name in ("sessions", "probes", "channels", "units")}
    sessions, probes, channels, units = catalog.pad_to_release(
        rows["sessions"], rows["probes"], rows["channels"], rows["units"], seed=0)
    assert (len(sessions), len(probes), len(units)) == (58, 332, 99_180)
    assert len(channels) == 332 * 384
    tables = {"sessions": pd.DataFrame(sessions), "probes": pd.DataFrame(probes),
              "channels": pd.DataFrame(channels), "units": units}
    for name, t in tables.items():
        assert ",".join(t.columns) == HEADERS[f"{name}.csv"], name
        assert t["id"].is_unique, name
        generated = pd.DataFrame(rows[name])
        pd.testing.assert_frame_equal(t.iloc[:len(generated)].reset_index(drop=True),
                                      generated, check_dtype=False)  # unchanged, first
    assert tables["probes"]["ecephys_session_id"].isin(tables["sessions"]["id"]).all()
    assert tables["channels"]["ecephys_probe_id"].isin(tables["probes"]["id"]).all()
    assert units["ecephys_channel_id"].isin(tables["channels"]["id"]).all()
    assert (tables["channels"].groupby("ecephys_probe_id").size() == 384).all()
    padded = tables["sessions"].iloc[len(rows["sessions"]):]
    assert not padded["has_nwb"].any() and set(units["quality"]) == {"good", "noise"}
    # written next to the generated files, the package reads it as the release's catalog
    # (units cut to a few thousand here: writing 44 MB of CSV would take seconds)
    root = tmp_path / "release"
    shutil.copytree(tiny_cache_dir, root)
    tables["units"] = units.iloc[:5000]
    for name, t in tables.items():
        t.to_csv(root / f"{name}.csv", index=False)
    cache = npd.open_cache(str(root))
    table = cache.get_session_table()
    assert len(table) == 58 and table["probe_count"].sum() == 332
    # unit_count counts the units passing the default filters, as AllenSDK's does
    assert table["unit_count"].sum() == len(cache.get_units()) < 5000
    assert table["channel_count"].sum() == 332 * 384
    with pytest.raises(CacheNotFoundError, match="NWB file is missing"):
        cache.get_session_data(int(padded["id"].iloc[0]))
    with pytest.raises(ValueError, match="cannot pad"):  # more sessions than the release
        catalog.pad_to_release([*sessions, {**sessions[0], "id": 1}], probes, channels,
                               [], seed=0)
