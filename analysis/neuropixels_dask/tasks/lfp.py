"""One probe's LFP as a lazy ``xarray.DataArray`` (time, channel) backed by Dask.

Dask chunks follow the storage chunks along time (46,989 samples ≈ 37.6 s in the published files)
and span all selected channels, so each task fetches one row of storage chunks in a single batch of
ranged reads. Selections (time range, channels) shrink the graph before anything is read.

Times come from the first and last timestamp and the sample count when the timestamps are evenly
spaced (checked on a sample of them when the source is opened: ``LFPSource.evenly_spaced``).
When they are not, the stored timestamps give both the time coordinate and the samples a
``time_range`` selects: a coordinate never disagrees with the file.
"""

from __future__ import annotations

import functools

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.base import tokenize

from ..errors import InvalidFileError, InvalidSelectionError
from ..readers import LFPSource, read_lfp_block, read_timestamps


@functools.lru_cache(maxsize=2)  # whole series (~100 MB for a real probe): a couple at most
def stored_timestamps(src: LFPSource) -> np.ndarray:
    """Every timestamp of ``src`` (for a series that is not evenly spaced); they must
    increase, or the file is refused by name."""
    ts = np.asarray(read_timestamps(src, 0, src.shape[0]), dtype=np.float64)
    if not np.all(np.diff(ts) > 0) or not np.all(np.isfinite(ts)):
        raise InvalidFileError(f"{src.url}: the LFP timestamps ({src.timestamps_path}) do not "
                               "increase: no time can be given to its samples. The file is "
                               "damaged: re-copy it from the source cache.")
    ts.flags.writeable = False
    return ts


def sample_range(src: LFPSource, time_range: tuple[float, float] | None) -> tuple[int, int]:
    """Samples ``[i0, i1)`` whose timestamps lie in ``[start, stop)`` (the even grid, or the
    stored timestamps where they are not evenly spaced)."""
    n = src.shape[0]
    if time_range is None:
        return 0, n
    try:
        start, stop = (float(t) for t in time_range)
    except (TypeError, ValueError):
        raise InvalidSelectionError(f"time_range={time_range!r} must be two numbers (start, stop) "
                                    "in seconds, e.g. time_range=(100.0, 101.0).") from None
    if not np.isfinite(start) or not np.isfinite(stop) or stop <= start:
        raise InvalidSelectionError(f"time_range={time_range!r} must be (start, stop) with "
                                    "start < stop, in seconds.")
    # the recording covers [first timestamp, last timestamp + one sample); a range reaching
    # past either end is refused rather than cut short without a word
    end = src.t_last + (1.0 / src.rate if n > 1 else 0.0)
    tol = 1e-9 * max(1.0, abs(end))
    if start < src.t_first - tol or stop > end + tol:
        where = ("lies outside" if stop <= src.t_first or start > src.t_last
                 else "reaches outside")
        raise InvalidSelectionError(
            f"time_range={time_range!r} {where} this probe's LFP, which covers "
            f"{src.t_first:.6f} s to {end:.6f} s; pass a range inside it (or no time_range "
            "for all of it).")
    if not src.evenly_spaced:
        ts = stored_timestamps(src)
        return int(np.searchsorted(ts, start, "left")), int(np.searchsorted(ts, stop, "left"))
    i0 = max(0, int(np.ceil((start - src.t_first) * src.rate - 1e-9)))
    i1 = min(n, int(np.ceil((stop - src.t_first) * src.rate - 1e-9)))
    return i0, max(i0, i1)


def _stride(channel_ids) -> str:
    """", every Nth channel" when the LFP channels' ids are evenly spaced (the real files keep
    every 4th channel, the tiny synthetic cache every 16th), else nothing."""
    ids = np.asarray(channel_ids, dtype=np.int64)
    steps = np.unique(np.diff(ids))
    if steps.size == 1 and steps[0] > 1:
        n = int(steps[0])
        return f", every {n}{'nd' if n == 2 else 'rd' if n == 3 else 'th'} channel"
    return ""


