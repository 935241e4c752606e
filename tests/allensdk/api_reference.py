"""Run inside the AllenSDK 2.16.2 environment: open a cache folder with AllenSDK's own
``EcephysProjectCache`` (as a user of a downloaded cache does) and record what every public method
and property of it and of its ``EcephysSession`` returns, for ``tests/test_allensdk_api_parity.py``
to compare with ``neuropixels_dask`` on the same files.

Usage: python api_reference.py CACHE_FOLDER OUT_FILE [SESSION_ID ...]   (default: every session)

``OUT_FILE`` is a pickle (protocol 4) of ``{"names": {...}, "results": {key: record}}``:
- ``names``: the public names of AllenSDK's two classes (``dir()`` of the installed classes, plus
  the attributes an instance sets in ``__init__``), for the coverage test;
- a record is ``("value", obj)`` or ``("error", exception type name, message)``. DataFrames and
  Series are kept as they are (pandas reads pandas 1.5 pickles); xarray objects, whose pickles do
  not travel between versions, become ``("xarray", {"name", "dims", "values", "coords"})``.
"""

import os
import pickle
import sys
import time
import warnings

warnings.simplefilter("ignore")

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from allensdk.brain_observatory.ecephys.ecephys_project_api import (  # noqa: E402
    EcephysProjectFixedApi,
)
from allensdk.brain_observatory.ecephys.ecephys_project_cache import (  # noqa: E402
    EcephysProjectCache,
)
from allensdk.brain_observatory.ecephys.ecephys_session import EcephysSession  # noqa: E402

folder, out_file = sys.argv[1], sys.argv[2]


def plain(obj):
    """``obj`` in a form that unpickles under another xarray version."""
    if isinstance(obj, xr.DataArray):
        return ("xarray", {"name": obj.name, "dims": obj.dims, "values": np.asarray(obj.values),
                           "coords": {k: (v.dims, np.asarray(v.values))
                                      for k, v in obj.coords.items()}})
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    return obj


results = {}


def record(key, fn):
    t0 = time.perf_counter()
    try:
        results[key] = ("value", plain(fn()))
    except Exception as exc:  # noqa: BLE001 - the error is the result
        results[key] = ("error", type(exc).__name__, str(exc))
    if os.environ.get("API_REFERENCE_TIMES"):
        print(f"{time.perf_counter() - t0:7.2f} s  {key}", file=sys.stderr)


# AllenSDK 2.16's EcephysProjectCache.fixed() fails (AttributeError: no rma_engine); this is what
# it means to do: the local files only, never a download
cache = EcephysProjectCache(fetch_api=EcephysProjectFixedApi(),
                            stream_writer=lambda *a, **k: None,
                            manifest=os.path.join(folder, "manifest.json"))

record("cache.get_session_table()", cache.get_session_table)
record("cache.get_session_table(suppress=[])", lambda: cache.get_session_table(suppress=[]))
record("cache.get_probes()", cache.get_probes)
record("cache.get_channels()", cache.get_channels)
record("cache.get_units()", cache.get_units)
record("cache.get_units(unfiltered)", lambda: cache.get_units(
    amplitude_cutoff_maximum=np.inf, presence_ratio_minimum=-np.inf,
    isi_violations_maximum=np.inf))
record("cache.get_all_session_types()", cache.get_all_session_types)
record("cache.get_all_full_genotypes()", cache.get_all_full_genotypes)
record("cache.get_all_ages()", cache.get_all_ages)
record("cache.get_all_sexes()", cache.get_all_sexes)
record("cache.get_structure_acronyms()", cache.get_structure_acronyms)
for constant in ("SESSIONS_KEY", "PROBES_KEY", "CHANNELS_KEY", "UNITS_KEY", "SUPPRESS_FROM_UNITS",
                 "SUPPRESS_FROM_CHANNELS", "SUPPRESS_FROM_PROBES", "SUPPRESS_FROM_SESSION_TABLE"):
    record(f"cache.{constant}", lambda constant=constant: getattr(cache, constant))

