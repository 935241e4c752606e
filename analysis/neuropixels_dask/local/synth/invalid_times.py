"""The invalid intervals of a synthetic session, as the Allen files record them.

The real session files carry ``/intervals/invalid_times``: one row per interval with
``start_time``, ``stop_time`` and ``tags = [scope, scope_id, label]`` (AllenSDK's
``write_nwb.add_invalid_times``), where scope is ``EcephysSession`` or ``EcephysProbe`` and label
``all_probes`` (gain fluctuations: every probe affected), ``stimulus`` (long frames: stimulus-locked
analyses invalid) or a probe name (that probe stopped sending data). AllenSDK applies them by tag:
``get_lfp`` masks the intervals tagged ``all_probes`` or the probe's name, stimulus presentations
overlapping a ``stimulus`` interval become ``invalid_presentation``.

The generator plants one interval of each kind in the last session of a cache (so the first
session, which most tests read, stays without), at fixed places in its stimulus schedule. The data
inside them are corrupted as the labels say (see ``generate.py``), so an analysis that does not skip
them is measurably wrong.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .layout import ProbeLayout

#: Length (s) of the planted ``all_probes`` and probe intervals.
INTERVAL_S = 2.0


def plant(session_id: int, probes: list[ProbeLayout],
          tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The session's invalid intervals: ``start_time``, ``stop_time``, ``tags`` (list of str).

    * ``all_probes``: 2 s starting 1 s into the third drifting-grating trial;
    * the second probe (or the only one) stops for 2 s in the first spontaneous block;
    * ``stimulus``: from mid third to mid fourth natural-scene presentation (two presentations).
    """
    dg = tables["drifting_gratings"].sort_values("start_time")
    spont = tables["spontaneous"].sort_values("start_time")
    ns = tables["natural_scenes"].sort_values("start_time")
    probe = probes[min(1, len(probes) - 1)]
    t_gain = float(dg["start_time"].iloc[min(2, len(dg) - 1)]) + 1.0
    t_probe = float(spont["start_time"].iloc[0]) + 3.0
    k = min(2, len(ns) - 2)
    ns_a, ns_b = ns.iloc[k], ns.iloc[k + 1]
    rows = [
        (t_probe, t_probe + INTERVAL_S, ["EcephysProbe", str(probe.probe_id), probe.name]),
        (t_gain, t_gain + INTERVAL_S, ["EcephysSession", str(session_id), "all_probes"]),
        (float(ns_a["start_time"] + ns_a["stop_time"]) / 2,
         float(ns_b["start_time"] + ns_b["stop_time"]) / 2,
         ["EcephysSession", str(session_id), "stimulus"]),
    ]
    out = pd.DataFrame(rows, columns=["start_time", "stop_time", "tags"])
    out.index.name = "id"
    return out


def probe_intervals(invalid: pd.DataFrame | None,
                    probe: ProbeLayout) -> list[tuple[float, float, str]]:
    """``(start, stop, label)`` of the intervals during which ``probe``'s data are bad: those
    tagged ``all_probes`` or with its own name (the tags AllenSDK's ``get_lfp`` masks)."""
    if invalid is None or invalid.empty:
        return []
    out = []
    for a, b, tags in invalid.itertuples(index=False):
        for label in ("all_probes", probe.name):
            if label in tags:
                out.append((float(a), float(b), label))
    return out


def spike_mask(times: np.ndarray, intervals: list[tuple[float, float, str]],
               rng: np.random.Generator) -> np.ndarray:
    """Which spikes survive the intervals: none while the probe sends no data, about half during
    ``all_probes`` gain fluctuations (missed spikes)."""
    keep = np.ones(times.size, bool)
    for a, b, label in intervals:
        inside = (times >= a) & (times <= b)
        if label == "all_probes":
            inside &= rng.random(times.size) < 0.5
        keep &= ~inside
    return keep


def lfp_corruption(intervals: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """What the LFP does in each interval: ``'saturate'`` (gain fluctuations) or ``'flat'`` (the
    probe sent nothing; the samples read as zero)."""
    return [(a, b, "saturate" if label == "all_probes" else "flat") for a, b, label in intervals]
