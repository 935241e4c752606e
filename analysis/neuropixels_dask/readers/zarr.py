"""Reader for the cloud-optimised copy: one Zarr v3 store per session, written by ``convert``.

Why it is fast where the NWB files are slow (numbers and reasoning: ``docs/zarr-layout.md``):

* **One request to open.** The store's root ``zarr.json`` carries the consolidated metadata of every
  group and array, plus the attributes the reader needs (LFP time range, channel ids, stimulus
  table names), so opening a session is a single GET and ``lfp_source`` costs nothing.
* **LFP chunked for the access patterns that matter.** ``(time, channel)`` inner chunks of ~1 s ×
  all channels inside shards of ~64 s: a short all-channel window reads one shard index and one or
  two inner chunks; a whole-probe pass reads each shard in one GET. Dask tasks follow shards
  (``LFPSource.chunks`` is the *shard* shape: the unit one task reads).
* **Spike times raw, in fixed-size chunks.** Like the published files (where ``spike_times`` is
  uncompressed because it barely compresses), so a unit's spikes are exact ranged reads of the
  chunk objects — no decompression of a neighbour's spikes, one batch for many units.
* **Tables as columns** (one small array per column, xarray-friendly), read in one concurrent
  batch per group of tables, and rebuilt with exactly the dtypes the NWB reader returns.

A store is only readable once ``convert`` has written and verified everything and marked it
complete (``complete`` in the root attributes, together with the consolidated metadata); a half
written store raises :class:`~neuropixels_dask.errors.InvalidFileError` telling to rerun convert.
"""

from __future__ import annotations

import collections
import copy
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import zarr

from .. import storage
from ..errors import CacheNotFoundError, InvalidFileError, NoLFPError
from .base import LFPSource, SessionReader, SpikeSource

#: root attribute holding this package's description of the store
ATTRS_KEY = "neuropixels_dask"
#: attribute of a table group: column order, dtypes, index
TABLE_ATTRS_KEY = "neuropixels_dask_table"
FORMAT_NAME = "ecephys-session"
FORMAT_VERSION = 1
#: LFP encodings: int16 counts × ``scale_factor`` (lossless for Allen's quantised volts), or the
#: float32 values themselves when a probe's data are not exactly on that grid
ENCODING_INT16 = "int16-scaled"
ENCODING_FLOAT32 = "float32"
#: tables read together in one concurrent batch (everything ``session.units`` needs)
CORE_TABLES = ("probes", "channels", "units")
SPIKE_TIMES_PATH = "units/spike_times"
SPIKE_INDEX_PATH = "units/spike_times_index"
RUNNING_TABLE = "running"
INVALID_TIMES_TABLE = "intervals/invalid_times"
#: concurrent requests when a group of tables is read
TABLE_READ_THREADS = 16
#: a read wanting more inner chunks than this of one shard fetches the whole shard object
WHOLE_SHARD_MIN_CHUNKS = 4
#: open stores / arrays kept per process (workers read many blocks of the same arrays)
OPEN_ARRAYS_PER_PROCESS = 64


def store_name(session_id: int) -> str:
    return f"session_{int(session_id)}.zarr"


def store_url(session_url: str, session_id: int) -> str:
    """``<cache>/session_<id>/session_<id>.zarr``: the store sits where the NWB file sits."""
    return storage.join(session_url, store_name(session_id))


def lfp_group_path(probe_id: int) -> str:
    return f"lfp/probe_{int(probe_id)}"


def stimulus_group_path(name: str) -> str:
    return f"stimulus/{name}"


# ---- stores and arrays (per process) -------------------------------------------------------

def zarr_storage_options(url: str, storage_options: dict | None) -> dict[str, Any]:
    """Our storage options for a Zarr store at ``url``.

    s3fs fetches a whole object with a HEAD (to size it) and then concurrent ranged GETs when
    ``max_concurrency > 1``: two requests where one does for our metadata documents and shards of
    a few MB. Parallelism comes from Dask tasks and zarr's concurrent chunk reads instead.
    """
    opts = copy.deepcopy(storage.storage_options_for(url, storage_options))
    if str(url).startswith(("s3://", "s3a://")):
        opts.setdefault("max_concurrency", 1)
    return opts


def filesystem(url: str, storage_options: dict | None):
    """``storage.filesystem`` on a private copy of the options.

    botocore rewrites the ``retries`` dict it is given (``max_attempts`` → ``total_max_attempts``);
    a shared options dict would then change under our per-process caches' keys.
    """
    return storage.filesystem(url, zarr_storage_options(url, storage_options))


