"""Spike graphs: units in groups, each task reading its units' spikes in one batch.

A session's spike times are one flat ragged array; a unit is the range
``[index[i-1], index[i])`` of it. Tasks carry the array's :class:`SpikeSource` and the ranges of
their units (never the spikes), read them in one concurrent batch of exact ranged reads and run
a pure kernel on them, so counts for hundreds of units over thousands of presentations are a
few dozen small tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from ..kernels import spikes as K
from ..readers import SpikeSource, read_spike_ranges

#: units per task: one batch of ranged reads each, small enough to spread over many workers
UNITS_PER_TASK = 32

Ranges = list[tuple[int, int]]


def unit_groups(unit_ids: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """``unit_ids`` in groups of :data:`UNITS_PER_TASK` (the unit of work of every spike task)."""
    uids = np.asarray(unit_ids)
    return [uids[i:i + UNITS_PER_TASK] for i in range(0, len(uids), UNITS_PER_TASK)]


def read_unit_spikes(src: SpikeSource, ranges: Ranges) -> list[np.ndarray]:
    """Spike times of several units (``[start, stop)`` ranges of the flat array)."""
    return read_spike_ranges(src, ranges)


def _count_task(src: SpikeSource, ranges: Ranges, domain: np.ndarray, binarize: bool,
                dtype) -> np.ndarray:
    trains = read_unit_spikes(src, ranges)
    return K.spike_histogram_domain(trains, domain, binarize=binarize, dtype=dtype)


def spike_counts_array(src: SpikeSource, groups: list[np.ndarray],
                       ranges_of: Callable[[np.ndarray], Ranges], domain: np.ndarray,
                       binarize: bool, dtype: np.dtype) -> da.Array:
    """Counts ``(presentation, bin, unit)`` as a Dask array chunked by unit groups."""
    uids = np.concatenate(groups) if groups else np.empty(0, np.int64)
    name = "spike-counts-" + tokenize(src.url, domain, uids, binarize, dtype)
    n_p, n_b = domain.shape[0], domain.shape[1] - 1
    if not groups:  # no unit selected: dask refuses an empty chunks tuple
        return da.zeros((n_p, n_b, 0), dtype=dtype)
    dsk = {(name, 0, 0, g): (_count_task, src, ranges_of(grp), domain, binarize, dtype)
           for g, grp in enumerate(groups)}
    return da.Array(dsk, name, chunks=((n_p,), (n_b,), tuple(len(g) for g in groups)),
                    dtype=dtype)


def read_trains(src: SpikeSource, groups: list[np.ndarray],
                ranges_of: Callable[[np.ndarray], Ranges]) -> list[np.ndarray]:
    """Spike trains of every unit of ``groups``, one task per group, on the current scheduler."""
    parts = dask.compute(*[dask.delayed(read_unit_spikes)(src, ranges_of(g)) for g in groups])
    return [t for part in parts for t in part]


def _apply(func: Callable[..., Any], src: SpikeSource, ranges: Ranges, *args: Any) -> Any:
    return func(read_unit_spikes(src, ranges), *args)


def per_group(func: Callable[..., Any], src: SpikeSource, groups: list[np.ndarray],
              ranges_of: Callable[[np.ndarray], Ranges], *args: Any) -> list[Any]:
    """Lazy ``func(trains_of_group, *args)`` per group (a Delayed each); ``func`` is a kernel
    taking the group's spike trains first."""
    return [dask.delayed(_apply)(func, src, ranges_of(g), *args) for g in groups]