sessions = cache.get_session_table()
session_ids = [int(a) for a in sys.argv[3:]] or [int(s) for s in sessions.index]
def record_session(sid):
    s = cache.get_session_data(sid)
    p = f"session[{sid}]."
    for name in ("ecephys_session_id", "session_start_time", "units", "probes", "channels",
                 "metadata", "specimen_name", "age_in_days", "sex", "full_genotype",
                 "session_type", "rig_equipment_name", "rig_geometry_data", "num_units",
                 "num_probes", "num_channels", "num_stimulus_presentations", "stimulus_names",
                 "stimulus_conditions", "stimulus_presentations", "structure_acronyms",
                 "structurewise_unit_counts", "inter_presentation_intervals", "invalid_times",
                 "running_speed", "DETAILED_STIMULUS_PARAMETERS"):
        record(p + name, lambda name=name: getattr(s, name))
    record(p + "get_invalid_times()", s.get_invalid_times)
    record(p + "get_stimulus_epochs()", s.get_stimulus_epochs)
    record(p + "get_stimulus_epochs({})", lambda: s.get_stimulus_epochs({}))
    record(p + "get_stimulus_table()", s.get_stimulus_table)
    record(p + "get_stimulus_table(detailed,unused)", lambda: s.get_stimulus_table(
        include_detailed_parameters=True, include_unused_parameters=True))
    names = [n for n in s.stimulus_names if n != "invalid_presentation"]
    for stim in names:
        record(p + f"get_stimulus_table({stim!r})", lambda stim=stim: s.get_stimulus_table(stim))
        record(p + f"get_parameter_values_for_stimulus({stim!r})",
               lambda stim=stim: s.get_parameter_values_for_stimulus(stim))
        record(p + f"get_parameter_values_for_stimulus({stim!r},drop_nulls=False)",
               lambda stim=stim: s.get_parameter_values_for_stimulus(stim, drop_nulls=False))
    record(p + "get_inter_presentation_intervals_for_stimulus('flashes')",
           lambda: s.get_inter_presentation_intervals_for_stimulus("flashes"))
    record(p + "get_inter_presentation_intervals_for_stimulus(['flashes','drifting_gratings'])",
           lambda: s.get_inter_presentation_intervals_for_stimulus(
               ["flashes", "drifting_gratings"]))
    record(p + "get_stimulus_parameter_values()", s.get_stimulus_parameter_values)
    record(p + "get_stimulus_parameter_values(first 20,drop_nulls=False)",
           lambda: s.get_stimulus_parameter_values(s.stimulus_presentations.index[:20],
                                                   drop_nulls=False))
    for pid in s.probes.index:
        ch = s.channels[s.channels["probe_id"] == pid].index.values
        record(p + f"channel_structure_intervals(probe {pid})",
               lambda ch=ch: s.channel_structure_intervals(ch))
        record(p + f"channel_structure_intervals(probe {pid} reversed)",
               lambda ch=ch: s.channel_structure_intervals(ch[::-1]))
    for pid in s.probes.index[s.probes["has_lfp_data"]]:
        record(p + f"get_lfp({pid})", lambda pid=pid: s.get_lfp(pid))
    pid = s.probes.index[s.probes["has_lfp_data"]][0]
    record(p + f"get_lfp({pid},mask_invalid_intervals=False)",
           lambda pid=pid: s.get_lfp(pid, mask_invalid_intervals=False))
    uids = s.units.index.values
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.spike_times  # noqa: B018 - the first access warns about invalid intervals
    results[p + "spike_times warnings"] = ("value", [str(w.message) for w in caught
                                                     if "invalid" in str(w.message)])
    record(p + "spike_times(first 5)", lambda: {int(u): s.spike_times[u] for u in uids[:5]})
    record(p + "spike_times(keys)", lambda: sorted(int(u) for u in s.spike_times))
    flashes = s.get_stimulus_table("flashes").index.values
    edges = np.linspace(-0.05, 0.25, 7)
    record(p + "presentationwise_spike_counts(flashes)",
           lambda: s.presentationwise_spike_counts(edges, flashes, uids))
    record(p + "presentationwise_spike_times(flashes)",
           lambda: s.presentationwise_spike_times(flashes, uids))
    record(p + "conditionwise_spike_statistics(flashes)",
           lambda: s.conditionwise_spike_statistics(flashes, uids))
    return s


for sid in session_ids:
    s = record_session(sid)

names = {
    "EcephysProjectCache": sorted(n for n in dir(EcephysProjectCache) if not n.startswith("_")),
    "EcephysSession": sorted(set(n for n in dir(EcephysSession) if not n.startswith("_"))
                             | set(n for n in vars(s) if not n.startswith("_"))),
}
with open(out_file, "wb") as f:
    pickle.dump({"names": names, "session_ids": session_ids, "results": results}, f, protocol=4)
print("ok")