def open_store(url: str, storage_options: dict | None, *, read_only: bool = True):
    """A zarr store for ``url``: ``LocalStore`` for local paths (atomic writes), else fsspec."""
    fs, path = filesystem(url, storage_options)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        url, storage_options=zarr_storage_options(url, storage_options), read_only=read_only)


class _ArrayCache:
    """LRU of opened (read-only) zarr arrays: a worker reads the array metadata once."""

    def __init__(self) -> None:
        self._items: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str, path: str, storage_options: dict | None) -> zarr.Array:
        key = (url, path, storage.options_key(storage_options))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        try:
            arr = zarr.open_array(open_store(url, storage_options), path=path, mode="r",
                                  zarr_format=3)
        except Exception as exc:  # noqa: BLE001 - re-raised in the user's words
            raise _translate(exc, storage.join(url, path)) from exc
        with self._lock:
            self._items[key] = arr
            while len(self._items) > OPEN_ARRAYS_PER_PROCESS:
                self._items.popitem(last=False)
        return arr

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


arrays = _ArrayCache()


def _translate(exc: BaseException, url: str) -> BaseException:
    if isinstance(exc, zarr.errors.NodeNotFoundError | KeyError):
        return CacheNotFoundError(f"Nothing found at {url}: the Zarr store lacks this array. "
                                  "Rerun `neuropixels-dask convert` for this session.")
    return storage.translate_error(exc, url)


def open_root(url: str, storage_options: dict | None, session_id: int | None = None
              ) -> zarr.Group:
    """Open a *complete* session store through its consolidated metadata (one GET).

    Raises ``CacheNotFoundError`` when there is no store and ``InvalidFileError`` when the store
    was not (yet) marked complete by ``convert``.
    """
    rerun = ("neuropixels-dask convert SRC DST" + (f" --sessions {int(session_id)}"
                                                    if session_id is not None else ""))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # "consolidated is not spec"
            root = zarr.open_group(open_store(url, storage_options), mode="r", zarr_format=3,
                                   use_consolidated=None)
    except (FileNotFoundError, zarr.errors.NodeNotFoundError) as exc:
        raise CacheNotFoundError(
            f"No converted session at {url}. This cache is a Zarr copy (its manifest has "
            f"'session_zarr'), but this session was not converted: run `{rerun}`.") from exc
    except Exception as exc:  # noqa: BLE001
        err = _translate(exc, url)
        if isinstance(err, CacheNotFoundError):
            raise CacheNotFoundError(f"No converted session at {url}: run `{rerun}`.") from exc
        raise err from exc
    info = root.attrs.get(ATTRS_KEY) or {}
    if info.get("format") != FORMAT_NAME:
        raise InvalidFileError(f"{url} is a Zarr group but not a session store written by "
                               "neuropixels-dask convert (no 'neuropixels_dask' attributes).")
    if int(info.get("version", 0)) > FORMAT_VERSION:
        raise InvalidFileError(f"{url} was written by a newer neuropixels-dask (store format "
                               f"{info.get('version')} > {FORMAT_VERSION}): upgrade the package.")
    if not info.get("complete") or root.metadata.consolidated_metadata is None:
        raise InvalidFileError(
            f"{url} is incomplete: its conversion was interrupted or is still running, so it is "
            f"not marked complete. Rerun `{rerun}`; finished blocks are kept and skipped.")
    return root


# ---- tables --------------------------------------------------------------------------------

def table_spec(group: zarr.Group) -> dict:
    spec = group.attrs.get(TABLE_ATTRS_KEY)
    if spec is None:
        raise InvalidFileError(f"{group.store_path} is not a table group written by convert.")
    return spec


def table_array_paths(group: zarr.Group) -> list[str]:
    """Arrays (relative to the group) that hold the table: index first, then the columns."""
    spec = table_spec(group)
    index = [spec["index"]["name"]] if spec["index"]["kind"] == "array" else []
    return index + list(spec["columns"])


