"""One recording session with AllenSDK ``EcephysSession`` names, lazy and parallel underneath.

Opening reads only metadata (probes, channels, units' scalar columns, the spike index, stimulus
tables). Spike times are read per unit on access; LFP and spike-count arrays are Dask graphs whose
tasks open the remote files themselves, so ``.compute()`` runs on whatever cluster is current.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import allen, session_extras
from . import session_tables as T
from .allen import DETAILED_STIMULUS_PARAMETERS, NULL, SESSION_UNIT_RENAMES
from .analyses import validity
from .catalog import apply_unit_filters, as_id
from .errors import (
    InvalidSelectionError,
    UnknownProbeError,
    UnknownUnitError,
)
from .kernels import spikes as K
from .readers import SessionReader, SpikeSource, open_session_reader, read_spikes
from .tasks import lfp as lfp_tasks
from .tasks import spikes as spike_tasks


class SpikeTimes(Mapping):
    """``unit_id → spike times`` that reads only that unit's slice of the ragged array."""

    CACHE_UNITS = 256

    def __init__(self, src: SpikeSource, ranges: dict[int, tuple[int, int]]):
        self._src = src
        self._ranges = ranges
        self._cache: dict[int, np.ndarray] = {}

    def __getitem__(self, unit_id: int) -> np.ndarray:
        try:
            a, b = self._ranges[int(unit_id)]
        except (KeyError, ValueError, TypeError):
            raise UnknownUnitError(
                f"Unit {unit_id!r} is not among this session's units (after quality filters); "
                "see session.units.index, or open the session with filters set to None."
            ) from None
        uid = int(unit_id)
        if uid not in self._cache:
            if len(self._cache) >= self.CACHE_UNITS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[uid] = read_spikes(self._src, a, b)
        return self._cache[uid]

    def __iter__(self) -> Iterator[int]:
        return iter(self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)


