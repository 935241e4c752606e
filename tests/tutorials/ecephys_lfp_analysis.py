# ruff: noqa
"""AllenSDK's "LFP Analysis" tutorial, ported.

Source: AllenInstitute/AllenSDK, doc_template/examples_root/examples/nb/ecephys_lfp_analysis.ipynb
(commit 1bdca3ad8), code cells in order, Copyright Allen Institute for Brain Science, AllenSDK
license (https://github.com/AllenInstitute/AllenSDK/blob/master/LICENSE.txt).

Changed, and why (tests/test_allensdk_tutorials.py runs this against the synthetic cache):
- PORT: the import and the cache construction (the one change a real port needs);
- SYNTHETIC: constants that name data the synthetic cache does not have (probeE, times after
  500 s, units above 10 Hz with a 0.95 hit rate);
- NEWER SCIPY: ``scipy.ndimage.filters`` is gone from SciPy ≥ 1.14; ``scipy.ndimage`` has it.
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
manifest_path = os.path.join(output_dir, "manifest.json")

cache = npd.open_cache()  # PORT: was EcephysProjectCache.from_warehouse(manifest=manifest_path)
# ---- cell 3
sessions = cache.get_session_table()

session = cache.get_session_data(sessions.index.values[0])
# ---- cell 4
session.probes
# ---- cell 5
probes = cache.get_probes()

print('Fraction of probes with LFP: ' + str(np.around( np.sum(probes.has_lfp_data) / len(probes), 3) ) )
print(' ')
print('Sessions with missing LFP files: ' + str(list(probes[~probes.has_lfp_data].ecephys_session_id.unique())))
# ---- cell 6
session.channels.keys()
# ---- cell 7
plt.rcParams.update({'font.size': 14})

x_coords = session.channels.left_right_ccf_coordinate
y_coords = session.channels.anterior_posterior_ccf_coordinate
color = session.channels.probe_vertical_position

plt.figure(figsize=(8,8))
_ = plt.scatter(-x_coords[x_coords > 0], -y_coords[x_coords > 0], c=color[x_coords > 0], cmap='inferno')
_ = plt.xlabel('<<  lateral    ---    medial  >>')
_ = plt.ylabel('<<  posterior    ---    anterior  >>')
# ---- cell 8
session.probes.loc[np.unique(session.channels.probe_id.values[x_coords > 0])].description.values
# ---- cell 9
{session.probes.loc[probe_id].description : 
     list(session.channels[session.channels.probe_id == probe_id].ecephys_structure_acronym.unique())
     for probe_id in session.probes.index.values}
# ---- cell 10
probe_id = session.probes[session.probes.description == 'probeA'].index.values[0]  # SYNTHETIC: was 'probeE'

lfp = session.get_lfp(probe_id)
# ---- cell 11
lfp
# ---- cell 12
lfp_slice = lfp.sel(time=slice(100,101))

lfp_slice
# ---- cell 13
plt.figure(figsize=(10,2))
_ = plt.plot(lfp_slice.time, lfp_slice.sel(channel=lfp_slice.channel[10]))
plt.xlabel('Time (s)')
plt.ylabel('LFP (V)')
# ---- cell 14
plt.figure(figsize=(8,8))
im = plt.imshow(lfp_slice.T,aspect='auto',origin='lower',vmin=-1e-3, vmax=1e-3)
_ = plt.colorbar(im, fraction=0.036, pad=0.04)
_ = plt.xlabel('Sample number')
_ = plt.ylabel('Channel index')
# ---- cell 15
channel_ids = session.channels[(session.channels.probe_id == probe_id) & \
                 (session.channels.ecephys_structure_acronym.isin(['CA1','CA3','DG']))].index.values

lfp_slice2 = lfp_slice.sel(channel=slice(np.min(channel_ids), np.max(channel_ids)))

plt.figure(figsize=(8,4))
im = plt.imshow(lfp_slice2.T,aspect='auto',origin='lower',vmin=-1e-3, vmax=1e-3)
_ = plt.colorbar(im, fraction=0.036, pad=0.04)
_ = plt.xlabel('Sample number')
_ = plt.ylabel('Channel index')
# ---- cell 16
presentation_table = session.stimulus_presentations[session.stimulus_presentations.stimulus_name == 'flashes']

presentation_times = presentation_table.start_time.values
presentation_ids = presentation_table.index.values
# ---- cell 17
trial_window = np.arange(-0.5, 0.5, 1/500)
time_selection = np.concatenate([trial_window + t for t in presentation_times])

inds = pd.MultiIndex.from_product((presentation_ids, trial_window), 
                                  names=('presentation_id', 'time_from_presentation_onset'))

ds = lfp.sel(time = time_selection, method='nearest').to_dataset(name = 'aligned_lfp')
ds = ds.assign(time=inds).unstack('time')

aligned_lfp = ds['aligned_lfp']
# ---- cell 18
plt.figure(figsize=(8,6))
im = plt.imshow(aligned_lfp.mean(dim='presentation_id'), aspect='auto', origin='lower', vmin=-1e-4, vmax=1e-4)
_ = plt.colorbar(im, fraction=0.036, pad=0.04)
_ = plt.xlabel('Sample number')
_ = plt.ylabel('Channel index')
# ---- cell 19
units_of_interest = session.units[(session.units.probe_id == probe_id) &
                                  (session.units.ecephys_structure_acronym.str.find('VIS') > -1) &
                                  (session.units.firing_rate > 1) &  # SYNTHETIC: was > 10
                                  (session.units.nn_hit_rate > 0.5)]  # SYNTHETIC: was > 0.95
                                  
len(units_of_interest)
# ---- cell 20
unit_id = units_of_interest.index.values[0]

channel_index = units_of_interest.loc[unit_id].probe_channel_number

channel_index
# ---- cell 21
channel_id = session.channels[(session.channels.probe_channel_number == channel_index) & 
                              (session.channels.probe_id == probe_id)].index.values[0]

channel_id
# ---- cell 22
start_time = 50  # SYNTHETIC: was 500 (the synthetic session is two minutes long)
end_time = 60  # SYNTHETIC: was 510

spike_times = session.spike_times[unit_id]

times_in_range = spike_times[(spike_times > start_time) & (spike_times < end_time)]

lfp_data = lfp.sel(time = slice(start_time, end_time))
lfp_data = lfp_data.sel(channel = channel_id, method='nearest')
# ---- cell 23
_ = plt.plot(lfp_data.time, lfp_data)
_ = plt.plot(times_in_range, np.ones(times_in_range.shape)*3e-4, '.r')
_ = plt.xlabel('Time (s)')
_ = plt.ylabel('LFP (V)')
# ---- cell 24
csd = session.get_current_source_density(probe_id)
csd
# ---- cell 25
from scipy.ndimage import gaussian_filter  # NEWER SCIPY: was scipy.ndimage.filters

_ = plt.figure(figsize=(10,10))

filtered_csd = gaussian_filter(csd.data, sigma=(5,1))

fig, ax = plt.subplots(figsize=(6, 6))

_ = ax.pcolor(csd["time"], csd["vertical_position"], filtered_csd, vmin=-3e4, vmax=3e4)

_ = ax.set_xlabel("time relative to stimulus onset (s)")
_ = ax.set_ylabel("vertical position (um)")
# ---- cell 26
list(session.channels[(session.channels.probe_id == probe_id) &
                 (session.channels.probe_vertical_position > 700) &
                 (session.channels.probe_vertical_position < 1200)].ecephys_structure_acronym.unique())
