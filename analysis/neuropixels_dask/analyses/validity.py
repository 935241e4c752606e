"""Invalid times, as AllenSDK scopes them, for the analyses to leave out.

A session's ``invalid_times`` table (``/intervals/invalid_times``) tags each interval with its
scope (AllenSDK ``EcephysSession.get_invalid_times``): ``"all_probes"`` (every probe's spikes and
LFP), a probe's name such as ``"probeA"`` (that probe only), or ``"stimulus"`` (the stimulus
display failed: every stimulus-locked analysis). AllenSDK masks LFP with the first two
(``get_lfp(mask_invalid_intervals=True)``) and renames presentations overlapping the third
``"invalid_presentation"``. Each analysis here drops what overlaps the intervals of its scope and
reports how much it dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

ALL_PROBES = "all_probes"
STIMULUS = "stimulus"


def _tags(value) -> set[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return set()
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return {t.strip().strip("'\"[] ") for t in value.replace(";", ",").split(",")} - {""}
    return {t.decode() if isinstance(t, bytes) else str(t) for t in value}


def invalid_intervals(session, probes: Iterable[str] = (), stimulus: bool = True) -> np.ndarray:
    """``(k, 2)`` start/stop (s) of the session's invalid intervals that concern data of
    ``probes`` (names, e.g. ``"probeA"``: those tagged ``all_probes`` or with one of them) and,
    with ``stimulus``, those tagged ``stimulus``."""
    return scoped(session.invalid_times, probes, stimulus)


def scoped(table: pd.DataFrame | None, probes: Iterable[str] = (), stimulus: bool = True
           ) -> np.ndarray:
    """:func:`invalid_intervals` of an ``invalid_times`` table. A table without ``tags`` (a
    reader that does not return them) is taken as concerning everything: left out, not kept."""
    if table is None or len(table) == 0:
        return np.zeros((0, 2))
    scope = {ALL_PROBES, *map(str, probes)} | ({STIMULUS} if stimulus else set())
    tags = table["tags"] if "tags" in table else pd.Series([scope] * len(table))
    keep = np.array([bool(_tags(t) & scope) for t in tags], dtype=bool)
    rows = table[keep]
    return rows[["start_time", "stop_time"]].to_numpy(np.float64).reshape(-1, 2)


def probe_names(unit_table: pd.DataFrame) -> np.ndarray:
    """Probe name of each unit (``probe_description``)."""
    return unit_table["probe_description"].astype(str).to_numpy(object)


def overlapping(starts: np.ndarray, stops: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """Which windows ``[start, stop]`` overlap one of ``intervals`` (closed on both sides, as
    AllenSDK's ``_overlap``), as a boolean array."""
    starts = np.asarray(starts, dtype=np.float64)
    stops = np.asarray(stops, dtype=np.float64)
    out = np.zeros(starts.shape, dtype=bool)
    for a, b in np.asarray(intervals, dtype=np.float64).reshape(-1, 2):
        out |= (starts <= b) & (stops >= a)
    return out


def invalid_trials(session, unit_table: pd.DataFrame, starts: np.ndarray,
                   stops: np.ndarray) -> np.ndarray:
    """``(n_trials, n_units)`` bool: the trial window overlaps an invalid interval that concerns
    that unit's probe, or one tagged ``stimulus``."""
    names = probe_names(unit_table)
    out = np.zeros((len(starts), len(names)), dtype=bool)
    for name in pd.unique(names):
        bad = overlapping(starts, stops, invalid_intervals(session, [name], stimulus=True))
        out[:, names == name] = bad[:, None]
    return out


def _union(intervals) -> np.ndarray:
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    out: list[list[float]] = []
    for a, b in iv.tolist():
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        elif b > a:
            out.append([a, b])
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def overlap_s(intervals, invalid, span: tuple[float, float]) -> float:
    """Seconds of ``intervals`` (``(k, 2)`` start/stop) within ``span`` that ``invalid``
    intervals cover: what an analysis reports as left out."""
    a, b = _union(intervals), _union(invalid)
    total = 0.0
    for s0, s1 in a.tolist():
        for c0, c1 in b.tolist():
            lo, hi = max(s0, c0, span[0]), min(s1, c1, span[1])
            total += max(0.0, hi - lo)
    return total
