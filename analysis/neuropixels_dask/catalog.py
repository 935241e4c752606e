"""The cache: manifest + cache-level tables, with AllenSDK 2.16 ``EcephysProjectCache`` semantics.

Only ``manifest.json`` and the four CSV tables are read; opening a session reads that session's
metadata, never its data.

The tables are large for the real release (units.csv ~51 MB for ~99k units, channels.csv
332 × 384 rows): each is fetched whole in one GET (``storage.fetch_objects``; the tables a method
needs in one concurrent batch), parsed once, and kept **per process** (:data:`tables`), so that
every :class:`EcephysProjectCache` of the same URL and options and every method share them.
AllenSDK users wait minutes for ``get_session_table()`` (AllenSDK issue #1696) because its cache
re-reads and re-merges them; here a second ``open_cache`` costs one request (the manifest).
"""

from __future__ import annotations

import functools
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from . import allen, config, release_files, storage
from .allen import CACHE_UNIT_RENAMES, DEFAULT_UNIT_FILTERS
from .caching import ProcessCache
from .errors import CacheNotFoundError, InvalidFileError, UnknownSessionError
from .readers import format_of_manifest

REQUIRED_COLUMNS = {
    "sessions": {"id", "session_type", "specimen_id"},
    "probes": {"id", "ecephys_session_id", "name", "has_lfp_data"},
    "channels": {"id", "ecephys_probe_id", "local_index", "ecephys_structure_acronym"},
    "units": {"id", "ecephys_channel_id", "amplitude_cutoff", "presence_ratio",
              "isi_violations", "quality"},
}


#: the four tables, each in the order a method needs them (sessions first: it is the smallest)
TABLES = ("sessions", "probes", "channels", "units")

#: parsed cache-level tables per process, ``(cache URL, options key, table name)`` → DataFrame
#: (index ``id``); callers copy before they change one
tables: ProcessCache[tuple[str, str, str], pd.DataFrame] = ProcessCache(
    "cache tables", maxsize=4 * 16)
#: merged tables per process and cache: ``(url, options key)`` → units.csv joined with the
#: annotated channels; ``(url, options key, "probes" | "channels")`` → the annotated tables
merged_units: ProcessCache[tuple[str, ...], pd.DataFrame] = ProcessCache(
    "merged unit tables", maxsize=3 * 16)


def unit_filter_values(**filters: Any) -> dict[str, float]:
    """Resolve filters as AllenSDK does: defaults, overridden; ``None`` → no limit."""
    unknown = set(filters) - set(DEFAULT_UNIT_FILTERS) - {"filter_by_validity",
                                                          "filter_out_of_brain_units"}
    if unknown:
        raise TypeError(f"unknown unit filter(s) {sorted(unknown)}; valid: "
                        f"{sorted(DEFAULT_UNIT_FILTERS)} + filter_by_validity, "
                        "filter_out_of_brain_units")
    out = {}
    for key, default in DEFAULT_UNIT_FILTERS.items():
        v = filters.get(key, default)
        out[key] = (np.inf if key.endswith("maximum") else -np.inf) if v is None else float(v)
    return out


def _count(table: pd.DataFrame, key: str, index: pd.Index) -> pd.Series:
    """Rows of ``table`` per value of ``key``, for every entry of ``index`` (0 when none)."""
    return table.groupby(key).size().reindex(index, fill_value=0).astype(np.int64)


def _structures(channels: pd.DataFrame, key: str, index: pd.Index) -> pd.Series:
    """The brain structures of the channels per value of ``key``, in channel order, ``nan`` for
    channels outside the brain (AllenSDK's ``get_grouped_uniques``: arrays of ``unique()``)."""
    acronyms = channels["ecephys_structure_acronym"].astype(object)
    groups = {k: pd.unique(v.to_numpy(object)) for k, v in acronyms.groupby(channels[key])}
    return pd.Series([groups.get(k, 0) for k in index], index=index, dtype=object)