def assemble_table(spec: dict, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Rebuild the DataFrame exactly as the NWB reader builds it (same constructor, same dtypes).

    String columns come back from zarr as numpy ``StringDType``; the NWB reader hands pandas
    ``object`` arrays of ``str``, so they are converted back before the frame is built, and any
    dtype that still differs is cast to the recorded one.
    """
    def col(v: np.ndarray) -> np.ndarray:
        return v.astype(object) if v.dtype.kind in ("T", "U", "O") else v

    data = {c: col(values[c]) for c in spec["columns"]}
    ix = spec["index"]
    if ix["kind"] == "array":
        index = pd.Index(col(values[ix["name"]]), name=ix["name"])
    else:
        index = pd.RangeIndex(ix["start"], ix["stop"], ix["step"], name=ix.get("name"))
    df = pd.DataFrame(data, index=index) if data else pd.DataFrame(index=index)
    for c, dtype in spec["dtypes"].items():
        if str(df[c].dtype) != dtype:
            df[c] = df[c].astype(dtype)
    if ix["kind"] == "array" and str(df.index.dtype) != ix["dtype"]:
        df.index = df.index.astype(ix["dtype"])
    return df


def read_arrays(group: zarr.Group, paths: list[str]) -> dict[str, np.ndarray]:
    """Whole small arrays, fetched concurrently: a group of tables costs one round trip."""
    nodes = [group[p] for p in paths]
    if not nodes:
        return {}
    with ThreadPoolExecutor(min(TABLE_READ_THREADS, len(nodes))) as pool:
        values = list(pool.map(lambda a: a[...], nodes))
    return dict(zip(paths, values, strict=True))


# ---- the reader ----------------------------------------------------------------------------

class ZarrSessionReader(SessionReader):
    """A session converted to ``<session url>/session_<id>.zarr`` (see module docstring)."""

    def __init__(self, session_url: str, session_id: int, storage_options: dict | None = None):
        self.url = session_url.rstrip("/")
        self.session_id = int(session_id)
        self.storage_options = zarr_storage_options(self.url, storage_options)
        self.store_url = store_url(self.url, self.session_id)
        self._root = open_root(self.store_url, self.storage_options, self.session_id)
        self._info = dict(self._root.attrs[ATTRS_KEY])
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ---- table plumbing -------------------------------------------------------------------
    def _tables(self, names: list[str], extra: tuple[str, ...] = ()) -> None:
        """Read the listed tables (and extra arrays) in one concurrent batch, into the cache."""
        with self._lock:
            todo = [n for n in names if n not in self._cache]
            todo_extra = [p for p in extra if p not in self._cache]
            if not todo and not todo_extra:
                return
            groups = {}
            for n in todo:
                try:
                    groups[n] = self._root[n]
                except KeyError:
                    raise InvalidFileError(f"{self.store_url} has no table '{n}': the store is "
                                           "damaged; delete it and rerun convert.") from None
            paths = [f"{n}/{p}" for n, g in groups.items() for p in table_array_paths(g)]
            try:
                values = read_arrays(self._root, paths + todo_extra)
            except Exception as exc:  # noqa: BLE001
                raise _translate(exc, self.store_url) from exc
            for n, g in groups.items():
                self._cache[n] = assemble_table(
                    table_spec(g), {p: values[f"{n}/{p}"] for p in table_array_paths(g)})
            for p in todo_extra:
                self._cache[p] = values[p]

    def _table(self, name: str, batch: tuple[str, ...] = (), extra: tuple[str, ...] = ()
               ) -> pd.DataFrame:
        self._tables(list(dict.fromkeys([name, *batch])), extra)
        return self._cache[name].copy()

    def _core(self, name: str) -> pd.DataFrame:
        return self._table(name, CORE_TABLES, (SPIKE_INDEX_PATH,))

    # ---- metadata -------------------------------------------------------------------------
    def probes(self) -> pd.DataFrame:
        return self._core("probes")

    def channels(self) -> pd.DataFrame:
        return self._core("channels")

    def units(self) -> pd.DataFrame:
        return self._core("units")

    def spike_index(self) -> np.ndarray:
        self._tables(list(CORE_TABLES), (SPIKE_INDEX_PATH,))
        return np.asarray(self._cache[SPIKE_INDEX_PATH], dtype=np.int64).copy()

    def spike_source(self) -> SpikeSource:
        arr = self._root[SPIKE_TIMES_PATH]
        return SpikeSource("zarr", self.store_url, self.storage_options, SPIKE_TIMES_PATH,
                           byte_offset=0 if _is_raw(arr) else None, dtype=arr.dtype.str)

    def stimulus_tables(self) -> dict[str, pd.DataFrame]:
        names = [stimulus_group_path(n) for n in self._info.get("stimulus_tables", [])]
        if names:
            self._tables(names)
        return {n.split("/", 1)[1]: self._cache[n].copy() for n in names}

    def invalid_times(self) -> pd.DataFrame:
        if INVALID_TIMES_TABLE not in self._info.get("tables", []):
            return super().invalid_times()
        return self._table(INVALID_TIMES_TABLE)

    def running_speed(self) -> pd.DataFrame:
        return self._table(RUNNING_TABLE)

    def lfp_source(self, probe_id: int, probe_name: str) -> LFPSource:
        path = lfp_group_path(probe_id)
        meta = (self._info.get("lfp") or {}).get(str(int(probe_id)))
        if meta is None:
            raise NoLFPError(
                f"Probe {probe_id} ({probe_name}) of session {self.session_id} has no LFP in "
                f"{self.store_url} (the source cache had no LFP file for it). A few probes of "
                "the real dataset were recorded without LFP; pick a probe with "
                "has_lfp_data == True (session.probes).")
        data = self._root[f"{path}/data"]
        shard = data.shards or data.chunks
        return LFPSource(
            format="zarr", url=self.store_url, storage_options=self.storage_options,
            data_path=f"{path}/data", timestamps_path=f"{path}/timestamps",
            shape=tuple(int(s) for s in data.shape),
            chunks=(int(shard[0]), int(data.shape[1])),
            dtype=np.dtype(np.float32).str if meta["encoding"] == ENCODING_INT16
            else data.dtype.str,
            channel_ids=tuple(int(c) for c in meta["channel_ids"]),
            t_first=float(meta["t_first"]), t_last=float(meta["t_last"]))


def _is_raw(arr: zarr.Array) -> bool:
    """True when ``arr`` is 1-D, unsharded, stored as plain little-endian bytes (exact ranges)."""
    codecs = arr.metadata.codecs
    return (arr.ndim == 1 and arr.shards is None and len(codecs) == 1
            and codecs[0].__class__.__name__ == "BytesCodec"
            and getattr(codecs[0], "endian", None) is not None
            and getattr(codecs[0].endian, "value", codecs[0].endian) == "little")


# ---- data reads (run inside Dask tasks) ----------------------------------------------------

def decode_lfp(raw: np.ndarray, scale: float | None) -> np.ndarray:
    """Stored LFP → float32 volts. For int16 counts the product is formed in float64 and rounded
    once to float32, which reproduces Allen's float32 volts bit for bit (checked at conversion)."""
    if scale is None:
        return raw
    return (raw.astype(np.float64) * scale).astype(np.float32)


def read_rows(arr: zarr.Array, url: str, path: str, storage_options: dict | None, i0: int,
              i1: int) -> np.ndarray:
    """Rows ``[i0, i1)`` of a time-sharded array, each shard read the cheap way.

    zarr reads a shard in one GET only when *every* inner chunk of it is wanted; otherwise it
    fetches the shard index and then each wanted chunk in turn — fine for a short window, but
    dozens of sequential requests for a long partial range or the (always partial) last shard of
    an array. So when more than ``WHOLE_SHARD_MIN_CHUNKS`` chunks of a shard are wanted, the
    whole shard object is fetched here (all such shards in one concurrent batch) and decoded by
    zarr from memory; short windows keep zarr's index + chunk reads.
    """
    if i1 <= i0 or arr.shards is None or tuple(arr.shards[1:]) != tuple(arr.shape[1:]):
        return arr[i0:i1]
    shard, chunk = int(arr.shards[0]), int(arr.chunks[0])
    pieces: list[tuple[int, int, int, bool]] = []
    for s in range(i0 // shard, (i1 - 1) // shard + 1):
        a, b = max(i0, s * shard), min(i1, (s + 1) * shard)
        n_chunks = (b - 1) // chunk - a // chunk + 1
        pieces.append((s, a, b, n_chunks > WHOLE_SHARD_MIN_CHUNKS))
    whole = [s for s, _, _, w in pieces if w]
    mem = _shards_in_memory(arr, url, path, storage_options, whole) if whole else None
    parts = [(mem if w else arr)[a:b] for _, a, b, w in pieces]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _shards_in_memory(arr: zarr.Array, url: str, path: str, storage_options: dict | None,
                      shards: list[int]) -> zarr.Array:
    """The array ``arr`` backed by a memory store holding just ``shards`` (fetched at once)."""
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    tail = (0,) * (arr.ndim - 1)
    keys = [arr.metadata.encode_chunk_key((s, *tail)) for s in shards]
    fs, _ = filesystem(url, storage_options)
    paths = [fs._strip_protocol(storage.join(url, path, k)) for k in keys]
    try:
        blobs = fs.cat(paths, on_error="omit")  # a missing shard reads as fill value
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc, storage.join(url, path)) from exc
    content = dict(arr.metadata.to_buffer_dict(proto))
    for k, p in zip(keys, paths, strict=True):
        if p in blobs:
            content[k] = proto.buffer.from_bytes(blobs[p])
    return zarr.open_array(zarr.storage.MemoryStore(content), mode="r", zarr_format=3)


def read_lfp_block(src: LFPSource, i0: int, i1: int, cols) -> np.ndarray:
    """LFP samples ``[i0, i1)`` of columns ``cols`` as float32 ``(time, channel)``.

    Inner chunks span all channels, so the row range is read once and columns are picked in
    memory: a shard-aligned block is one GET, a 1 s window one index + 1–2 chunk GETs.
    """
    cols = np.asarray(cols, dtype=np.int64)
    arr = arrays.get(src.url, src.data_path, src.storage_options)
    try:
        raw = read_rows(arr, src.url, src.data_path, src.storage_options, i0, i1)
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc, storage.join(src.url, src.data_path)) from exc
    scale = arr.attrs.get("scale_factor") if np.dtype(arr.dtype).kind == "i" else None
    block = decode_lfp(raw, scale)
    if len(cols) == block.shape[1] and np.array_equal(cols, np.arange(block.shape[1])):
        return block
    return np.ascontiguousarray(block[:, cols])


