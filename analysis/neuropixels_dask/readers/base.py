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

    @property
    def rate(self) -> float:
        n = self.shape[0]
        return (n - 1) / (self.t_last - self.t_first) if n > 1 else float("nan")


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


