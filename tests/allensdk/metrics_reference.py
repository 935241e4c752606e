"""Run inside the AllenSDK 2.16.2 environment: AllenSDK's own drifting-grating metrics and
receptive fields of one synthetic session, and its osi/dsi/threshold_rf functions on given
arrays, for ``tests/test_analyses.py`` to compare with ``neuropixels_dask``.

The metrics come from the methods ``DriftingGratings.metrics`` calls for these columns
(``_get_pref_ori``, ``_get_pref_tf``, ``_get_selectivity``); ``metrics`` itself also computes
running modulation, F1/F0 and more, which the synthetic sessions do not support. The receptive
fields are ``ReceptiveFieldMapping.get_receptive_field`` and ``_get_rf_stats`` (the method its
``metrics`` calls) of every unit.

Usage: python metrics_reference.py SESSION_FOLDER ARRAYS.npz OUT.json
(writes OUT.json per unit and OUT.json.arrays for the arrays)
"""

import json
import os
import sys
import warnings

warnings.simplefilter("ignore")

import numpy as np  # noqa: E402
from allensdk.brain_observatory.ecephys.ecephys_session import EcephysSession  # noqa: E402
from allensdk.brain_observatory.ecephys.ecephys_session_api import (  # noqa: E402
    EcephysNwbSessionApi,
)
from allensdk.brain_observatory.ecephys.stimulus_analysis import (  # noqa: E402
    receptive_field_mapping as rfm,
)
from allensdk.brain_observatory.ecephys.stimulus_analysis.drifting_gratings import (  # noqa: E402
    DriftingGratings,
)
from allensdk.brain_observatory.ecephys.stimulus_analysis.stimulus_analysis import (  # noqa: E402
    deg2rad,
    dsi,
    osi,
)

folder, arrays, out = sys.argv[1], sys.argv[2], sys.argv[3]
sid = int(os.path.basename(folder.rstrip("/")).split("_")[-1])
session = EcephysSession(api=EcephysNwbSessionApi(
    path=os.path.join(folder, f"session_{sid}.nwb"), probe_lfp_paths={}))
dg = DriftingGratings(session)
rows = {}
for unit in dg.unit_ids:
    tf = dg._get_pref_tf(unit)
    rows[int(unit)] = {"pref_ori_dg": float(dg._get_pref_ori(unit)), "pref_tf_dg": float(tf),
                       "g_osi_dg": float(dg._get_selectivity(unit, tf, "osi")),
                       "g_dsi_dg": float(dg._get_selectivity(unit, tf, "dsi"))}
rf_mapping = rfm.ReceptiveFieldMapping(session)
for unit in rf_mapping.unit_ids:
    azimuth, elevation, _, _, area, _, _ = rf_mapping._get_rf_stats(unit)
    rows[int(unit)].update({"azimuth_rf": float(azimuth), "elevation_rf": float(elevation),
                            "area_rf": float(area),
                            "rf_map": rf_mapping.get_receptive_field(unit).tolist()})
with open(out, "w") as f:
    json.dump(rows, f)

a = np.load(arrays)
rad = deg2rad(a["oris"]).astype("complex128")
rf = {"int": [], "float": []}  # AllenSDK's integer maps, and the same maps as float
for m in a["rfs"]:
    for kind, typed in (("int", m), ("float", m.astype(float))):
        _, azimuth, elevation, area = rfm.threshold_rf(typed, 0.5)
        rf[kind].append([rfm.convert_azimuth_to_degrees(azimuth),
                         rfm.convert_elevation_to_degrees(elevation),
                         rfm.convert_pixel_area_to_degrees(area)])
with open(out + ".arrays", "w") as f:
    json.dump({"osi": [float(osi(rad, t)) for t in a["tunings"]],
               "dsi": [float(dsi(rad, t)) for t in a["tunings"]], "rf": rf["int"],
               "rf_float": rf["float"]}, f)
print("ok")