def read_timestamps(src: LFPSource, i0: int, i1: int) -> np.ndarray:
    arr = arrays.get(src.url, src.timestamps_path, src.storage_options)
    try:
        return read_rows(arr, src.url, src.timestamps_path, src.storage_options, i0, i1)
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc, storage.join(src.url, src.timestamps_path)) from exc


def read_spikes(src: SpikeSource, start: int, stop: int) -> np.ndarray:
    """Flat spike times ``[start, stop)``."""
    return read_spike_ranges(src, [(start, stop)])[0]


def _pieces(a: int, b: int, chunk: int):
    """``(chunk index, start, stop)`` element ranges of ``[a, b)`` split at chunk boundaries."""
    c = a // chunk
    while a < b:
        end = min(b, (c + 1) * chunk)
        yield c, a - c * chunk, end - c * chunk
        a, c = end, c + 1


def read_spike_ranges(src: SpikeSource, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
    """Several units' spike times in one concurrent batch of exact ranged reads.

    With the raw layout (``byte_offset`` set) element ``i`` lives in chunk object ``i // C`` at
    byte ``(i % C) * itemsize``, so each unit costs one ranged GET (two if it straddles a chunk
    boundary) of exactly its bytes. Other layouts are read through zarr.
    """
    dtype = np.dtype(src.dtype)
    arr = arrays.get(src.url, src.path, src.storage_options)
    if src.byte_offset is None or not _is_raw(arr):
        return [np.asarray(arr[a:b], dtype=np.float64) if b > a else np.empty(0, np.float64)
                for a, b in ranges]
    chunk = int(arr.chunks[0])
    paths, starts, stops, owners = [], [], [], []
    for k, (a, b) in enumerate(ranges):
        for c, s, e in _pieces(int(a), int(b), chunk):
            key = arr.metadata.encode_chunk_key((c,))
            paths.append(storage.join(src.url, src.path, key))
            starts.append(src.byte_offset + s * dtype.itemsize)
            stops.append(src.byte_offset + e * dtype.itemsize)
            owners.append(k)
    blobs: list[bytes] = []
    if paths:
        fs, _ = filesystem(src.url, src.storage_options)
        local = [fs._strip_protocol(p) for p in paths]
        try:
            blobs = fs.cat_ranges(local, starts, stops)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, storage.join(src.url, src.path)) from exc
    parts: list[list[bytes]] = [[] for _ in ranges]
    for k, blob in zip(owners, blobs, strict=True):
        if isinstance(blob, BaseException):
            raise _translate(blob, storage.join(src.url, src.path))
        parts[k].append(blob)
    return [np.frombuffer(b"".join(p), dtype).astype(np.float64, copy=False) if p
            else np.empty(0, np.float64) for p in parts]


def clear_caches() -> None:
    """Forget opened arrays (after a store was rewritten in this process)."""
    arrays.clear()
