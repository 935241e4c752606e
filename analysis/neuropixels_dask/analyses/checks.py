"""The user's choices in an analysis call, checked before any graph is built.

Every analysis names its stimuli, units, parameters and options; a wrong one is a named error
(``errors.py``) that lists the valid choices, never a bare pandas/xarray ``KeyError`` from deep
inside, and never an all-NaN result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..allen import NULL
from ..errors import InvalidSelectionError, UnknownUnitError

#: AllenSDK's stimulus name for presentations overlapping an invalid interval
INVALID = "invalid_presentation"


def _listing(valid: Sequence[Any], limit: int = 12) -> str:
    valid = [v.item() if isinstance(v, np.generic) else v for v in valid]
    shown = ", ".join(repr(v) for v in valid[:limit])
    return shown + (f", … ({len(valid)} in all)" if len(valid) > limit else "")


def choice(what: str, value: Any, valid: Sequence[Any]) -> Any:
    """``value`` if it is one of ``valid``, else :class:`InvalidSelectionError` listing them."""
    if value not in valid:
        raise InvalidSelectionError(f"{what}={value!r} is not valid; choose one of "
                                    f"{_listing(valid)}.")
    return value


def stimulus_names(session, names: str | Iterable[str] | None,
                   default: Sequence[str] | None = None) -> list[str]:
    """Checked stimulus names (a misspelled one lists those the session shows). ``None``:
    ``default``, else every stimulus shown but AllenSDK's ``invalid_presentation`` (the
    presentations that overlap an invalid interval)."""
    shown = list(session.stimulus_names)
    if names is None:
        return list(default) if default is not None else [n for n in shown if n != INVALID]
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in shown]
    if unknown:
        raise InvalidSelectionError(
            f"Stimulus {unknown} not shown in session {session.ecephys_session_id}; "
            f"shown: {shown}.")
    return names


def units(session, unit_ids) -> pd.DataFrame:
    """The session's unit table for ``unit_ids`` (None: every unit), unknown ids refused."""
    table = session.units
    if unit_ids is None:
        return table
    ids = np.atleast_1d(np.asarray(unit_ids))
    try:
        ids = ids.astype(np.int64)
    except (TypeError, ValueError):
        raise UnknownUnitError(f"unit_ids={unit_ids!r} must be integer unit ids "
                               "(session.units.index).") from None
    missing = [int(u) for u in ids if u not in table.index]
    if missing:
        raise UnknownUnitError(
            f"Unit id(s) {missing[:5]} are not among session {session.ecephys_session_id}'s "
            f"{len(table)} units (after quality filters); valid ids are session.units.index, "
            f"e.g. {_listing(table.index[:5].tolist(), 5)}.")
    return table.loc[ids]


def parameter(table: pd.DataFrame, name: str, stimulus: str) -> str:
    """A stimulus parameter column that varies in ``table`` (the presentations of one
    stimulus); a wrong name lists the parameters that stimulus has."""
    fixed = {"start_time", "stop_time", "duration", "stimulus_name", "stimulus_block",
             "stimulus_condition_id", "stimulus_index", "tags"}
    valid = [c for c in table.columns if c not in fixed
             and not (table[c].astype(str) == NULL).all()]
    if name not in valid:
        raise InvalidSelectionError(f"parameter={name!r} is not a parameter of {stimulus!r}; "
                                    f"its parameters are {valid}.")
    return name


def window(value: Any, what: str = "window") -> tuple[float, float]:
    """``(start, stop)`` seconds relative to onset, start < stop."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidSelectionError(f"{what}={value!r} must be two numbers (start, stop) in "
                                    "seconds relative to stimulus onset.") from None
    if not (np.isfinite(a) and np.isfinite(b) and b > a):
        raise InvalidSelectionError(f"{what}={value!r} must be (start, stop) with start < stop.")
    return a, b
