"""Reader for the cloud-optimised copy: one Zarr v3 store per session, written by ``convert``.

Why it is fast where the NWB files are slow (numbers and reasoning: ``docs/zarr-layout.md``):

* **One round trip to open.** The store's root ``zarr.json`` carries the consolidated metadata
  of every group and array, plus the attributes the reader needs (LFP time range, channel ids,
  stimulus table names); it and the manifest that checks it are fetched concurrently, so opening
  a session is two GETs in one round trip and ``lfp_source`` costs nothing.
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

Nothing damaged reads as data: every store is opened through ``zarrstore.StrictStore``, so a
missing, empty or short chunk or shard raises
:class:`~neuropixels_dask.errors.DamagedStoreError` naming the object (zarr alone returns the
fill value), and so does a chunk or shard index failing its CRC32C (format 2) or its
decompression, a unit's spike times failing theirs, and a metadata document that differs from
the store's manifest (format 3). The message says which ``convert`` command rewrites it.

The format itself (keys, layout, encodings, table schema) lives in :mod:`neuropixels_dask.zarrstore`,
which the writer (``convert``) shares; this module only reads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import warnings
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import zarr

from .. import storage
from .. import zarrstore as zs
from ..caching import ProcessCache
from ..errors import (
    CacheNotFoundError,
    DamagedStoreError,
    InvalidFileError,
    LFPMissingAtConversionError,
    NoLFPError,
)
from .base import LFPSource, SessionReader, SpikeSource, is_evenly_spaced

#: a read wanting more inner chunks than this of one shard fetches the whole shard object
WHOLE_SHARD_MIN_CHUNKS = 4
#: open arrays kept per process (workers read many blocks of the same arrays)
OPEN_ARRAYS_PER_PROCESS = 64


#: opened (read-only) zarr arrays, per process: a worker reads an array's metadata once
arrays: ProcessCache[tuple[str, str, str], zarr.Array] = ProcessCache(
    "zarr arrays", maxsize=OPEN_ARRAYS_PER_PROCESS)


def open_array(url: str, path: str, storage_options: dict | None) -> zarr.Array:
    """The array ``path`` of the store at ``url`` (opened once per process).

    Its ``zarr.json`` is fetched here and, when the store has a manifest (format 3), checked
    against it before zarr sees it: an edited dtype, scale factor or shape is a
    ``DamagedStoreError`` naming the document, never silently different data.
    """
    opts = zs.storage_options(url, storage_options)

    def make() -> zarr.Array:
        from zarr.core.array import AsyncArray
        from zarr.core.metadata import ArrayV3Metadata
        from zarr.storage import StorePath

        key = f"{path.strip('/')}/zarr.json"
        try:
            manifest = store_manifest(url, opts)
            (raw,) = storage.fetch_objects([storage.join(url, key)], opts, missing_ok=True)
        except Exception as exc:  # noqa: BLE001 - re-raised in the user's words
            raise _translate(exc, storage.join(url, path)) from exc
        if raw is None:
            if manifest is not None and key in manifest["documents"]:
                raise zs.missing_error(url, key)
            raise CacheNotFoundError(f"Nothing found at {storage.join(url, path)}: the Zarr "
                                     "store lacks this array. Rerun `neuropixels-dask convert` "
                                     "for this session.")
        if manifest is not None:
            zs.check_document(manifest, key, raw, url)
        doc = zs.parse_document(raw, url, key)
        try:
            meta = ArrayV3Metadata.from_dict(doc)
        except Exception as exc:  # noqa: BLE001 - any invalid metadata: the document is damaged
            raise zs.document_error(url, key, f"not valid array metadata: "
                                    f"{type(exc).__name__}: {str(exc)[:120]}") from None
        store = zs.open_store(url, opts, strict=True)
        return zarr.Array(AsyncArray(metadata=meta, store_path=StorePath(store, path.strip("/"))))

    return arrays.get((url, path, opts.key), make)


#: the parsed, self-checked manifest of each store (``None``: a store without one), per process
manifests: ProcessCache[tuple[str, str], dict | None] = ProcessCache(
    "zarr manifests", maxsize=OPEN_ARRAYS_PER_PROCESS)


def store_manifest(url: str, storage_options: dict | None, raw: bytes | None = None
                   ) -> dict | None:
    """The manifest of the store at ``url`` (one GET per process and store; ``raw``: its bytes
    when the caller fetched them already), or ``None`` when it has none."""
    opts = zs.storage_options(url, storage_options)

    def make() -> dict | None:
        data = raw
        if data is None:
            (data,) = storage.fetch_objects([storage.join(url, zs.STORE_MANIFEST)], opts,
                                            missing_ok=True)
        return None if data is None else zs.parse_manifest(data, url)

    return manifests.get((url, opts.key), make)


def _translate(exc: BaseException, url: str) -> BaseException:
    """Our error for ``exc``; one of ours comes back as a copy (see ``storage.translate_error``:
    ``raise _translate(exc) from exc`` must not make an exception its own cause)."""
    if isinstance(exc, DamagedStoreError):
        return copy.copy(exc)
    if isinstance(exc, zarr.errors.NodeNotFoundError | KeyError):
        return CacheNotFoundError(f"Nothing found at {url}: the Zarr store lacks this array. "
                                  "Rerun `neuropixels-dask convert` for this session.")
    return storage.translate_error(exc, url)


def open_root(url: str, storage_options: dict | None, session_id: int | None = None
              ) -> zarr.Group:
    """Open a *complete* session store through its consolidated metadata.

    The root ``zarr.json`` (with the consolidated metadata of every node) and the manifest are
    fetched in one concurrent batch; the root is checked against the manifest before it is
    parsed, so everything the reader takes from it is what ``convert`` committed. Raises
    ``CacheNotFoundError`` when there is no store, ``InvalidFileError`` when the store was not
    (yet) marked complete by ``convert``, ``DamagedStoreError`` when its metadata or manifest
    is damaged; a store of format 2 or older without a manifest is read with an
    :class:`~neuropixels_dask.errors.UnverifiedStoreWarning`.
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.group import AsyncGroup
    from zarr.storage import StorePath

    rerun = ("neuropixels-dask convert SRC DST" + (f" --sessions {int(session_id)}"
                                                    if session_id is not None else ""))
    opts = zs.storage_options(url, storage_options)
    try:
        raw, raw_manifest = storage.fetch_objects(
            [storage.join(url, "zarr.json"), storage.join(url, zs.STORE_MANIFEST)], opts,
            missing_ok=True)
    except Exception as exc:  # noqa: BLE001
        err = _translate(exc, url)
        if isinstance(err, CacheNotFoundError):
            raise CacheNotFoundError(f"No converted session at {url}: run `{rerun}`.") from exc
        raise err from exc
    if raw is None:
        raise CacheNotFoundError(
            f"No converted session at {url}. This cache is a Zarr copy (its manifest has "
            f"'session_zarr'), but this session was not converted: run `{rerun}`.")
    manifests.forget((url, opts.key))  # read afresh: the store may have been rewritten
    manifest = None if raw_manifest is None else store_manifest(url, opts, raw_manifest)
    if manifest is not None:
        zs.check_document(manifest, "zarr.json", raw, url)
    doc = zs.parse_document(raw, url, "zarr.json")
    info = (doc.get("attributes") or {}).get(zs.ATTRS_KEY) or {}
    if not isinstance(info, dict) or info.get("format") != zs.FORMAT_NAME:
        raise InvalidFileError(f"{url} is a Zarr group but not a session store written by "
                               "neuropixels-dask convert (no 'neuropixels_dask' attributes).")
    try:
        version = int(info.get("version", 0))
    except (TypeError, ValueError):
        raise zs.document_error(url, "zarr.json", f"store format {info.get('version')!r} is "
                                "not a number") from None
    if version > zs.FORMAT_VERSION:
        raise InvalidFileError(f"{url} was written by a newer neuropixels-dask (store format "
                               f"{version} > {zs.FORMAT_VERSION}): upgrade the package.")
    if version not in zs.READABLE_VERSIONS:
        raise InvalidFileError(f"{url} has store format {version!r}, which this "
                               f"neuropixels-dask does not read ({zs.READABLE_VERSIONS}): delete "
                               f"it and run `{rerun}`.")
    if not info.get("complete") or doc.get("consolidated_metadata") is None:
        raise InvalidFileError(
            f"{url} is incomplete: its conversion was interrupted or is still running, so it is "
            f"not marked complete. Rerun `{rerun}`; finished blocks are kept and skipped.")
    if manifest is None and version >= 3:  # the commit record: without it, not committed
        raise InvalidFileError(
            f"{url} is incomplete: it has no {zs.STORE_MANIFEST}, the record convert writes "
            "last when it commits a session (a conversion interrupted right before it, still "
            f"running, or a copy that lost it). Rerun `{rerun}`: it checks the store and "
            "writes the record again.")
    if manifest is None:
        zs.unverified_warning(url, version)
    store = zs.open_store(url, opts, strict=True)
    # format 1 skipped table chunks equal to the fill value: there, a missing one is that value
    store.strict = zs.strict_tables(version)
    buf = default_buffer_prototype().buffer.from_bytes(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # "consolidated is not spec"
            group = AsyncGroup._from_bytes_v3(StorePath(store), buf, use_consolidated=None)
    except Exception as exc:  # noqa: BLE001 - valid JSON, invalid metadata
        raise zs.document_error(url, "zarr.json", f"not valid group metadata: "
                                f"{type(exc).__name__}: {str(exc)[:120]}") from None
    return zarr.Group(group)


# ---- tables --------------------------------------------------------------------------------

# ---- the reader ----------------------------------------------------------------------------

class ZarrSessionReader(SessionReader):
    """A session converted to ``<session url>/session_<id>.zarr`` (see module docstring)."""

    def __init__(self, session_url: str, session_id: int, storage_options: dict | None = None):
        self.url = session_url.rstrip("/")
        self.session_id = int(session_id)
        self.storage_options = zs.storage_options(self.url, storage_options)
        self.store_url = zs.store_url(self.url, self.session_id)
        self._root = open_root(self.store_url, self.storage_options, self.session_id)
        self._info = dict(self._root.attrs[zs.ATTRS_KEY])
        #: what convert committed (``None``: a format-2 or older store without a manifest)
        self.manifest = store_manifest(self.store_url, self.storage_options)
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
            specs = {n: zs.table_spec(g) for n, g in groups.items()}
            paths = [f"{n}/{p}" for n, s in specs.items() for p in zs.table_array_paths(s)]
            try:
                with storage.bounded():
                    values = zs.read_arrays(self._root, paths + todo_extra)
            except Exception as exc:  # noqa: BLE001
                raise _translate(exc, self.store_url) from exc
            for n, s in specs.items():
                self._cache[n] = zs.assemble_table(
                    s, {p: values[f"{n}/{p}"] for p in zs.table_array_paths(s)})
            for p in todo_extra:
                self._cache[p] = values[p]

    def _table(self, name: str, batch: tuple[str, ...] = (), extra: tuple[str, ...] = ()
               ) -> pd.DataFrame:
        self._tables(list(dict.fromkeys([name, *batch])), extra)
        return self._cache[name].copy()

    def _core(self, name: str) -> pd.DataFrame:
        return self._table(name, zs.CORE_TABLES, (zs.SPIKE_INDEX_PATH,))

    # ---- metadata -------------------------------------------------------------------------
    def probes(self) -> pd.DataFrame:
        return self._core("probes")

    def channels(self) -> pd.DataFrame:
        return self._core("channels")

    def units(self) -> pd.DataFrame:
        return self._core("units")

    def spike_index(self) -> np.ndarray:
        self._tables(list(zs.CORE_TABLES), (zs.SPIKE_INDEX_PATH,))
        return np.asarray(self._cache[zs.SPIKE_INDEX_PATH], dtype=np.int64).copy()

    def spike_source(self) -> SpikeSource:
        arr = self._root[zs.SPIKE_TIMES_PATH]
        return SpikeSource("zarr", self.store_url, self.storage_options, zs.SPIKE_TIMES_PATH,
                           byte_offset=0 if _is_raw(arr) else None, dtype=arr.dtype.str)

    def stimulus_tables(self) -> dict[str, pd.DataFrame]:
        names = [zs.stimulus_group_path(n) for n in self._info.get("stimulus_tables", [])]
        if names:
            self._tables(names)
        return {n.split("/", 1)[1]: self._cache[n].copy() for n in names}

    def invalid_times(self) -> pd.DataFrame:
        if zs.INVALID_TIMES_TABLE not in self._info.get("tables", []):
            return super().invalid_times()
        table = self._table(zs.INVALID_TIMES_TABLE)
        if "tags" in table:  # stored as JSON text (convert.source_tables)
            table["tags"] = pd.Series([np.asarray(json.loads(t), dtype=object)
                                       for t in table["tags"]], index=table.index, dtype=object)
        return table

    def running_speed(self) -> pd.DataFrame:
        return self._table(zs.RUNNING_TABLE)

    def _session_info(self, key: str):
        if key not in self._info:
            raise InvalidFileError(
                f"{self.store_url} was converted before the session's metadata (subject, start "
                "time) were kept in the store: delete it and run `neuropixels-dask convert SRC "
                f"DST --sessions {self.session_id}` again to have them.")
        return self._info[key]

    def session_metadata(self) -> dict:
        meta = dict(self._session_info("session_metadata"))
        meta["session_start_time"] = datetime.fromisoformat(meta["session_start_time"])
        return meta

    def lfp_source(self, probe_id: int, probe_name: str) -> LFPSource:
        path = zs.lfp_group_path(probe_id)
        meta = (self._info.get("lfp") or {}).get(str(int(probe_id)))
        lost = ((self.manifest or {}).get("lfp_missing") or {}).get(str(int(probe_id)))
        if meta is None and lost is not None:
            raise LFPMissingAtConversionError(
                f"Probe {probe_id} ({probe_name}) of session {self.session_id}: this probe's "
                f"LFP was missing from the source at conversion ({lost}), so the Zarr copy "
                f"{self.store_url} has none, although the probe recorded LFP. Restore the LFP "
                "file in the source cache, delete this session's store and run `neuropixels-dask "
                f"convert {zs.source_cache_of(self._info) or 'SRC'} DST --sessions "
                f"{self.session_id}` again.")
        if meta is None:
            raise NoLFPError(
                f"Probe {probe_id} ({probe_name}) of session {self.session_id} has no LFP in "
                f"{self.store_url} (the source cache had no LFP file for it). A few probes of "
                "the real dataset were recorded without LFP; pick a probe with "
                "has_lfp_data == True (session.probes).")
        data = self._root[f"{path}/data"]
        shard = data.shards or data.chunks
        channel_ids = tuple(int(c) for c in meta["channel_ids"])
        if data.ndim != 2 or data.shape[1] != len(channel_ids):
            raise DamagedStoreError(
                f"{self.store_url}: the LFP of probe {probe_id} has shape {data.shape}, but its "
                f"attributes list {len(channel_ids)} channel id(s), one per column: the store "
                f"is damaged. Delete {self.store_url} and rerun `neuropixels-dask convert`.")
        even = meta.get("evenly_spaced")
        src = LFPSource(
            format="zarr", url=self.store_url, storage_options=self.storage_options,
            data_path=f"{path}/data", timestamps_path=f"{path}/timestamps",
            shape=tuple(int(s) for s in data.shape),
            chunks=(int(shard[0]), int(data.shape[1])),
            dtype=zs.lfp_read_dtype(meta["encoding"], data.dtype),
            channel_ids=channel_ids,
            t_first=float(meta["t_first"]), t_last=float(meta["t_last"]))
        if even is None:  # a store written before convert recorded it: check a sample
            even = _timestamps_evenly_spaced(src)
        return dataclasses.replace(src, evenly_spaced=bool(even))


#: inner chunks of the timestamps, besides the first and the last, checked against even spacing
#: in a store whose conversion did not record whether they are
TIMESTAMP_SAMPLE_CHUNKS = 3


def _timestamps_evenly_spaced(src: LFPSource) -> bool:
    """Whether the first, the last and a few chunks of ``src``'s timestamps lie on the even
    grid (``base.is_evenly_spaced``): the same check the NWB reader makes at open."""
    arr = open_array(src.url, src.timestamps_path, src.storage_options)
    n, chunk = int(arr.shape[0]), int(arr.chunks[0])
    if n < 2:
        return True
    count = -(-n // chunk)
    picks = sorted({0, count - 1} | {count * k // (TIMESTAMP_SAMPLE_CHUNKS + 1)
                                     for k in range(1, TIMESTAMP_SAMPLE_CHUNKS + 1)})
    index = np.concatenate([np.arange(k * chunk, min(n, (k + 1) * chunk)) for k in picks])
    return is_evenly_spaced(index, np.concatenate(
        [read_timestamps(src, k * chunk, min(n, (k + 1) * chunk)) for k in picks]), n)


def _is_raw(arr: zarr.Array) -> bool:
    """True when ``arr`` is 1-D, unsharded, stored as plain little-endian bytes (exact ranges):
    a chunk's element ``j`` is at byte ``j * itemsize`` (format 2 appends its CRC32C after the
    last element, which ranged reads leave out)."""
    codecs = list(arr.metadata.codecs)
    if zs.has_checksum(codecs):
        codecs = codecs[:-1]
    return (arr.ndim == 1 and arr.shards is None and len(codecs) == 1
            and codecs[0].__class__.__name__ == "BytesCodec"
            and getattr(codecs[0], "endian", None) is not None
            and getattr(codecs[0].endian, "value", codecs[0].endian) == "little")


# ---- data reads (run inside Dask tasks) ----------------------------------------------------

def read_rows(arr: zarr.Array, url: str, path: str, storage_options: dict | None, i0: int,
              i1: int) -> np.ndarray:
    """Rows ``[i0, i1)`` of a time-sharded array, each shard read the cheap way.

    zarr reads a shard in one GET only when *every* inner chunk of it is wanted; otherwise it
    fetches the shard index and then each wanted chunk in turn — fine for a short window, but
    dozens of sequential requests for a long partial range or the (always partial) last shard of
    an array. So when more than ``WHOLE_SHARD_MIN_CHUNKS`` chunks of a shard, or all of its rows,
    are wanted, the whole shard object is fetched here (all such shards in one concurrent batch) and decoded by
    zarr from memory; short windows keep zarr's index + chunk reads.
    """
    if i1 <= i0 or arr.shards is None or tuple(arr.shards[1:]) != tuple(arr.shape[1:]):
        return _decode(arr, url, path, i0 // int((arr.shards or arr.chunks)[0]), i0, i1)
    shard, chunk = int(arr.shards[0]), int(arr.chunks[0])
    pieces: list[tuple[int, int, int, bool]] = []
    for s in range(i0 // shard, (i1 - 1) // shard + 1):
        a, b = max(i0, s * shard), min(i1, (s + 1) * shard)
        n_chunks = (b - 1) // chunk - a // chunk + 1
        # all of a shard's rows (the last shard's may be fewer chunks than the threshold)
        every = a == s * shard and b == min(int(arr.shape[0]), (s + 1) * shard)
        pieces.append((s, a, b, every or n_chunks > WHOLE_SHARD_MIN_CHUNKS))
    whole = [s for s, _, _, w in pieces if w]
    mem = _shards_in_memory(arr, url, path, storage_options, whole) if whole else None
    parts = [_decode((mem if w else arr), url, path, s, a, b) for s, a, b, w in pieces]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _decode(arr: zarr.Array, url: str, path: str, shard: int, a: int, b: int) -> np.ndarray:
    """Rows ``[a, b)`` of ``arr`` (starting in shard or chunk ``shard``); an object failing its
    checksum or its decoding is named."""
    try:
        return arr[a:b]
    except Exception as exc:  # noqa: BLE001 - damage is named, anything else passes
        key = f"{path}/{arr.metadata.encode_chunk_key((shard, *(0,) * (arr.ndim - 1)))}"
        err = zs.damaged_error(exc, url, key, (a, b))
        if err is None:
            raise
        raise err from exc


def _shards_in_memory(arr: zarr.Array, url: str, path: str, storage_options: dict | None,
                      shards: list[int]) -> zarr.Array:
    """The array ``arr`` backed by a memory store holding just ``shards`` (fetched at once)."""
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    tail = (0,) * (arr.ndim - 1)
    keys = [arr.metadata.encode_chunk_key((s, *tail)) for s in shards]
    urls = [storage.join(url, path, k) for k in keys]
    blobs = storage.fetch_objects(urls, zs.storage_options(url, storage_options), missing_ok=True)
    content = dict(arr.metadata.to_buffer_dict(proto))
    for k, blob in zip(keys, blobs, strict=True):
        if blob is None:  # zarr would read it as the fill value
            raise zs.missing_error(url, f"{path}/{k}")
        if not blob:
            raise zs.truncated_error(url, f"{path}/{k}", "an empty object")
        content[k] = proto.buffer.from_bytes(blob)
    return zarr.open_array(zarr.storage.MemoryStore(content), mode="r", zarr_format=3)


def read_lfp_block(src: LFPSource, i0: int, i1: int, cols) -> np.ndarray:
    """LFP samples ``[i0, i1)`` of columns ``cols`` as float32 ``(time, channel)``.

    Inner chunks span all channels, so the row range is read once and columns are picked in
    memory: a shard-aligned block is one GET, a 1 s window one index + 1–2 chunk GETs.
    """
    cols = np.asarray(cols, dtype=np.int64)
    arr = open_array(src.url, src.data_path, src.storage_options)
    try:
        with storage.bounded():  # zarr's own reads too: one deadline for the block
            raw = read_rows(arr, src.url, src.data_path, src.storage_options, i0, i1)
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc, storage.join(src.url, src.data_path)) from exc
    # channel-major, as the NWB reader's blocks: the spectral kernel's segment copies read
    # contiguous memory (zarrstore.decode_lfp)
    block = zs.decode_lfp(raw, zs.lfp_scale(arr), order="F")
    if len(cols) == block.shape[1] and np.array_equal(cols, np.arange(block.shape[1])):
        return block
    return np.asfortranarray(block[:, cols])


def read_timestamps(src: LFPSource, i0: int, i1: int) -> np.ndarray:
    arr = open_array(src.url, src.timestamps_path, src.storage_options)
    try:
        with storage.bounded():
            return read_rows(arr, src.url, src.timestamps_path, src.storage_options, i0, i1)
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc, storage.join(src.url, src.timestamps_path)) from exc


def _pieces(a: int, b: int, chunk: int):
    """``(chunk index, start, stop)`` element ranges of ``[a, b)`` split at chunk boundaries."""
    c = a // chunk
    while a < b:
        end = min(b, (c + 1) * chunk)
        yield c, a - c * chunk, end - c * chunk
        a, c = end, c + 1


#: per store and process: ``(piece starts, piece CRC32Cs)`` of the spike times, or ``None``
#: for a store without them (format 2 and older)
spike_checks: ProcessCache[tuple[str, str], tuple[np.ndarray, np.ndarray] | None] = ProcessCache(
    "zarr spike checksums", maxsize=OPEN_ARRAYS_PER_PROCESS)


def spike_checksums(src: SpikeSource, arr: zarr.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """The spike-time pieces and their CRC32Cs (two small arrays, read once per process and
    store; format 3). A store whose manifest lists them must have them."""
    opts = zs.storage_options(src.url, src.storage_options)

    def make() -> tuple[np.ndarray, np.ndarray] | None:
        manifest = store_manifest(src.url, opts)
        listed = manifest is not None and \
            f"{zs.SPIKE_CRC_PATH}/zarr.json" in manifest["documents"]
        try:
            crc_arr = open_array(src.url, zs.SPIKE_CRC_PATH, opts)
        except CacheNotFoundError:
            if listed:
                raise zs.missing_error(src.url, f"{zs.SPIKE_CRC_PATH}/zarr.json") from None
            return None
        index_arr = open_array(src.url, zs.SPIKE_INDEX_PATH, opts)
        values = _read_small(src.url, [crc_arr, index_arr])
        starts = zs.spike_piece_starts(values[1], int(arr.chunks[0]), int(arr.shape[0]))
        if len(starts) != len(values[0]):
            raise zs.document_error(src.url, f"{zs.SPIKE_CRC_PATH}/zarr.json",
                                    f"{len(values[0])} checksums for {len(starts)} pieces")
        return starts, values[0]

    return spike_checks.get((src.url, opts.key), make)


def _read_small(url: str, arrs: list[zarr.Array]) -> list[np.ndarray]:
    """Whole 1-D arrays of one chunk each (their CRC32C checked by zarr), damage named."""
    return [_decode(a, url, a.path, 0, 0, int(a.shape[0])) for a in arrs]


def _whole_pieces(a: int, b: int, starts: np.ndarray, n: int) -> tuple[int, int]:
    """``[a, b)`` widened to the pieces it touches (a unit's range is already whole)."""
    if b <= a:
        return a, b
    lo = int(starts[np.searchsorted(starts, a, "right") - 1])
    k = int(np.searchsorted(starts, b, "left"))
    return lo, (int(starts[k]) if k < len(starts) else n)


def read_spike_ranges(src: SpikeSource, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
    """Several units' spike times in one concurrent batch of exact ranged reads.

    With the raw layout (``byte_offset`` set) element ``i`` lives in chunk object ``i // C`` at
    byte ``(i % C) * itemsize``, so each unit costs one ranged GET (two if it straddles a chunk
    boundary) of exactly its bytes. Format 3 records a CRC32C of every unit's part of each chunk
    (:func:`zarrstore.spike_piece_starts`): the bytes of every read are checked against it, so a
    damaged byte in a unit is a ``DamagedStoreError`` and the read stays one GET. Other layouts
    are read through zarr (whose chunk checksums then apply).
    """
    dtype = np.dtype(src.dtype)
    arr = open_array(src.url, src.path, src.storage_options)
    if src.byte_offset is None or not _is_raw(arr):
        return [np.asarray(arr[a:b], dtype=np.float64) if b > a else np.empty(0, np.float64)
                for a, b in ranges]
    checks = spike_checksums(src, arr)
    n, chunk = int(arr.shape[0]), int(arr.chunks[0])
    wide = [_whole_pieces(int(a), int(b), checks[0], n) if checks is not None
            else (int(a), int(b)) for a, b in ranges]
    paths, starts, stops, owners, firsts = [], [], [], [], []
    for k, (a, b) in enumerate(wide):
        for c, s, e in _pieces(a, b, chunk):
            key = arr.metadata.encode_chunk_key((c,))
            paths.append(storage.join(src.url, src.path, key))
            starts.append(src.byte_offset + s * dtype.itemsize)
            stops.append(src.byte_offset + e * dtype.itemsize)
            owners.append(k)
            firsts.append(c * chunk + s)
    opts = zs.storage_options(src.url, src.storage_options)
    try:
        blobs = storage.fetch_object_ranges(paths, opts, starts, stops)
    except FileNotFoundError as exc:  # a chunk object is gone: name it
        base = len(src.url.rstrip("/")) + 1
        lost = [p for p in dict.fromkeys(paths) if not storage.exists(p, opts)]
        raise zs.missing_error(src.url, lost[0][base:] if lost else src.path) from exc
    parts: list[list[bytes]] = [[] for _ in ranges]
    base = len(src.url.rstrip("/")) + 1
    for k, blob, path, a, b, first in zip(owners, blobs, paths, starts, stops, firsts,
                                          strict=True):
        if len(blob) != b - a:  # a ranged GET past the end of a truncated object comes back short
            raise zs.truncated_error(src.url, path[base:],
                                     f"bytes {a}–{b} asked, {len(blob)} returned")
        if checks is not None:
            lo = int(np.searchsorted(checks[0], first))
            got = zs.piece_checksums(blob, first, checks[0], dtype.itemsize)
            if not np.array_equal(got, checks[1][lo:lo + len(got)]):
                raise zs.damaged_object_error(
                    src.url, path[base:], f"spikes {first}–{first + len(blob) // dtype.itemsize}"
                    f" fail their CRC32C ({zs.SPIKE_CRC_PATH})")
        parts[k].append(blob)
    out = []
    for (a, b), (wa, _), p in zip(ranges, wide, parts, strict=True):
        if not p:
            out.append(np.empty(0, np.float64))
            continue
        values = np.frombuffer(b"".join(p), dtype).astype(np.float64, copy=False)
        out.append(values[a - wa:b - wa] if (a, b) != (wa, wa + len(values)) else values)
    return out


def clear_caches() -> None:
    """Forget opened arrays, manifests and spike checksums (after a store was rewritten in
    this process)."""
    arrays.clear()
    manifests.clear()
    spike_checks.clear()


def open_session_reader(session_url: str, session_id: int,
                        storage_options: dict | None) -> ZarrSessionReader:
    """The reader of a converted session (the format's entry point, see ``readers``)."""
    return ZarrSessionReader(session_url, session_id, storage_options)
