# ruff: noqa
"""AllenSDK's "Receptive Field Mapping" tutorial, ported.

Source: AllenInstitute/AllenSDK, doc_template/examples_root/examples/nb/ecephys_receptive_fields.ipynb
(commit 1bdca3ad8), code cells in order, Copyright Allen Institute for Brain Science, AllenSDK
license (https://github.com/AllenInstitute/AllenSDK/blob/master/LICENSE.txt).

Changed, and why (tests/test_allensdk_tutorials.py runs this against the synthetic cache):
- PORT: the imports (``neuropixels_dask`` and its ``stimulus_analysis.ReceptiveFieldMapping``) and
  the cache construction (the changes a real port needs);
- SYNTHETIC: the session index (the synthetic cache has two sessions, the release 58), the unit
  index (one VISp unit of the tiny session passes the default filters) and the count of Gabor
  repeats (the tiny cache shows each position once, at one orientation);
- NOTEBOOK: ``%matplotlib inline`` is a notebook magic, not Python.
"""
# ---- cell 1
import os

import numpy as np

import matplotlib.pyplot as plt
# NOTEBOOK: %matplotlib inline

import neuropixels_dask as npd  # PORT: was `from allensdk...ecephys_project_cache import EcephysProjectCache`
# ---- cell 3
# Example cache directory path, it determines where downloaded data will be stored
output_dir = '/local1/ecephys_cache_dir/'
# ---- cell 4
manifest_path = os.path.join(output_dir, "manifest.json")

cache = npd.open_cache()  # PORT: was EcephysProjectCache.from_warehouse(manifest=manifest_path)
# ---- cell 6
sessions = cache.get_session_table()

session = cache.get_session_data(sessions.index.values[0])  # SYNTHETIC: was sessions.index.values[20]
# ---- cell 9
rf_stim_table = session.stimulus_presentations[session.stimulus_presentations.stimulus_name == 'gabors']

len(rf_stim_table)
# ---- cell 11
keys = rf_stim_table.keys()
[key for key in keys if len(np.unique(rf_stim_table[key])) > 1]
# ---- cell 13
print('Unique orientations : ' + str(list(np.sort(rf_stim_table.orientation.unique()))))
print('Unique x positions : ' + str(list(np.sort(rf_stim_table.x_position.unique()))))
print('Unique y positions : ' + str(list(np.sort(rf_stim_table.y_position.unique()))))
# ---- cell 15
len(rf_stim_table) / (1 * 9 * 9)  # SYNTHETIC: was (3 * 9 * 9): one orientation on the tiny cache
# ---- cell 17
len(rf_stim_table) / len(np.unique(rf_stim_table.stimulus_condition_id))
# ---- cell 19
print('Spatial frequency: ' + str(rf_stim_table.spatial_frequency.unique()[0]))
print('Temporal frequency: ' + str(rf_stim_table.temporal_frequency.unique()[0]))
print('Size: ' + str(rf_stim_table['size'].unique()[0]))
print('Contrast: ' + str(rf_stim_table['contrast'].unique()[0]))
# ---- cell 21
rf_stim_table.keys()
# ---- cell 24
from neuropixels_dask.stimulus_analysis import ReceptiveFieldMapping  # PORT: was `from allensdk...receptive_field_mapping import ReceptiveFieldMapping`

rf_mapping = ReceptiveFieldMapping(session)
# ---- cell 26
rf_mapping.stim_table
# ---- cell 28
v1_units = session.units[session.units.ecephys_structure_acronym == 'VISp']
# ---- cell 30
RF = rf_mapping.get_receptive_field(v1_units.index.values[0])  # SYNTHETIC: was values[3] (one VISp unit passes the filters)
# ---- cell 32
plt.figure(figsize=(5,5))
_ = plt.imshow(RF)
_ = plt.axis('off')
# ---- cell 34
def plot_rf(unit_id, index):
    RF = rf_mapping.get_receptive_field(unit_id)
    _ = plt.subplot(6,10,index+1)
    _ = plt.imshow(RF)
    _ = plt.axis('off')
    
_ = plt.figure(figsize=(10,6))
_ = [plot_rf(RF, index) for index, RF in enumerate(v1_units.index.values)]
