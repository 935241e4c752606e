"""Run inside the AllenSDK 2.16.2 environment: open a synthetic cache with AllenSDK's own
``EcephysProjectCache`` and save what it returns for waveforms, amplitudes, optotagging, eye
tracking, rig geometry, CSD, analysis metrics and templates, for
``tests/test_allensdk_data_extras.py`` to compare with ``neuropixels_dask``.

Usage: python reference_extras.py CACHE_FOLDER OUT_FOLDER
"""

import json
import os
import sys
import time
import warnings

warnings.simplefilter("ignore")

import numpy as np  # noqa: E402
from allensdk.brain_observatory.ecephys.ecephys_project_api import (  # noqa: E402
    EcephysProjectFixedApi,
)
from allensdk.brain_observatory.ecephys.ecephys_project_cache import (  # noqa: E402
    EcephysProjectCache,
)

root, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
# EcephysProjectCache.fixed() fails in 2.16.2 (its fixed API has no rma_engine to take a
# stream writer from); nothing is downloaded from a fixed API, so any writer does
cache = EcephysProjectCache(fetch_api=EcephysProjectFixedApi(), manifest=os.path.join(
    root, "manifest.json"), stream_writer=lambda *a, **k: None)


T0 = time.time()


def lap(what):
    print(f"{time.time() - T0:7.1f} s  {what}", file=sys.stderr, flush=True)


def pickle(obj, name):
    obj.to_pickle(os.path.join(out, name), protocol=4)


def save_array(da, name):
    """A DataArray as values + coordinates (npz): no xarray pickle across versions."""
    coords = {f"coord_{k}": np.asarray(v.values) for k, v in da.coords.items()}
    np.savez(os.path.join(out, name), values=np.asarray(da.values), dims=np.array(da.dims),
             name=np.array(str(da.name)), **coords)


lap("import + cache")
sessions = cache.get_session_table()
# the session data of the first session (AllenSDK's readers are slow: one is enough); the
# metrics of every session
meta = {"sessions": [int(s) for s in sessions.index], "lfp_probes": {}}
for kind in sessions["session_type"].unique():
    pickle(cache.get_unit_analysis_metrics_by_session_type(kind), f"metrics_{kind}.pkl")
    pickle(cache.get_unit_analysis_metrics_by_session_type(kind, annotate=False),
           f"metrics_{kind}_raw.pkl")
for n in (0, 5, 117):
    np.save(os.path.join(out, f"scene_{n}.npy"), cache.get_natural_scene_template(n))
for n in (1, 3):
    np.save(os.path.join(out, f"movie_{n}.npy"), cache.get_natural_movie_template(n))

lap("templates, metrics by type")
for sid in meta["sessions"]:
    pickle(cache.get_unit_analysis_metrics_for_session(sid), f"metrics_{sid}.pkl")
    pickle(cache.get_unit_analysis_metrics_for_session(sid, annotate=False),
           f"metrics_{sid}_raw.pkl")
lap("metrics by session")
for sid in meta["sessions"][:1]:
    s = cache.get_session_data(sid)
    pickle(s.optogenetic_stimulation_epochs, f"opto_{sid}.pkl")
    pickle(s.get_pupil_data(), f"pupil_{sid}.pkl")
    pickle(s.get_screen_gaze_data(), f"gaze_{sid}.pkl")
    pickle(s.get_screen_gaze_data(include_filtered_data=True), f"gaze_filtered_{sid}.pkl")
    pickle(s.rig_geometry_data, f"rig_{sid}.pkl")
    meta[f"rig_equipment_{sid}"] = s.rig_equipment_name
    lap("opto, eye tracking, rig")
    waves = s.mean_waveforms
    meta[f"waveform_units_{sid}"] = [int(u) for u in waves]
    for u, w in waves.items():
        save_array(w, f"waveform_{sid}_{u}.npz")
    lap("mean waveforms")
    amps = s.spike_amplitudes
    meta[f"amplitude_units_{sid}"] = [int(u) for u in amps]
    np.savez(os.path.join(out, f"amplitudes_{sid}.npz"), **{str(u): a for u, a in amps.items()})
    lap("spike amplitudes")
    probes = [int(p) for p, row in s.probes.iterrows() if row["has_lfp_data"]]
    meta["lfp_probes"][str(sid)] = probes
    for pid in probes:
        save_array(s.get_current_source_density(pid), f"csd_{pid}.npz")
    lap("CSD")
with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump(meta, f)
print("ok")
