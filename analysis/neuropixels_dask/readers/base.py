"""The reader interface: what a session facade needs from a storage format, nothing more.

Like xarray's backends, each format (``nwb.py`` for the published HDF5 files, ``zarr.py`` for the
cloud-optimised copy) implements this small interface; ``session.py`` never knows which it has.
Data reads are module-level functions of small, picklable *source* descriptions so that Dask tasks
carry a URL + storage options + a slice, never an open handle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LFPSource:
    """Everything a worker needs to read a piece of one probe's LFP (picklable, tiny)."""

    format: str  # "nwb" | "zarr"
    url: str  # the file (nwb) or the array (zarr)
    storage_options: dict = field(hash=False)
    data_path: str  # dataset path inside the file / array path inside the store
    timestamps_path: str
    shape: tuple[int, int]
    chunks: tuple[int, int]
    dtype: str
    #: ``(filter_id, ...)`` of the HDF5 filter pipeline (nwb only), to decode fetched chunks
    filters: tuple = ()
    channel_ids: tuple = ()
    #: first and last timestamp: with ``shape[0]`` they give the sampling rate without reading
    #: the (large) timestamps array
    t_first: float = 0.0
    t_last: float = 0.0
    #: whether the timestamps are evenly spaced from ``t_first`` to ``t_last`` (checked on a
    #: sample when the source is opened): if not, times come from the stored timestamps,
    #: never from the rate
    evenly_spaced: bool = True

    @property
    def rate(self) -> float:
        n = self.shape[0]
        return (n - 1) / (self.t_last - self.t_first) if n > 1 else float("nan")


#: how far (in sample periods) a timestamp may lie from its place on an even grid before the
#: grid is not trusted: beyond half a period the grid would give a window other samples
EVEN_TOLERANCE = 0.5


def is_evenly_spaced(index: np.ndarray, stamps: np.ndarray, n: int) -> bool:
    """Whether timestamps ``stamps`` of samples ``index`` (sorted; the first is sample 0 and
    the last sample ``n - 1``) lie on the even grid from the first to the last, each within
    :data:`EVEN_TOLERANCE` of a period, and increase. A sample of the chunks of a long series
    makes this a cheap check at open; a gap or a jump inside the sampled chunks fails it."""
    stamps = np.asarray(stamps, dtype=np.float64)
    if n < 2:
        return True
    t0, t1 = float(stamps[0]), float(stamps[-1])
    if not (np.isfinite(t0) and np.isfinite(t1) and t1 > t0) or not np.all(np.isfinite(stamps)):
        return False
    period = (t1 - t0) / (n - 1)
    grid = t0 + np.asarray(index, dtype=np.float64) * period
    if np.any(np.abs(stamps - grid) > EVEN_TOLERANCE * period):
        return False
    same_chunk = np.diff(index) == 1
    return bool(np.all(np.diff(stamps)[same_chunk] > 0))


@dataclass(frozen=True)
class SpikeSource:
    """Where the flat ``spike_times`` array of a session lives (picklable)."""

    format: str
    url: str
    storage_options: dict = field(hash=False)
    path: str
    #: byte offset of element 0 when the array is stored uncompressed and contiguously (nwb), so a
    #: unit's spikes are one exact ranged read; ``None`` means "read through the format library"
    byte_offset: int | None = None
    dtype: str = "<f8"


class SessionReader(ABC):
    """Metadata of one session (small, read once) and sources for its data."""

    #: session URL (the folder ``session_<id>`` of the cache, or the Zarr store)
    url: str
    session_id: int

    @abstractmethod
    def probes(self) -> pd.DataFrame:
        """Index ``id`` (probe id); ``description`` (probeA…), ``location``, ``sampling_rate``,
        ``lfp_sampling_rate``, ``has_lfp_data``."""

    @abstractmethod
    def channels(self) -> pd.DataFrame:
        """The electrodes table, index ``id`` (channel id), Allen column names."""

    @abstractmethod
    def units(self) -> pd.DataFrame:
        """Scalar columns of ``/units`` (all rows, noise included), index ``id``, file order."""

    @abstractmethod
    def spike_index(self) -> np.ndarray:
        """``spike_times_index``: end offset of each unit's spikes, aligned with ``units()``."""

    @abstractmethod
    def spike_source(self) -> SpikeSource:
        """Where the flat spike-time array lives."""

    @abstractmethod
    def stimulus_tables(self) -> dict[str, pd.DataFrame]:
        """``{"<name>_presentations": table}`` with index ``id`` and file column names."""

    @abstractmethod
    def running_speed(self) -> pd.DataFrame:
        """Columns ``start_time``, ``end_time``, ``velocity`` (cm/s), AllenSDK style."""

    @abstractmethod
    def lfp_source(self, probe_id: int, probe_name: str) -> LFPSource:
        """Describe the probe's LFP (reads only metadata)."""

    def invalid_times(self) -> pd.DataFrame:
        return pd.DataFrame(columns=["start_time", "stop_time", "tags"])

    @abstractmethod
    def session_metadata(self) -> dict:
        """The subject and session facts of AllenSDK's ``get_metadata``: ``specimen_name``,
        ``age_in_days``, ``full_genotype``, ``strain``, ``sex``, ``stimulus_name`` (the session
        type), ``subject_id``, ``age``, ``species``, plus ``session_start_time`` (a datetime)."""