def _suppress(table: pd.DataFrame, suppress: list[str] | None,
              default: tuple[str, ...]) -> pd.DataFrame:
    """Drop ``suppress`` (AllenSDK: ``None`` means its default list, ``[]`` nothing)."""
    hide = list(default) if suppress is None else list(suppress)
    return table.drop(columns=hide, errors="ignore")


def apply_unit_filters(units: pd.DataFrame, **filters: Any) -> pd.DataFrame:
    f = unit_filter_values(**filters)
    keep = (
        (units["amplitude_cutoff"] <= f["amplitude_cutoff_maximum"])
        & (units["presence_ratio"] >= f["presence_ratio_minimum"])
        & (units["isi_violations"] <= f["isi_violations_maximum"])
    )
    return units[keep]


class EcephysProjectCache:
    """A Visual Coding – Neuropixels cache at any fsspec URL (S3, local, HTTP)."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = storage.check_url(url).rstrip("/")
        self.storage_options = storage.resolve(self.url, storage_options)
        self.manifest = self._read_manifest()

    def __repr__(self) -> str:
        return f"EcephysProjectCache({self.url!r}, format={self.format!r})"

    # ---- raw files ----------------------------------------------------------------------------
    def _read_manifest(self) -> dict:
        url = storage.join(self.url, "manifest.json")
        try:
            (raw,) = storage.fetch_objects([url], self.storage_options)  # one GET
        except Exception as exc:  # noqa: BLE001
            err = storage.translate_error(exc, url)
            if isinstance(err, CacheNotFoundError) and str(err).startswith("The bucket of"):
                bucket = self.url.split("://", 1)[-1].split("/", 1)[0]
                raise CacheNotFoundError(
                    f"No ecephys cache at {self.url}: the bucket {bucket!r} does not exist (or "
                    "is on another endpoint). Point open_cache() at the folder holding "
                    "manifest.json, sessions.csv, … (for the public data: "
                    "s3://allen-brain-observatory/visual-coding-neuropixels/ecephys-cache/)."
                ) from exc
            if isinstance(err, CacheNotFoundError):
                raise CacheNotFoundError(
                    f"No ecephys cache at {self.url}: {url} is missing. Point open_cache() at "
                    "the folder holding manifest.json, sessions.csv, … (for the public data: "
                    "s3://allen-brain-observatory/visual-coding-neuropixels/ecephys-cache/)."
                ) from exc
            if isinstance(exc, NotADirectoryError):
                raise CacheNotFoundError(
                    f"No ecephys cache at {self.url}: it is a file, not a folder. Point "
                    "open_cache() at the folder holding manifest.json, sessions.csv, …") from exc
            raise err from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise InvalidFileError(f"{url} is not valid JSON ({exc}); the cache copy is "
                                   "corrupt.") from exc

    @functools.cached_property
    def format(self) -> str:
        """``"nwb"`` for the published layout, ``"zarr"`` for a converted copy (from the
        manifest; see ``readers.BACKENDS``)."""
        return format_of_manifest(self.manifest, self.url)

    def _table_key(self, name: str) -> tuple[str, str, str]:
        return (self.url, self.storage_options.key, name)

    def _table(self, name: str) -> pd.DataFrame:
        """One cache-level table, read once per process (:data:`tables`)."""
        return tables.get(self._table_key(name), lambda: self._read_table(name))

    def _tables(self, *names: str) -> list[pd.DataFrame]:
        """Several tables; those not yet read are fetched concurrently (one round trip), and
        once all are read no thread is started at all (every ``get_*`` call comes here)."""
        missing = [n for n in names if self._table_key(n) not in tables]
        if len(missing) > 1:
            with ThreadPoolExecutor(len(missing), thread_name_prefix="npd-tables") as pool:
                list(pool.map(self._table, missing))
        return [self._table(n) for n in names]

    def _read_table(self, name: str) -> pd.DataFrame:
        url = storage.join(self.url, f"{name}.csv")
        (raw,) = storage.fetch_objects([url], self.storage_options, missing_ok=True)
        if raw is None:
            raise CacheNotFoundError(f"Nothing found at {url}. Check the cache URL and that the "
                                     "cache holds this file.")
        try:
            df = pd.read_csv(io.BytesIO(raw))
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise InvalidFileError(f"{url} is not a readable CSV table ({exc}); the cache copy "
                                   "is corrupt: re-copy it from the source.") from exc
        missing = REQUIRED_COLUMNS[name] - set(df.columns)
        if missing:
            raise InvalidFileError(f"{url} lacks the column(s) {sorted(missing)} of the Allen "
                                   f"{name} table; the file is corrupt or not an ecephys cache "
                                   "table.")
        return df.set_index("id")

    # ---- AllenSDK API -------------------------------------------------------------------------
    # Names, defaults, columns and order are AllenSDK 2.16's (``allen.py``); what differs on
    # purpose is in docs/allensdk-differences.md.
    SESSIONS_KEY, PROBES_KEY, CHANNELS_KEY, UNITS_KEY = TABLES
    SUPPRESS_FROM_UNITS = allen.SUPPRESS_FROM_UNITS
    SUPPRESS_FROM_CHANNELS = allen.SUPPRESS_FROM_CHANNELS
    SUPPRESS_FROM_PROBES = allen.SUPPRESS_FROM_PROBES
    SUPPRESS_FROM_SESSION_TABLE = allen.SUPPRESS_FROM_SESSION_TABLE

    def get_session_table(self, suppress: list[str] | None = None) -> pd.DataFrame:
        """Sessions with ``unit_count`` (units passing the default filters), ``channel_count``,
        ``probe_count`` and ``ecephys_structure_acronyms``; ``suppress=None`` hides AllenSDK's
        ``SUPPRESS_FROM_SESSION_TABLE``, ``suppress=[]`` shows every column."""
        sessions = self._table("sessions").copy()
        key = "ecephys_session_id"
        channels = self._annotated("channels")
        sessions["unit_count"] = _count(self._filtered_units(), key, sessions.index)
        sessions["channel_count"] = _count(channels, key, sessions.index)
        sessions["probe_count"] = _count(self._annotated("probes"), key, sessions.index)
        sessions["ecephys_structure_acronyms"] = _structures(channels, key, sessions.index)
        sessions = _suppress(sessions, suppress, allen.SUPPRESS_FROM_SESSION_TABLE)
        return sessions.rename(columns=allen.SESSION_TABLE_RENAMES)

    def get_probes(self, suppress: list[str] | None = None) -> pd.DataFrame:
        """Probes with their session's columns, ``unit_count``, ``channel_count`` and
        ``ecephys_structure_acronyms``; ``lfp_sampling_rate`` is the rate of the LFP files (the
        table's raw rate divided by ``lfp_temporal_subsampling_factor``, as AllenSDK does)."""
        probes = self._annotated("probes").copy()
        key = "ecephys_probe_id"
        channels = self._annotated("channels")
        probes["unit_count"] = _count(self._filtered_units(), key, probes.index)
        probes["channel_count"] = _count(channels, key, probes.index)
        probes["ecephys_structure_acronyms"] = _structures(channels, key, probes.index)
        return _suppress(probes, suppress, allen.SUPPRESS_FROM_PROBES)

    def get_channels(self, suppress: list[str] | None = None) -> pd.DataFrame:
        """Channels with their probe's and session's columns and ``unit_count`` (units passing
        the default filters whose peak channel it is)."""
        channels = self._annotated("channels").copy()
        channels["unit_count"] = _count(self._filtered_units(), "ecephys_channel_id",
                                        channels.index)
        channels = _suppress(channels, suppress, allen.SUPPRESS_FROM_CHANNELS)
        return channels.rename(columns=allen.CHANNEL_TABLE_RENAMES)

    def _annotated(self, name: str) -> pd.DataFrame:
        """``"probes"``: probes.csv (LFP rate divided by the subsampling factor) with its
        session's columns; ``"channels"``: channels.csv with those (AllenSDK's
        ``_get_annotated_probes`` / ``_get_annotated_channels``), once per process and cache."""
        return merged_units.get((self.url, self.storage_options.key, name),
                                lambda: self._annotate(name))

    def _annotate(self, name: str) -> pd.DataFrame:
        sessions, probes, channels = self._tables("sessions", "probes", "channels")
        if name == "probes":
            probes = probes.copy()
            if {"lfp_sampling_rate", "lfp_temporal_subsampling_factor"} <= set(probes.columns):
                probes["lfp_sampling_rate"] = (probes["lfp_sampling_rate"]
                                               / probes["lfp_temporal_subsampling_factor"])
            return pd.merge(probes, sessions, left_on="ecephys_session_id", right_index=True,
                            suffixes=("_probe", "_session"))
        return pd.merge(channels, self._annotated("probes"), left_on="ecephys_probe_id",
                        right_index=True, suffixes=("_channel", "_probe"))

    def _filtered_units(self) -> pd.DataFrame:
        """The units AllenSDK counts: default filters (``get_units()``'s rows)."""
        return self._select_units(self._units_merged(), True, {})

    def _units_merged(self) -> pd.DataFrame:
        """units.csv joined with the annotated channels, AllenSDK's column names (once per
        process and cache: :data:`merged_units`)."""
        return merged_units.get((self.url, self.storage_options.key), self._merge_units)

    def _merge_units(self) -> pd.DataFrame:
        units = self._table("units").rename(columns=CACHE_UNIT_RENAMES)
        t = pd.merge(units, self._annotated("channels"), left_on="ecephys_channel_id",
                     right_index=True, suffixes=("_unit", "_channel"))
        t.index.name = "id"
        return t

    @staticmethod
    def _select_units(units: pd.DataFrame, filter_by_validity: bool,
                      unit_filters: dict[str, Any]) -> pd.DataFrame:
        """AllenSDK's ``_get_units`` selection: the metric filters, ``quality == 'good'``, and
        out-of-brain units where units.csv knows their structure (it does not in the release,
        so AllenSDK's cache keeps them; a session drops them)."""
        filters = dict(unit_filters)
        out_of_brain = filters.pop("filter_out_of_brain_units", True)
        units = apply_unit_filters(units, **filters)
        if "quality" in units.columns and filter_by_validity:
            units = units[units["quality"] == "good"].drop(columns="quality")
        if out_of_brain and "ecephys_structure_id_unit" in units.columns:
            units = units[units["ecephys_structure_id_unit"].notna()]
        return units

    def get_units(self, suppress: list[str] | None = None, filter_by_validity: bool = True,
                  **unit_filters: Any) -> pd.DataFrame:
        """All units of the cache with AllenSDK's default quality filters (overridable).

        ``amplitude_cutoff_maximum=0.1``, ``presence_ratio_minimum=0.95``,
        ``isi_violations_maximum=0.5``; ``None`` disables a filter. ``filter_by_validity`` keeps
        ``quality == 'good'``. ``suppress=None`` hides AllenSDK's ``SUPPRESS_FROM_UNITS``.
        """
        unit_filter_values(**unit_filters)  # a misspelt filter is an error, not ignored
        units = self._select_units(self._units_merged(), filter_by_validity, unit_filters)
        return _suppress(units.copy(), suppress, allen.SUPPRESS_FROM_UNITS)

    def _all_values(self, column: str, table: pd.DataFrame) -> list:
        return table[column].unique().tolist()

    def get_all_session_types(self, **session_kwargs: Any) -> list:
        return self._all_values("session_type", self.get_session_table(**session_kwargs))

    def get_all_full_genotypes(self, **session_kwargs: Any) -> list:
        return self._all_values("full_genotype", self.get_session_table(**session_kwargs))

    def get_all_ages(self, **session_kwargs: Any) -> list:
        return self._all_values("age_in_days", self.get_session_table(**session_kwargs))

    def get_all_sexes(self, **session_kwargs: Any) -> list:
        return self._all_values("sex", self.get_session_table(**session_kwargs))

    def get_structure_acronyms(self, **channel_kwargs: Any) -> list:
        """Every structure any channel is in (``nan``: outside the brain), in channel order."""
        return self._all_values("ecephys_structure_acronym", self.get_channels(**channel_kwargs))

    def session_url(self, session_id: int) -> str:
        return storage.join(self.url, f"session_{int(session_id)}")

    def get_session_data(self, session_id: int, filter_by_validity: bool = True,
                         **unit_filters: Any):
        """Open one session (metadata only; data stays remote until computed)."""
        from .session import EcephysSession

        sessions = self._table("sessions")
        sid = as_id(session_id, "Session id", UnknownSessionError)
        if sid not in sessions.index:
            sample = ", ".join(str(s) for s in sessions.index[:5])
            raise UnknownSessionError(
                f"Session {sid} is not in this cache ({self.url}, {len(sessions)} sessions, e.g. "
                f"{sample}). See cache.get_session_table().index for the valid ids.")
        unit_filter_values(**unit_filters)  # validate early
        return EcephysSession.open(self, sid, filter_by_validity=filter_by_validity,
                                   **unit_filters)

    # ---- analysis metrics and stimulus templates (release_files.py) -------------------------
    def get_unit_analysis_metrics_for_session(self, session_id: int, annotate: bool = True,
                                              filter_by_validity: bool = True,
                                              **unit_filter_kwargs: Any) -> pd.DataFrame:
        """The release's stimulus metrics of the session's units (``pref_ori_dg``, …); with
        ``annotate``, merged onto ``get_units()`` as AllenSDK does."""
        return release_files.unit_analysis_metrics_for_session(
            self, session_id, annotate, filter_by_validity, unit_filter_kwargs)

    def get_unit_analysis_metrics_by_session_type(self, session_type: str, annotate: bool = True,
                                                  filter_by_validity: bool = True,
                                                  **unit_filter_kwargs: Any) -> pd.DataFrame:
        """The release's stimulus metrics of every unit of a session type."""
        return release_files.unit_analysis_metrics_by_session_type(
            self, session_type, annotate, filter_by_validity, unit_filter_kwargs)

    def get_natural_scene_template(self, number: int) -> np.ndarray:
        return release_files.natural_scene_template(self, number)

    def get_natural_movie_template(self, number: int):
        """Frames of natural movie ``number`` as a lazy Dask array (AllenSDK: in memory)."""
        return release_files.natural_movie_template(self, number)


def as_id(value: Any, what: str, error: type[Exception]) -> int:
    """``value`` as an integer id; a float that is not whole (``715093703.5``), a bool or text
    that is not a number is refused rather than silently truncated to some other id."""
    if isinstance(value, bool | np.bool_):
        raise error(f"{what} {value!r} is not an integer id.")
    if isinstance(value, float | np.floating):
        if not np.isfinite(value) or float(value) != int(value):
            raise error(f"{what} {value!r} is not an integer id.")
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise error(f"{what} {value!r} is not an integer id.") from None


def open_cache(url: str | None = None, **storage_options: Any) -> EcephysProjectCache:
    """Open an ecephys cache (default: the public Allen bucket, anonymously, from config).

    >>> cache = open_cache()                                    # doctest: +SKIP
    >>> cache = open_cache("s3://my-bucket/ecephys-cache/", anon=False)   # doctest: +SKIP
    """
    if url is None:
        url = config.get("cache.url")
    elif not str(url).strip():
        storage.check_url(url)  # an empty string is a mistake, not "the default"
    if not url:
        raise CacheNotFoundError("No cache URL given and neuropixels_dask.cache.url is not set.")
    return EcephysProjectCache(url, storage_options or None)
