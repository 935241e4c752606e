"""AllenSDK's derived session tables, as pure functions of the tables a session reads.

Epochs, inter-presentation intervals, stimulus parameter values, structure intervals and the
handling of invalid intervals follow AllenSDK 2.16's ``EcephysSession`` line by line in what they
return (values, index, columns, dtypes), so a notebook written against AllenSDK gets the same
answer here; they are kept apart from ``session.py`` because they read nothing.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from . import allen
from .allen import NULL
from .analyses import validity


def _distinct(left, right) -> bool:
    """AllenSDK's ``is_distinct_from``: a type change is a change; two NaNs are not."""
    if type(left) is not type(right):
        return True
    if pd.isna(left) and pd.isna(right):
        return False
    return bool(left != right)


def nan_intervals(values: Sequence) -> np.ndarray:
    """Start and end indices of the runs of equal values (one longer than the runs), ``NaN``
    equal to ``NaN`` (AllenSDK's ``nan_intervals``)."""
    values = list(values)
    if not values:
        return np.array([0])
    edges = [0]
    for i in range(1, len(values)):
        if _distinct(values[i], values[i - 1]):
            edges.append(i)
    edges.append(len(values))
    return np.unique(edges)


def as_list(value) -> list:
    """A name or a collection of names as a list (AllenSDK's ``coerce_scalar``)."""
    if not isinstance(value, Collection) or isinstance(value, str):
        return [value]
    return list(value)


def stimulus_epochs(presentations: pd.DataFrame,
                    duration_thresholds: dict[str, float] | None = None) -> pd.DataFrame:
    """Continuous runs of one stimulus block; epochs of a name in ``duration_thresholds``
    shorter than its threshold are left out (default: spontaneous activity under 90 s)."""
    if duration_thresholds is None:
        duration_thresholds = dict(allen.DEFAULT_EPOCH_DURATION_THRESHOLDS)
    edges = nan_intervals(presentations["stimulus_block"].to_numpy(object))
    first, last = edges[:-1], edges[1:] - 1
    epochs = pd.DataFrame({
        "start_time": presentations["start_time"].to_numpy()[first],
        "stop_time": presentations["stop_time"].to_numpy()[last],
        "stimulus_name": presentations["stimulus_name"].to_numpy(object)[first],
        "stimulus_block": presentations["stimulus_block"].to_numpy()[first],
    })
    epochs["duration"] = epochs["stop_time"] - epochs["start_time"]
    for name, threshold in duration_thresholds.items():
        epochs = epochs[(epochs["stimulus_name"] != name) | (epochs["duration"] >= threshold)]
    return epochs.loc[:, ["start_time", "stop_time", "duration", "stimulus_name",
                          "stimulus_block"]]


def inter_presentation_intervals(presentations: pd.DataFrame) -> pd.DataFrame:
    """Time from each presentation's end to the next one's start, indexed by the pair
    ``(from_presentation_id, to_presentation_id)``."""
    ids = presentations.index.to_numpy()
    intervals = pd.DataFrame({
        "from_presentation_id": ids[:-1], "to_presentation_id": ids[1:],
        "interval": (presentations["start_time"].to_numpy()[1:]
                     - presentations["stop_time"].to_numpy()[:-1]),
    })
    return intervals.set_index(["from_presentation_id", "to_presentation_id"])


def intervals_between(intervals: pd.DataFrame, presentation_ids) -> pd.DataFrame:
    """The rows of ``intervals`` whose both ends are among ``presentation_ids``."""
    ids = set(np.asarray(presentation_ids).tolist())
    index = intervals.index
    return intervals[index.isin(ids, level="from_presentation_id")
                     & index.isin(ids, level="to_presentation_id")]


def unused_columns(table: pd.DataFrame) -> list[str]:
    """Columns that are all NaN, all empty or all ``'null'`` (AllenSDK's
    ``removed_unused_stimulus_presentation_columns``)."""
    out = []
    for name in table.columns:
        text = table[name].astype(str).to_numpy()
        if table[name].isna().all() or (text == "").all() or (text == NULL).all():
            out.append(name)
    return out


