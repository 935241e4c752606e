# ruff: noqa
"""AllenSDK's "Accessing Neuropixels Visual Coding Data" tutorial, ported.

Source: AllenInstitute/AllenSDK, doc_template/examples_root/examples/nb/ecephys_data_access.ipynb
(commit 1bdca3ad8), code cells in order, Copyright Allen Institute for Brain Science, AllenSDK
license (https://github.com/AllenInstitute/AllenSDK/blob/master/LICENSE.txt).

Changed, and why (tests/test_allensdk_tutorials.py runs this against the synthetic cache):
- PORT: the import and the cache construction (the one change a real port needs);
- SYNTHETIC: constants that name data the synthetic cache does not have;
- SKIPPED: cells that need something not here (downloads from api.brain-map.org);
- NEWER PANDAS: pandas ≥ 2 refuses ``Series & list``; the list is wrapped in ``np.array``.
"""
# ---- cell 0
import os
import shutil
import numpy as np
import pandas as pd

import neuropixels_dask as npd  # PORT: was `from allensdk...ecephys_project_cache import EcephysProjectCache`
# ---- cell 1
output_dir = '/local1/ecephys_cache_dir' # must be updated to a valid directory in your filesystem
DOWNLOAD_COMPLETE_DATASET = True
# ---- cell 2
manifest_path = os.path.join(output_dir, "manifest.json")
# ---- cell 3
cache = npd.open_cache()  # PORT: was EcephysProjectCache.from_warehouse(manifest=manifest_path)
# ---- cell 4
sessions = cache.get_session_table()

print('Total number of sessions: ' + str(len(sessions)))

sessions.head()
# ---- cell 5
filtered_sessions = sessions[(sessions.sex == 'M') & \
                             (sessions.full_genotype.str.find('Sst') > -1) & \
                             (sessions.session_type == 'brain_observatory_1.1') & \
                             (np.array(['VISl' in acronyms for acronyms in  # NEWER PANDAS: a list needs np.array
                               sessions.ecephys_structure_acronyms]))]

filtered_sessions.head()
# ---- cell 6
probes = cache.get_probes()

print('Total number of probes: ' + str(len(probes)))

probes.head()
# ---- cell 7
channels = cache.get_channels()

print('Total number of channels: ' + str(len(channels)))

channels.head()
# ---- cell 8
units = cache.get_units()

print('Total number of units: ' + str(len(units)))
# ---- cell 9
units = cache.get_units(amplitude_cutoff_maximum = np.inf,
                        presence_ratio_minimum = -np.inf,
                        isi_violations_maximum = np.inf)

print('Total number of units: ' + str(len(units)))
# ---- cell 10 (SYNTHETIC: the synthetic cache has no 'functional_connectivity' session)
analysis_metrics1 = cache.get_unit_analysis_metrics_by_session_type('brain_observatory_1.1')

print(str(len(analysis_metrics1)) + ' units in table 1')
# ---- cell 11 (SYNTHETIC: as cell 10)
analysis_metrics1 = cache.get_unit_analysis_metrics_by_session_type('brain_observatory_1.1', amplitude_cutoff_maximum = np.inf,
                                                          presence_ratio_minimum = -np.inf,
                                                          isi_violations_maximum = np.inf)

all_metrics = pd.concat([analysis_metrics1], sort=False)

print(str(len(all_metrics)) + ' units overall')
# ---- cell 12
session = cache.get_session_data(sessions.index.values[0],  # SYNTHETIC: was filtered_sessions (no male Sst session with VISl here)
                                 isi_violations_maximum = np.inf,
                                 amplitude_cutoff_maximum = np.inf,
                                 presence_ratio_minimum = -np.inf
                                )

print([attr_or_method for attr_or_method in dir(session) if attr_or_method[0] != '_'])
# ---- cell 13
probe_id = session.probes.index.values[0]

lfp = session.get_lfp(probe_id)
# ---- cell 14
if DOWNLOAD_COMPLETE_DATASET:
    for session_id, row in sessions.iterrows():

        truncated_file = True
        directory = os.path.join(output_dir + '/session_' + str(session_id))

        while truncated_file:
            session = cache.get_session_data(session_id)
            try:
                print(session.specimen_name)
                truncated_file = False
            except OSError:
                shutil.rmtree(directory)
                print(" Truncated spikes file, re-downloading")

        for probe_id, probe in session.probes.iterrows():

            print(' ' + probe.description)
            truncated_lfp = True

            while truncated_lfp:
                try:
                    lfp = session.get_lfp(probe_id)
                    truncated_lfp = False
                except OSError:
                    fname = directory + '/probe_' + str(probe_id) + '_lfp.nwb'
                    os.remove(fname)
                    print("  Truncated LFP file, re-downloading")
                except ValueError:
                    print("  LFP file not found.")
                    truncated_lfp = False
# ---- cells 15-20: SKIPPED (a second cache object and download links from api.brain-map.org)