def column_indices(src: LFPSource, channel_ids) -> np.ndarray:
    if channel_ids is None:
        return np.arange(src.shape[1])
    lookup = {cid: j for j, cid in enumerate(src.channel_ids)}
    try:
        raw = np.atleast_1d(np.asarray(channel_ids))
        ids = raw.astype(np.int64)
    except (TypeError, ValueError, OverflowError):
        raise InvalidSelectionError(f"channel_ids={channel_ids!r} must be integer channel ids "
                                    "(see lfp.channel or session.channels).") from None
    if raw.ndim != 1 or (raw.dtype.kind == "f" and not np.array_equal(raw, ids)):
        raise InvalidSelectionError(f"channel_ids={channel_ids!r} must be a flat list of integer "
                                    "channel ids (see lfp.channel or session.channels).")
    missing = [int(c) for c in ids if int(c) not in lookup]
    if missing:
        raise InvalidSelectionError(
            f"Channel id(s) {missing[:5]} have no LFP on this probe, which keeps LFP on "
            f"{len(src.channel_ids)} channels{_stride(src.channel_ids)}; valid ids: "
            f"{list(src.channel_ids[:3])} … {list(src.channel_ids[-2:])} "
            "(see lfp.channel or session.channels).")
    return np.array([lookup[int(c)] for c in ids], dtype=np.int64)


def block_bounds(i0: int, i1: int, chunk: int) -> list[tuple[int, int]]:
    """Split ``[i0, i1)`` at multiples of the storage chunk length."""
    edges = [i0] + list(range((i0 // chunk + 1) * chunk, i1, chunk)) + [i1]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def lfp_dask_array(src: LFPSource, i0: int, i1: int, cols: np.ndarray) -> da.Array:
    bounds = block_bounds(i0, i1, src.chunks[0])
    if not bounds:  # a window between two samples: dask refuses an empty chunks tuple
        return da.empty((0, len(cols)), dtype=np.dtype(src.dtype), chunks=(0, len(cols)))
    name = "lfp-" + tokenize(src.url, src.data_path, i0, i1, cols)
    dsk = {(name, k, 0): (read_lfp_block, src, a, b, cols) for k, (a, b) in enumerate(bounds)}
    chunks = (tuple(b - a for a, b in bounds), (len(cols),))
    return da.Array(dsk, name, chunks=chunks, dtype=np.dtype(src.dtype))


def lfp_dataarray(src: LFPSource, channels: pd.DataFrame, *, probe_id: int, session_id: int,
                  time_range=None, channel_ids=None, exact_timestamps: bool = False
                  ) -> xr.DataArray:
    i0, i1 = sample_range(src, time_range)
    cols = column_indices(src, channel_ids)
    data = lfp_dask_array(src, i0, i1, cols)
    if not src.evenly_spaced:
        time = stored_timestamps(src)[i0:i1]
    elif exact_timestamps:
        time = read_timestamps(src, i0, i1)
    else:
        time = src.t_first + np.arange(i0, i1) / src.rate
    ids = np.asarray(src.channel_ids, dtype=np.int64)[cols]
    ch = channels.reindex(ids)
    coords = {
        "time": ("time", time, {"units": "s"}),
        "channel": ("channel", ids),
        "depth": ("channel", ch["probe_vertical_position"].to_numpy(),
                  {"units": "µm", "long_name": "distance from probe tip"}),
        "structure_acronym": ("channel", ch["structure_acronym"].fillna("").to_numpy(object)),
        "probe_channel_number": ("channel", ch["probe_channel_number"].to_numpy()),
    }
    return xr.DataArray(
        data, dims=("time", "channel"), coords=coords, name="LFP",
        attrs={"units": "V", "sampling_rate": src.rate, "probe_id": int(probe_id),
               "session_id": int(session_id), "source": src.url, "format": src.format,
               "exact_timestamps": bool(exact_timestamps or not src.evenly_spaced),
               "evenly_spaced": bool(src.evenly_spaced)})