def parameter_values(presentations: pd.DataFrame, drop_nulls: bool = True
                     ) -> dict[str, np.ndarray]:
    """Every stimulus parameter's distinct values among ``presentations``, in order of first
    appearance; ``'null'`` is left out unless ``drop_nulls=False`` (then it comes last)."""
    params = presentations.drop(columns=[*allen.NON_STIMULUS_PARAMETERS, "stimulus_name"],
                                errors="ignore")
    params = params.drop(columns=unused_columns(params))
    out = {}
    for name in params.columns:
        uniques = params[name].unique()
        values = np.array(uniques[uniques != NULL])
        if not drop_nulls and NULL in uniques:
            values = np.concatenate([values, [NULL]])
        out[name] = values
    return out


def invalid_times_tagged(invalid_times: pd.DataFrame, tags: Collection[str]) -> pd.DataFrame:
    """The invalid intervals carrying any of ``tags`` exactly (``["stimulus"]`` for AllenSDK's
    presentation masking; ``analyses.validity`` scopes by probe, ``all_probes`` always
    included)."""
    if invalid_times.empty:
        return invalid_times
    keep = invalid_times["tags"].apply(lambda have: any(t in list(have) for t in tags))
    return invalid_times[keep.astype(bool)]


def mask_invalid_presentations(presentations: pd.DataFrame,
                               invalid_times: pd.DataFrame) -> pd.DataFrame:
    """Presentations overlapping an interval tagged ``stimulus`` become
    ``invalid_presentation``: every other column NaN, start and stop kept (AllenSDK)."""
    bad = invalid_times_tagged(invalid_times, [validity.STIMULUS])
    if bad.empty:
        return presentations
    start = presentations["start_time"].to_numpy()
    stop = presentations["stop_time"].to_numpy()
    hit = np.zeros(len(presentations), dtype=bool)
    for a, b in zip(bad["start_time"], bad["stop_time"], strict=True):
        hit |= np.maximum(start, a) <= np.minimum(stop, b)
    if not hit.any():
        return presentations
    out = presentations.copy()
    for name in out.columns:
        if name in ("start_time", "stop_time"):
            continue
        if out[name].dtype.kind in "iub":
            out[name] = out[name].astype(np.float64)
        elif out[name].dtype.kind not in "fO":
            out[name] = out[name].astype(object)
        out.loc[hit, name] = np.nan
    out.loc[hit, "stimulus_name"] = allen.INVALID_PRESENTATION
    return out


#: a colour written as an RGB triplet (``[1.0, 1.0, 1.0]``), which AllenSDK moves from ``color``
#: to ``color_triplet`` (``color`` keeps the ±1 contrast sign of flashes)
COLOR_TRIPLET = re.compile(r"\[(-{0,1}\d*\.\d*,\s*)*(-{0,1}\d*\.\d*)\]")


def allensdk_stimulus_values(table: pd.DataFrame) -> pd.DataFrame:
    """The concatenated stimulus tables with AllenSDK's values and leading columns.

    As AllenSDK's ``EcephysNwbSessionApi`` / ``EcephysSession`` build them: RGB triplets move from
    ``color`` to a ``color_triplet`` column and the remaining colours are parsed as numbers;
    numeric parameters holding only 0 and 1 are booleans; a missing value or empty text is
    ``'null'``; ``stimulus_block``, ``start_time``, ``stop_time`` come first (AllenSDK orders the
    other columns by a Python set, so their order differs from run to run there; here they keep the
    files' order).
    """
    table = table.copy()
    if "color" in table:
        color = table["color"].astype(object).where(table["color"].notna(), "")
        triplet = color.astype(str).str.match(COLOR_TRIPLET)
        if "color_triplet" not in table:
            table["color_triplet"] = ""
        table.loc[triplet, "color_triplet"] = color[triplet]
        color = color.where(~triplet, "")
        table["color"] = [ast.literal_eval(v) if isinstance(v, str) and v != "" else v
                          for v in color]
    for name in table.columns:
        col = table[name]
        if col.dtype.kind == "f" and not name.endswith("_index") \
                and set(col.dropna().unique()) <= {0.0, 1.0} and col.notna().any():
            table[name] = col.map(lambda v: v if pd.isna(v) else bool(v)).astype(object)
    table = table.astype(object).replace("", NULL).fillna(NULL)
    lead = [c for c in allen.STIMULUS_LEADING_COLUMNS if c in table.columns]
    return table[lead + [c for c in table.columns if c not in lead]]
