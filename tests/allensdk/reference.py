"""Run inside the AllenSDK 2.16.2 environment: read one synthetic session with AllenSDK's own
``EcephysNwbSessionApi`` / ``EcephysSession`` and save what it computes, for
``tests/test_allensdk_equivalence.py`` to compare with ``neuropixels_dask``.

Usage: python reference.py SESSION_FOLDER OUT_FOLDER
"""

import glob
import json
import os
import sys
import warnings

warnings.simplefilter("ignore")

import numpy as np  # noqa: E402
import pynwb  # noqa: E402
from allensdk.brain_observatory.ecephys.ecephys_session import EcephysSession  # noqa: E402
from allensdk.brain_observatory.ecephys.ecephys_session_api import (  # noqa: E402
    EcephysNwbSessionApi,
)

folder, out = sys.argv[1], sys.argv[2]
sid = int(os.path.basename(folder.rstrip("/")).split("_")[-1])
lfp_paths = {int(os.path.basename(p).split("_")[1]): p
             for p in glob.glob(os.path.join(folder, "probe_*_lfp.nwb"))}


def opener(path):
    return lambda: pynwb.NWBHDF5IO(path, "r").read()


api = EcephysNwbSessionApi(path=os.path.join(folder, f"session_{sid}.nwb"),
                           probe_lfp_paths={k: opener(v) for k, v in lfp_paths.items()})
s = EcephysSession(api=api)
os.makedirs(out, exist_ok=True)
s.units.to_pickle(os.path.join(out, "units.pkl"), protocol=4)
s.stimulus_presentations.to_pickle(os.path.join(out, "stimulus_presentations.pkl"), protocol=4)
flashes = s.get_stimulus_table("flashes")
edges = np.linspace(-0.05, 0.25, 31)
counts = s.presentationwise_spike_counts(edges, flashes.index.values, s.units.index.values)
np.save(os.path.join(out, "counts.npy"), counts.values)
dg = s.get_stimulus_table("drifting_gratings")
uids = s.units.index.values[:10]
s.presentationwise_spike_times(dg.index.values, uids).to_pickle(
    os.path.join(out, "spike_times_table.pkl"), protocol=4)
s.conditionwise_spike_statistics(dg.index.values, uids).to_pickle(
    os.path.join(out, "conditionwise.pkl"), protocol=4)
np.save(os.path.join(out, "spikes_first_unit.npy"), s.spike_times[uids[0]])
pid = sorted(lfp_paths)[0]
lfp = s.get_lfp(pid)
np.save(os.path.join(out, "lfp.npy"), lfp.values)
np.save(os.path.join(out, "lfp_time.npy"), lfp.time.values)
np.save(os.path.join(out, "lfp_channel.npy"), lfp.channel.values)
with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump({"session_id": sid, "probe_id": pid, "flash_ids": flashes.index.tolist(),
               "dg_ids": dg.index.tolist(), "unit_ids": [int(u) for u in uids],
               "edges": edges.tolist()}, f)
print("ok")