class EcephysSession:
    """A session of the Visual Coding – Neuropixels dataset (AllenSDK ``EcephysSession`` API)."""

    DETAILED_STIMULUS_PARAMETERS = DETAILED_STIMULUS_PARAMETERS

    def __init__(self, reader: SessionReader, session_id: int, filter_by_validity: bool = True,
                 external_channel_columns: Callable[[], pd.DataFrame] | None = None,
                 **unit_filters: Any):
        self.reader = reader
        self.ecephys_session_id = int(session_id)
        self._filter_by_validity = filter_by_validity
        self._external_channel_columns = external_channel_columns
        self._out_of_brain = unit_filters.pop("filter_out_of_brain_units", True)
        self._unit_filters = unit_filters

    @classmethod
    def open(cls, cache, session_id: int, **kwargs: Any) -> EcephysSession:
        """The session as ``cache.get_session_data`` opens it: structure ids, acronyms and CCF
        coordinates of its channels come from the cache's channels table, as in AllenSDK."""
        reader = open_session_reader(cache, session_id)

        def external() -> pd.DataFrame:
            channels = cache.get_channels()
            mine = channels[channels["ecephys_session_id"] == int(session_id)]
            return mine[list(allen.EXTERNAL_CHANNEL_COLUMNS)]

        return cls(reader, session_id, external_channel_columns=external, **kwargs)

    def __repr__(self) -> str:
        return (f"<EcephysSession {self.ecephys_session_id}: {len(self.probes)} probes, "
                f"{len(self.units)} units, {type(self.reader).__name__}>")

    # ---- metadata ---------------------------------------------------------------------------
    @functools.cached_property
    def probes(self) -> pd.DataFrame:
        return self.reader.probes()

    @functools.cached_property
    def _channels_all(self) -> pd.DataFrame:
        """Every channel of the file with AllenSDK's ``Channel`` names (valid or not)."""
        ch = self.reader.channels().rename(columns=allen.SESSION_CHANNEL_RENAMES)
        loc = ch.pop("location") if "location" in ch else pd.Series("", index=ch.index)
        ch["structure_acronym"] = [None if pd.isna(a) or a in ("", "None") else
                                   str(a).split("-")[0] for a in loc]
        ch = ch.drop(columns=["group_name", "imp"], errors="ignore")
        ch = ch[sorted(ch.columns)]  # AllenSDK builds the table from a dict of properties
        if self._external_channel_columns is not None:
            ext = self._external_channel_columns()
            ch = pd.merge(ch.drop(columns=[c for c in ext.columns if c in ch.columns]), ext,
                          left_index=True, right_index=True)
        ch.index.name = "id"
        return ch

    @functools.cached_property
    def channels(self) -> pd.DataFrame:
        """Channels with AllenSDK's names; those with ``valid_data == False`` are left out
        unless the session was opened with ``filter_by_validity=False``."""
        ch = self._channels_all
        if self._filter_by_validity and "valid_data" in ch:
            ch = ch[ch["valid_data"].astype(bool)].drop(columns=["valid_data"])
        return ch

    @functools.cached_property
    def _units_all(self) -> pd.DataFrame:
        """Every unit of the file, merged like AllenSDK, in file order, with spike ranges."""
        raw = self.reader.units()
        raw = raw[sorted(raw.columns)]  # AllenSDK's Unit properties, as a dict: sorted names
        ends = self.reader.spike_index()
        raw["_spike_start"] = np.concatenate([[0], ends[:-1]])
        raw["_spike_stop"] = ends
        table = pd.merge(raw, self.channels, left_on="peak_channel_id", right_index=True,
                         suffixes=("_unit", "_channel"))
        table = pd.merge(table, self.probes, left_on="probe_id", right_index=True,
                         suffixes=("_unit", "_probe"))
        table.index.name = "unit_id"
        return table.rename(columns=SESSION_UNIT_RENAMES)

    @functools.cached_property
    def _units_table(self) -> pd.DataFrame:
        """Units passing the session's filters, sorted by probe and depth (AllenSDK order)."""
        t = self._units_all
        if self._out_of_brain:
            t = t[t["structure_acronym"].notna()]
        if self._filter_by_validity:
            t = t[t["quality"] == "good"].drop(columns=["quality"])
        t = apply_unit_filters(t, **self._unit_filters)
        t = t.sort_values(by=["probe_description", "probe_vertical_position",
                              "probe_horizontal_position"], kind="stable")
        return t.drop(columns=["_spike_start", "_spike_stop"])

    @property
    def units(self) -> pd.DataFrame:
        return self._units_table.drop(columns=list(allen.SESSION_UNIT_HIDDEN), errors="ignore")

    @property
    def spike_times(self) -> SpikeTimes:
        """``unit_id → spike times``; the first access warns, as AllenSDK does, when the session
        has invalid intervals affecting its probes."""
        if not self._warned_invalid_spikes:
            self._warned_invalid_spikes = True
            names = self.probes["description"].astype(str)
            if len(validity.invalid_intervals(self, names, stimulus=False)):
                warnings.warn("Session includes invalid time intervals that could be accessed "
                              "with the attribute 'invalid_times',Spikes within these intervals "
                              "are invalid and may need to be excluded from the analysis.",
                              stacklevel=2)
        return self._spike_times

    _warned_invalid_spikes = False

    @functools.cached_property
    def _spike_times(self) -> SpikeTimes:
        t = self._units_all.loc[self._units_table.index]
        ranges = {int(u): (int(a), int(b)) for u, a, b in
                  zip(t.index, t["_spike_start"], t["_spike_stop"], strict=True)}
        return SpikeTimes(self.reader.spike_source(), ranges)

    @functools.cached_property
    def _stimulus(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        tables = self.reader.stimulus_tables()
        if not tables:
            empty = pd.DataFrame(columns=["start_time", "stop_time", "stimulus_name"])
            empty.index.name = "stimulus_presentation_id"
            return empty, pd.DataFrame()
        df = pd.concat([t for _, t in sorted(tables.items())], sort=False)
        df = df.sort_index(kind="stable")
        df.index.name = "stimulus_presentation_id"
        df = T.allensdk_stimulus_values(df.drop(columns=["stimulus_index"], errors="ignore"))
        for col in ("start_time", "stop_time"):
            df[col] = df[col].astype(np.float64)
        if "stimulus_block" in df:
            block = pd.to_numeric(df["stimulus_block"], errors="coerce")
            if block.notna().all():
                df["stimulus_block"] = block
        df["duration"] = df["stop_time"] - df["start_time"]
        params = df.drop(columns=["start_time", "stop_time", "duration", "stimulus_block"])
        cond_ids, conditions = K.assign_condition_ids(params)
        df["stimulus_condition_id"] = cond_ids
        return T.mask_invalid_presentations(df, self.invalid_times), conditions

    @property
    def stimulus_presentations(self) -> pd.DataFrame:
        """All ``*_presentations`` tables, with ``duration`` and ``stimulus_condition_id``."""
        return self._stimulus_without_detail(self._stimulus[0])

    @property
    def stimulus_conditions(self) -> pd.DataFrame:
        return self._stimulus[1]

    @property
    def stimulus_names(self) -> list[str]:
        """Stimuli in order of first presentation (``invalid_presentation`` among them when a
        presentation overlaps an invalid ``stimulus`` interval)."""
        return list(pd.unique(self._stimulus[0]["stimulus_name"]))

    @functools.cached_property
    def inter_presentation_intervals(self) -> pd.DataFrame:
        """Time (s) from each presentation's end to the next one's start, index
        ``(from_presentation_id, to_presentation_id)``, column ``interval``."""
        return T.inter_presentation_intervals(self.stimulus_presentations)

    def get_inter_presentation_intervals_for_stimulus(self, stimulus_names) -> pd.DataFrame:
        """The inter-presentation intervals between presentations of ``stimulus_names``."""
        pres = self.stimulus_presentations
        ids = pres.index[pres["stimulus_name"].isin(T.as_list(stimulus_names))]
        return T.intervals_between(self.inter_presentation_intervals, ids)

    def get_stimulus_epochs(self, duration_thresholds: dict[str, float] | None = None
                            ) -> pd.DataFrame:
        """Continuous periods of one stimulus block (``start_time``, ``stop_time``,
        ``duration``, ``stimulus_name``, ``stimulus_block``); epochs of a name shorter than its
        threshold in ``duration_thresholds`` are left out (default
        ``{"spontaneous_activity": 90.0}``)."""
        return T.stimulus_epochs(self.stimulus_presentations, duration_thresholds)

    def get_stimulus_parameter_values(self, stimulus_presentation_ids=None,
                                      drop_nulls: bool = True) -> dict[str, np.ndarray]:
        """Each stimulus parameter's distinct values (over ``stimulus_presentation_ids``, or the
        whole session)."""
        pres = self.stimulus_presentations
        if stimulus_presentation_ids is not None:
            pres = pres.loc[T.as_list(stimulus_presentation_ids)]
        return T.parameter_values(pres, drop_nulls=drop_nulls)

    def get_parameter_values_for_stimulus(self, stimulus_name: str, drop_nulls: bool = True
                                          ) -> dict[str, np.ndarray]:
        """Each parameter's distinct values while ``stimulus_name`` was shown."""
        ids = self.get_stimulus_table([stimulus_name]).index.to_numpy()
        return self.get_stimulus_parameter_values(ids, drop_nulls=drop_nulls)

    @staticmethod
    def _stimulus_without_detail(df: pd.DataFrame) -> pd.DataFrame:
        return df.drop(columns=list(DETAILED_STIMULUS_PARAMETERS), errors="ignore")

    def get_stimulus_table(self, stimulus_names: str | list[str] | None = None,
                           include_detailed_parameters: bool = False,
                           include_unused_parameters: bool = False) -> pd.DataFrame:
        df = self._stimulus[0]
        if stimulus_names is not None:
            names = [stimulus_names] if isinstance(stimulus_names, str) else list(stimulus_names)
            unknown = sorted(set(names) - set(df["stimulus_name"]))
            if unknown:
                raise InvalidSelectionError(f"Stimulus {unknown} not shown in session "
                                            f"{self.ecephys_session_id}; shown: "
                                            f"{self.stimulus_names}.")
            df = df[df["stimulus_name"].isin(names)]
        if not include_detailed_parameters:
            df = self._stimulus_without_detail(df)
        if not include_unused_parameters:
            unused = [c for c in df.columns if (df[c].astype(str) == NULL).all()]
            df = df.drop(columns=unused)
        return df

    @functools.cached_property
    def running_speed(self) -> pd.DataFrame:
        return self.reader.running_speed()

    @functools.cached_property
    def invalid_times(self) -> pd.DataFrame:
        """Intervals of bad data: ``start_time``, ``stop_time``, ``tags`` ([scope, scope id,
        label]; label ``all_probes``, ``stimulus`` or a probe name)."""
        return self.reader.invalid_times()

    def get_invalid_times(self) -> pd.DataFrame:
        """:attr:`invalid_times` (AllenSDK's method for it)."""
        return self.invalid_times

    # ---- session metadata -------------------------------------------------------------------
    @functools.cached_property
    def _metadata(self) -> dict[str, Any]:
        return self.reader.session_metadata()

    @property
    def session_start_time(self):
        return self._metadata["session_start_time"]

    @property
    def specimen_name(self) -> str:
        return self._metadata["specimen_name"]

    @property
    def age_in_days(self) -> float:
        return self._metadata["age_in_days"]

    @property
    def sex(self) -> str:
        return self._metadata["sex"]

    @property
    def full_genotype(self) -> str:
        return self._metadata["full_genotype"]

    @property
    def session_type(self) -> str:
        return self._metadata["stimulus_name"]

    @property
    def num_units(self) -> int:
        return self._units_table.shape[0]

    @property
    def num_probes(self) -> int:
        return self.probes.shape[0]

    @property
    def num_channels(self) -> int:
        return self.channels.shape[0]

    @property
    def num_stimulus_presentations(self) -> int:
        return self.stimulus_presentations.shape[0]

    @property
    def structure_acronyms(self) -> list:
        """Structures the channels are in, in channel order (``nan``: outside the brain)."""
        return self.channels["ecephys_structure_acronym"].unique().tolist()

    @property
    def structurewise_unit_counts(self) -> pd.Series:
        counts = self.units["ecephys_structure_acronym"].value_counts()
        counts.name, counts.index.name = "ecephys_structure_acronym", None  # pandas < 2 names
        return counts

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "specimen_name": self.specimen_name, "session_type": self.session_type,
            "full_genotype": self.full_genotype, "sex": self.sex,
            "age_in_days": self.age_in_days, "rig_equipment_name": self.rig_equipment_name,
            "num_units": self.num_units, "num_channels": self.num_channels,
            "num_probes": self.num_probes,
            "num_stimulus_presentations": self.num_stimulus_presentations,
            "session_start_time": self.session_start_time,
            "ecephys_session_id": self.ecephys_session_id,
            "structure_acronyms": self.structure_acronyms,
            "stimulus_names": self.stimulus_names,
        }

    # ---- LFP --------------------------------------------------------------------------------
    def _probe_id(self, probe_id: Any) -> int:
        """``probe_id`` as an int, refusing names and non-integral numbers with the ids to use."""
        names = dict(zip(self.probes["description"], self.probes.index, strict=True))
        if isinstance(probe_id, str) and probe_id in names:
            raise UnknownProbeError(
                f"{probe_id!r} is a probe name; pass its id instead: {names[probe_id]} "
                f"(session.probes lists ids and names: {names}).")
        try:
            return as_id(probe_id, "Probe id", UnknownProbeError)
        except UnknownProbeError as exc:
            raise UnknownProbeError(f"{exc} This session's probes are {names}.") from None

    def _probe_row(self, probe_id: int) -> pd.Series:
        try:
            return self.probes.loc[self._probe_id(probe_id)]
        except KeyError:
            raise UnknownProbeError(
                f"Probe {probe_id!r} is not part of session {self.ecephys_session_id}; its "
                f"probes are {list(self.probes.index)} "
                f"({', '.join(self.probes['description'])}).") from None

    @functools.lru_cache(maxsize=16)  # noqa: B019 - a handful of probes per session
    def lfp_source(self, probe_id: int):
        row = self._probe_row(probe_id)
        return self.reader.lfp_source(int(probe_id), str(row["description"]))

    def get_lfp(self, probe_id: int, mask_invalid_intervals: bool = True, *,
                time_range: tuple[float, float] | None = None, channel_ids=None,
                exact_timestamps: bool = False) -> xr.DataArray:
        """The probe's LFP as a lazy DataArray ``LFP`` (time, channel); nothing is read yet.

        ``mask_invalid_intervals`` (AllenSDK's default, True) makes samples inside the invalid
        intervals tagged ``all_probes`` or with this probe's name NaN, lazily.
        ``time_range=(start, stop)`` in seconds and ``channel_ids`` select before any read; a
        range reaching outside the recording is an error. The time coordinate comes from the
        first/last timestamps when the timestamps are evenly spaced (checked on a sample when
        the probe is opened); ``exact_timestamps=True`` reads the stored timestamps for the
        selection. Where they are not evenly spaced, the stored timestamps give the coordinate
        and the selection (``attrs["evenly_spaced"]`` False).
        """
        probe_id = self._probe_id(probe_id)
        src = self.lfp_source(probe_id)
        lfp = lfp_tasks.lfp_dataarray(src, self._channels_all, probe_id=probe_id,
                                      session_id=self.ecephys_session_id, time_range=time_range,
                                      channel_ids=channel_ids, exact_timestamps=exact_timestamps)
        if not mask_invalid_intervals:
            return lfp
        name = str(self._probe_row(probe_id)["description"])
        bad = validity.invalid_intervals(self, [name], stimulus=False)
        if not len(bad):
            return lfp
        t = lfp["time"].to_numpy()
        valid = ~validity.overlapping(t, t, bad)
        masked = lfp.where(xr.DataArray(valid, dims=("time",), coords={"time": lfp["time"]}))
        masked.attrs = dict(lfp.attrs, masked_invalid_samples=int((~valid).sum()))
        return masked

    # ---- spikes -----------------------------------------------------------------------------
    def _presentations(self, ids) -> pd.DataFrame:
        df = self._stimulus[0]
        if ids is None:
            return df
        ids = np.atleast_1d(np.asarray(ids))
        missing = np.setdiff1d(ids, df.index.to_numpy())
        if missing.size:
            raise InvalidSelectionError(f"Stimulus presentation id(s) {missing[:5].tolist()} "
                                        "are not in session.stimulus_presentations.")
        return df.loc[ids]

    def _units(self, ids) -> pd.DataFrame:
        if ids is None:
            return self.units
        ids = np.atleast_1d(np.asarray(ids))
        missing = np.setdiff1d(ids, self.units.index.to_numpy())
        if missing.size:
            raise UnknownUnitError(f"Unit id(s) {missing[:5].tolist()} are not among this "
                                   "session's units (after quality filters).")
        return self.units.loc[ids]

    def spike_ranges(self, unit_ids: np.ndarray) -> list[tuple[int, int]]:
        """``[start, stop)`` of each unit's spikes in the flat ``spike_times`` array (what spike
        tasks carry instead of the spikes)."""
        t = self._units_all.loc[unit_ids]
        return [(int(a), int(b)) for a, b in zip(t["_spike_start"], t["_spike_stop"],
                                                  strict=True)]

    def presentationwise_spike_counts(self, bin_edges, stimulus_presentation_ids, unit_ids,
                                      binarize: bool = False, dtype=None,
                                      large_bin_size_threshold: float = 0.001,
                                      time_domain_callback=None) -> xr.DataArray:
        """Spike counts (presentation, time bin, unit), AllenSDK dims/dtype; lazy, chunked by
        groups of units (each task reads its units' spikes in one batch of ranged reads)."""
        try:
            bin_edges = np.asarray(bin_edges, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidSelectionError(f"bin_edges={bin_edges!r} are not numbers: they must be "
                                        "a 1-D, strictly increasing array of times.") from None
        if bin_edges.ndim != 1 or bin_edges.size < 2 or not np.all(np.isfinite(bin_edges)) \
                or np.any(np.diff(bin_edges) <= 0):
            raise InvalidSelectionError("bin_edges must be a 1-D, finite, strictly increasing "
                                        "array of at least two times (s, relative to onset).")
        pres = self._presentations(stimulus_presentation_ids)
        units = self._units(unit_ids)
        if binarize and np.amax(np.diff(bin_edges)) > large_bin_size_threshold:
            import warnings

            warnings.warn(f"binarizing bins larger than {large_bin_size_threshold} s", stacklevel=2)
        domain = K.build_time_window_domain(bin_edges, pres["start_time"].to_numpy(np.float64),
                                            callback=time_domain_callback)
        out_dtype = np.dtype((np.uint8 if binarize else np.uint16) if dtype is None else dtype)
        src = self.reader.spike_source()
        uids = units.index.to_numpy()
        arr = spike_tasks.spike_counts_array(src, spike_tasks.unit_groups(uids),
                                             self.spike_ranges, domain, binarize, out_dtype)
        return xr.DataArray(
            arr, name="spike_counts",
            dims=("stimulus_presentation_id", "time_relative_to_stimulus_onset", "unit_id"),
            coords={"stimulus_presentation_id": pres.index.to_numpy(),
                    "time_relative_to_stimulus_onset": bin_edges[:-1] + np.diff(bin_edges) / 2,
                    "unit_id": uids})

    def presentationwise_spike_times(self, stimulus_presentation_ids=None,
                                     unit_ids=None) -> pd.DataFrame:
        """Every spike inside a presentation: index ``spike_time``; presentation, unit, and time
        since onset (AllenSDK semantics). Units are read in parallel on the current cluster."""
        pres = self._presentations(stimulus_presentation_ids)
        units = self._units(unit_ids)
        trains = self._read_trains(units.index.to_numpy())
        return K.presentationwise_spike_times(
            trains, units.index.to_numpy(), pres.index.to_numpy(),
            pres["start_time"].to_numpy(np.float64), pres["stop_time"].to_numpy(np.float64))

    def _read_trains(self, uids: np.ndarray) -> list[np.ndarray]:
        """Spike trains of ``uids`` read by Dask tasks (groups of units per task)."""
        return spike_tasks.read_trains(self.reader.spike_source(), spike_tasks.unit_groups(uids),
                                       self.spike_ranges)

    def conditionwise_spike_statistics(self, stimulus_presentation_ids=None, unit_ids=None,
                                       use_rates: bool = False) -> pd.DataFrame:
        """Spike count statistics per (unit, stimulus condition), as AllenSDK computes them."""
        pres = self._presentations(stimulus_presentation_ids)
        units = self._units(unit_ids)
        spikes = self.presentationwise_spike_times(pres.index.to_numpy(),
                                                   units.index.to_numpy())
        return K.conditionwise_statistics(spikes, pres, units.index.to_numpy(),
                                          use_rates=use_rates)

    def channel_structure_intervals(self, channel_ids) -> tuple[np.ndarray, np.ndarray]:
        """Structure labels and the index intervals they span along ``channel_ids``, in the
        order given (AllenSDK does not sort them: pass them sorted by depth for a probe's
        layers)."""
        ch = self.channels.loc[np.asarray(channel_ids)]
        if ch["probe_id"].nunique() > 1:
            warnings.warn("Calculating structure boundaries across channels from multiple "
                          "probes.", stacklevel=2)
        intervals = T.nan_intervals(ch["ecephys_structure_id"].to_numpy()
                                    if "ecephys_structure_id" in ch else
                                    ch["structure_acronym"].to_numpy(object))
        labels = ch["ecephys_structure_acronym" if "ecephys_structure_acronym" in ch
                    else "structure_acronym"].iloc[intervals[:-1]].to_numpy()
        return labels, intervals

    # ---- waveforms, amplitudes, optotagging, eye tracking, CSD (session_extras.py) ----------
    @functools.cached_property
    def mean_waveforms(self) -> session_extras.MeanWaveforms:
        """``unit_id → DataArray (channel_id, time)``, Dask-backed (AllenSDK: a dict)."""
        return session_extras.MeanWaveforms(self)

    @functools.cached_property
    def spike_amplitudes(self) -> SpikeTimes:
        """``unit_id → amplitudes (V)`` of every unit of the file, read per unit on access."""
        return session_extras.spike_amplitudes(self)

    @functools.cached_property
    def optogenetic_stimulation_epochs(self) -> pd.DataFrame:
        return session_extras.optogenetic_stimulation_epochs(self)

    def get_current_source_density(self, probe_id: int) -> xr.DataArray:
        """Flash-evoked CSD of the probe, ``CSD`` (virtual_channel_index, time), Dask-backed."""
        return session_extras.current_source_density(self, probe_id)

    def get_pupil_data(self) -> pd.DataFrame | None:
        return session_extras.pupil_data(self)

    def get_screen_gaze_data(self, include_filtered_data: bool = False) -> pd.DataFrame | None:
        return session_extras.screen_gaze_data(self, include_filtered_data)

    @functools.cached_property
    def _rig_metadata(self) -> dict | None:
        return session_extras.rig_metadata(self)

    @property
    def rig_geometry_data(self) -> pd.DataFrame | None:
        return self._rig_metadata["geometry"] if self._rig_metadata else None

    @property
    def rig_equipment_name(self) -> str | None:
        return self._rig_metadata["equipment"] if self._rig_metadata else None
