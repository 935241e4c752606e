# ruff: noqa
"""AllenSDK's "Extracellular Electrophysiology Data: quick start" tutorial, ported.

Source: AllenInstitute/AllenSDK, doc_template/examples_root/examples/nb/ecephys_quickstart.ipynb
(commit 1bdca3ad8), code cells in order, Copyright Allen Institute for Brain Science, AllenSDK
license (https://github.com/AllenInstitute/AllenSDK/blob/master/LICENSE.txt).

Changed, and why (tests/test_allensdk_tutorials.py runs this against the synthetic cache):
- PORT: the import and the cache construction (the one change a real port needs);
- SYNTHETIC: constants that name data the synthetic cache does not have (session ids);
- SKIPPED: cells that need something not here (scikit-learn, IPython magics), with the reason.
"""
# ---- cell 0
import os

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt

import neuropixels_dask as npd  # PORT: was `from allensdk...ecephys_project_cache import EcephysProjectCache`
# ---- cell 1
# Example cache directory path, it determines where downloaded data will be stored
output_dir = '/local1/ecephys_cache_dir/'
# ---- cell 2
# this path determines where downloaded data will be stored
manifest_path = os.path.join(output_dir, "manifest.json")

cache = npd.open_cache()  # PORT: was EcephysProjectCache.from_warehouse(manifest=manifest_path)

print(cache.get_all_session_types())
# ---- cell 3
sessions = cache.get_session_table()
brain_observatory_type_sessions = sessions[sessions["session_type"] == "brain_observatory_1.1"]
brain_observatory_type_sessions.tail()
# ---- cell 4
session_id = int(sessions.index[-1])  # SYNTHETIC: was 791319847
session = cache.get_session_data(session_id)
# ---- cell 5
session.metadata
# ---- cell 6
session.structurewise_unit_counts
# ---- cell 7
presentations = session.get_stimulus_table("flashes")
units = session.units[session.units["ecephys_structure_acronym"] == 'VISp']

time_step = 0.01
time_bins = np.arange(-0.1, 0.5 + time_step, time_step)

histograms = session.presentationwise_spike_counts(
    stimulus_presentation_ids=presentations.index.values,  
    bin_edges=time_bins,
    unit_ids=units.index.values
)

histograms.coords
# ---- cell 8
mean_histograms = histograms.mean(dim="stimulus_presentation_id")

fig, ax = plt.subplots(figsize=(8, 8))
ax.pcolormesh(
    mean_histograms["time_relative_to_stimulus_onset"], 
    np.arange(mean_histograms["unit_id"].size),
    mean_histograms.T, 
    vmin=0,
    vmax=1
)

ax.set_ylabel("unit", fontsize=24)
ax.set_xlabel("time relative to stimulus onset (s)", fontsize=24)
ax.set_title("peristimulus time histograms for VISp units on flash presentations", fontsize=24)

plt.show()
# ---- cell 9
scene_presentations = session.get_stimulus_table("natural_scenes")
visp_units = session.units[session.units["ecephys_structure_acronym"] == "VISp"]

spikes = session.presentationwise_spike_times(
    stimulus_presentation_ids=scene_presentations.index.values,
    unit_ids=visp_units.index.values[:]
)

spikes
# ---- cell 10
spikes["count"] = np.zeros(spikes.shape[0])
spikes = spikes.groupby(["stimulus_presentation_id", "unit_id"]).count()

design = pd.pivot_table(
    spikes, 
    values="count", 
    index="stimulus_presentation_id", 
    columns="unit_id", 
    fill_value=0.0,
    aggfunc=np.sum
)

design
# ---- cell 11
targets = scene_presentations.loc[design.index.values, "frame"]
targets
# ---- cell 12: SKIPPED (`!pip install scikit-learn` and its imports: not part of this environment)
# ---- cell 13
design_arr = design.values.astype(float)
targets_arr = targets.values.astype(int)

labels = np.unique(targets_arr)
# ---- cells 14-16: SKIPPED (the scikit-learn SVM decoder and its confusion matrix)
# ---- cell 17
best = labels[0]  # SYNTHETIC: was labels[np.argmax(np.diag(mean_confusion))] (cells 14-16)
worst = labels[-1]  # SYNTHETIC: was labels[np.argmin(np.diag(mean_confusion))]

fig, ax = plt.subplots(1, 2, figsize=(16, 8))

best_image = cache.get_natural_scene_template(best)
ax[0].imshow(best_image, cmap=plt.cm.gray)
ax[0].set_title("most decodable", fontsize=24)

worst_image = cache.get_natural_scene_template(worst)
ax[1].imshow(worst_image, cmap=plt.cm.gray)
ax[1].set_title("least decodable", fontsize=24)


plt.show()
