"""Row 6's AllenSDK side, run by AllenSDK 2.16.2 itself in its own environment.

AllenSDK pins numpy 1.23 / pandas 1.5, so it cannot be imported next to this package; it lives in
``.tools/allensdk`` (``scripts/install-allensdk.sh``) and row 6 runs this file there, as a
subprocess, on the session file it has just downloaded, the way AllenSDK's cache would have.
Only the work after the imports is timed: a notebook user pays the imports once per kernel.

Usage (inside that environment)::

    python allensdk_side.py SESSION.nwb PRESENTATION_IDS.npy UNIT_IDS.npy BIN_EDGES.npy OUT.npy

saves the counts (presentations × bins × units) to ``OUT.npy`` and prints one JSON line:
``{"import_s": …, "load_s": …, "count_s": …, "peak_bytes": …}`` (peak resident memory above the
level after the imports).
"""

import json
import sys
import time
import warnings

T0 = time.perf_counter()
warnings.simplefilter("ignore")

import numpy as np  # noqa: E402
from allensdk.brain_observatory.ecephys.ecephys_session import EcephysSession  # noqa: E402
from allensdk.brain_observatory.ecephys.ecephys_session_api import (  # noqa: E402
    EcephysNwbSessionApi,
)


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main(argv: list[str]) -> None:
    path, ids_path, unit_path, edges_path, out = argv
    imports = time.perf_counter() - T0
    ids, unit_ids, bin_edges = np.load(ids_path), np.load(unit_path), np.load(edges_path)
    base = _status_bytes("VmRSS")
    t = time.perf_counter()
    # what EcephysSessionCache.get_session_data(sid) does once the file is on disk; then the
    # two tables the counts need (both lazy in EcephysSession: loaded here, timed as loading)
    api = EcephysNwbSessionApi(path=path, probe_lfp_paths={})
    session = EcephysSession(api=api)
    _ = session.stimulus_presentations
    _ = session.spike_times
    load = time.perf_counter() - t
    t = time.perf_counter()
    counts = session.presentationwise_spike_counts(bin_edges, ids, unit_ids)
    count = time.perf_counter() - t
    hwm = _status_bytes("VmHWM")
    np.save(out, np.asarray(counts.values))
    peak = None if base is None or hwm is None else max(0, hwm - base)
    print(json.dumps({"import_s": imports, "load_s": load, "count_s": count,
                      "peak_bytes": peak}))


if __name__ == "__main__":
    main(sys.argv[1:])
