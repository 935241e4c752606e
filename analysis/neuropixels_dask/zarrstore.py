"""The cloud-optimised session store: one Zarr v3 store per session, the format's one home.

Both sides use this module and nothing of each other: the reader (``readers/zarr.py``) and the
writer (``convert.py``). It defines

* **keys and paths**: where a session's store sits in a cache, the groups and arrays inside it,
  the root attributes (:data:`ATTRS_KEY`) and the manifest entry that marks a converted cache;
* **the layout** (:class:`Layout`): chunk and shard sizes, chosen by measurement
  (``benchmarks/zarr_layout.py``, ``docs/zarr-layout.md``);
* **LFP encodings**: int16 counts × 0.195 µV wherever that is bit-exact, else float32, and the
  codecs of each;
* **the table schema**: one array per column plus the index, with column order and dtypes in the
  group's attributes, so a table comes back exactly as the NWB reader builds it;
* **integrity** (format version 2): every chunk and shard carries a CRC32C (zarr v3's
  ``crc32c`` codec on every chunk, and the shard index checksum of v3 sharding), every chunk is
  written (``write_empty_chunks``), and :class:`StrictStore` turns a missing or short object
  into :class:`~neuropixels_dask.errors.DamagedStoreError` instead of zarr's fill value;
  (format version 3) a CRC32C of every unit's spike times per spike chunk (a unit's ranged read
  checks its own bytes), and the store's **manifest** (:data:`STORE_MANIFEST`): a SHA-256 of
  every metadata document, written last when ``convert`` commits the session, checked by the
  reader when it opens the store and by ``verify``;
* **opening stores** over fsspec with the options this format wants.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import zarr
from zarr.abc.store import ByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, TransposeCodec, ZstdCodec
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from . import storage
from .errors import DamagedStoreError, InvalidFileError, UnverifiedStoreWarning

# ---- keys ------------------------------------------------------------------------------------
#: root attribute holding this package's description of the store
ATTRS_KEY = "neuropixels_dask"
#: attribute of a table group: column order, dtypes, index
TABLE_ATTRS_KEY = "neuropixels_dask_table"
FORMAT_NAME = "ecephys-session"
#: 3: format 2 + per-unit spike-time checksums + the manifest of metadata checksums (the
#: commit record). 2 (still read, with an :class:`UnverifiedStoreWarning`): a CRC32C on every
#: chunk and shard index, every chunk written (tables too); metadata and a unit's part of a
#: spike chunk unchecked. 1 (still read): no chunk checksums; data arrays had every chunk
#: written, tables skipped all-fill chunks.
FORMAT_VERSION = 3
#: versions this package reads (see docs/zarr-layout.md, "Integrity")
READABLE_VERSIONS = (1, 2, 3)
#: the store's commit record: SHA-256 of every metadata document, written last (format 3)
STORE_MANIFEST = "manifest.json"
#: the manifest entry ``convert`` adds: how a cache announces that it is a Zarr copy
MANIFEST_ENTRY = {"key": "session_zarr", "type": "dir", "spec": "session_%d.zarr",
                  "parent_key": "session_data"}
#: tables read together in one concurrent batch (everything ``session.units`` needs)
CORE_TABLES = ("probes", "channels", "units")
SPIKE_TIMES_PATH = "units/spike_times"
SPIKE_INDEX_PATH = "units/spike_times_index"
#: CRC32C (uint32) of every spike-time *piece*: a unit's spikes within one spike chunk
#: (:func:`spike_piece_starts`), in order; format 3
SPIKE_CRC_PATH = "units/spike_times_crc32c"
RUNNING_TABLE = "running"
INVALID_TIMES_TABLE = "intervals/invalid_times"
#: where an unfinished conversion keeps its per-block markers (removed once complete)
PROGRESS_DIR = ".convert"


def store_name(session_id: int) -> str:
    return f"session_{int(session_id)}.zarr"


def store_url(session_url: str, session_id: int) -> str:
    """``<cache>/session_<id>/session_<id>.zarr``: the store sits where the NWB file sits."""
    return storage.join(session_url, store_name(session_id))


def lfp_group_path(probe_id: int) -> str:
    return f"lfp/probe_{int(probe_id)}"


def stimulus_group_path(name: str) -> str:
    return f"stimulus/{name}"


# ---- integrity -------------------------------------------------------------------------------
#: Every chunk's codec chain ends with this, so every object can be checked on its own (zarr
#: verifies it on every read; ``verify`` without decoding). Measured on a real-size LFP shard
#: (80,000 x 95 int16): +256 B per 8.6 MB shard, +3.5 ms on a 66 ms decode (docs/zarr-layout.md).
CHECKSUM = Crc32cCodec
#: bytes a CRC32C adds at the end of each chunk (and of each shard index)
CHECKSUM_BYTES = 4
#: written with every array: a chunk equal to the fill value is still written, so that a missing
#: object always means damage (zarr would otherwise skip it and read the fill value back)
ARRAY_CONFIG = {"write_empty_chunks": True}


_STORE_URL = re.compile(r"^(?P<cache>.*)/session_(?P<sid>\d+)/session_(?P=sid)\.zarr/?$")


def reconvert_hint(store_url: str, source_cache: str | None = None) -> str:
    """What to run when the store at ``store_url`` is damaged: the ``convert`` command that
    rewrites its damaged blocks, with the caches and the session filled in where known."""
    m = _STORE_URL.match(store_url.rstrip("/"))
    dst, sid = (m["cache"], m["sid"]) if m else ("DST", "ID")
    src = source_cache or "SRC"
    what = "" if source_cache else " (SRC: the NWB cache this copy was made from)"
    return (f"Reconvert this session: `neuropixels-dask convert {src} {dst} --sessions {sid}`"
            f"{what} rewrites only the damaged blocks (`neuropixels-dask verify {dst} "
            f"--sessions {sid}` lists them).")


def missing_error(store_url: str, key: str) -> DamagedStoreError:
    """A chunk or shard object of the store that is not there (zarr would read fill values)."""
    return DamagedStoreError(f"{storage.join(store_url, key)} is missing "
                             f"({describe_object(key)}): the Zarr copy lost this object (an "
                             "interrupted sync or copy?). " + reconvert_hint(store_url))


def damaged_object_error(store_url: str, key: str, detail: str) -> DamagedStoreError:
    """A chunk object whose bytes fail a checksum recorded for them."""
    return DamagedStoreError(f"{storage.join(store_url, key)} is damaged "
                             f"({describe_object(key)}: {detail}). " + reconvert_hint(store_url))


def truncated_error(store_url: str, key: str, detail: str) -> DamagedStoreError:
    """A chunk or shard object shorter than what its metadata or index says."""
    return DamagedStoreError(f"{storage.join(store_url, key)} is truncated "
                             f"({describe_object(key)}: {detail}). " + reconvert_hint(store_url))


def source_cache_of(info: dict) -> str | None:
    """The NWB cache a store was converted from (its ``source`` attribute names the session
    file ``<cache>/session_<id>/session_<id>.nwb``)."""
    source = str(info.get("source") or "")
    parts = source.rstrip("/").rsplit("/", 2)
    return parts[0] if len(parts) == 3 else None


def checksummed(compressors: list | None) -> list:
    """``compressors`` (bytes-to-bytes codecs) with the checksum appended."""
    return [*(compressors or []), CHECKSUM()]


def has_checksum(codecs) -> bool:
    """Whether a codec chain (an array's, or a shard's inner one) ends with a CRC32C."""
    return bool(codecs) and isinstance(codecs[-1], Crc32cCodec)


def crc_ok(obj: bytes | memoryview) -> bool:
    """Whether ``obj`` ends with the CRC32C of the bytes before it (the crc32c codec's layout)."""
    import crc32c

    if len(obj) < CHECKSUM_BYTES:
        return False
    view = memoryview(obj)
    return crc32c.crc32c(view[:-CHECKSUM_BYTES]) == int.from_bytes(view[-CHECKSUM_BYTES:],
                                                                     "little")


def is_document(key: str) -> bool:
    """Whether ``key`` (relative to a store) is a metadata document (a node's ``zarr.json``)."""
    return key == "zarr.json" or key.endswith("/zarr.json")


def document_error(store_url: str, key: str, detail: str) -> DamagedStoreError:
    """A metadata document (or the manifest) that is unreadable or differs from its checksum."""
    return DamagedStoreError(f"{storage.join(store_url, key)} is damaged ({detail}): metadata "
                             "that does not match what convert committed cannot be trusted. "
                             + reconvert_hint(store_url))


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def make_manifest(documents: dict[str, bytes], **facts: Any) -> bytes:
    """The manifest of a store: ``facts`` (session, missing LFP, ...) and the SHA-256 and size
    of every metadata document, with a SHA-256 of itself (over its canonical JSON), so that a
    damaged manifest is told from a damaged document."""
    body = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **facts,
            "documents": {k: {"sha256": hashlib.sha256(v).hexdigest(), "size": len(v)}
                          for k, v in sorted(documents.items())}}
    record = {"manifest": body, "sha256": hashlib.sha256(_canonical(body)).hexdigest()}
    return json.dumps(record, sort_keys=True, indent=1).encode()


def parse_manifest(data: bytes, store_url: str) -> dict:
    """The body of a manifest, checked against its own SHA-256 (else ``DamagedStoreError``)."""
    try:
        record = json.loads(data)
        body = record["manifest"]
        ok = hashlib.sha256(_canonical(body)).hexdigest() == record["sha256"]
        body["documents"].items()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise document_error(store_url, STORE_MANIFEST, f"unreadable: {type(exc).__name__}: "
                             f"{str(exc)[:120]}") from None
    if not ok:
        raise document_error(store_url, STORE_MANIFEST, "it fails its own checksum")
    return body


def check_document(manifest: dict, key: str, data: bytes, store_url: str) -> None:
    """``DamagedStoreError`` naming ``key`` unless ``data`` is the document the manifest
    recorded (same size and SHA-256)."""
    want = manifest["documents"].get(key)
    if want is None:
        raise document_error(store_url, key, f"{STORE_MANIFEST} does not list it")
    if len(data) != want.get("size") or hashlib.sha256(data).hexdigest() != want.get("sha256"):
        raise document_error(store_url, key, f"{len(data)} bytes that do not match the "
                             f"checksum in {STORE_MANIFEST}: edited, truncated or damaged")


def parse_document(data: bytes, store_url: str, key: str) -> dict:
    """The JSON of a metadata document; unreadable JSON is ``DamagedStoreError`` naming it."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        return doc
    except (ValueError, UnicodeDecodeError) as exc:
        raise document_error(store_url, key, f"unreadable: {type(exc).__name__}: "
                             f"{str(exc)[:120]}") from None


def unverified_warning(store_url: str, version: int) -> None:
    """Warn that a store without a manifest has its metadata read unchecked."""
    import warnings

    warnings.warn(f"{store_url} is a format-{version} Zarr copy without a manifest: its "
                  "metadata documents and the spike times within a chunk are read without a "
                  "checksum. Upgrade it by converting again into a new destination "
                  "(`neuropixels-dask convert SRC NEWDST --verify`), then replace this copy.",
                  UnverifiedStoreWarning, stacklevel=3)


# ---- spike-time checksums (format 3) -----------------------------------------------------------
def spike_piece_starts(index: np.ndarray, chunk: int, n: int) -> np.ndarray:
    """Start of every spike-time piece: a unit's spikes within one chunk object. The pieces
    split the flat array at every unit's end and every chunk boundary, so a unit's ranged read
    (one GET per chunk it touches) covers whole pieces, each with its CRC32C."""
    ends = np.asarray(index, dtype=np.int64)
    starts = np.union1d(np.concatenate([[0], ends]), np.arange(0, max(n, 1), max(chunk, 1)))
    return starts[starts < n]


def piece_checksums(raw: bytes | memoryview, a: int, starts: np.ndarray, itemsize: int = 8
                    ) -> np.ndarray:
    """CRC32C of each piece starting in ``[a, a + len(raw) / itemsize)`` (pieces never cross
    the end of a chunk-aligned block), ``raw`` being the stored bytes of those elements."""
    import crc32c

    b = a + len(raw) // itemsize
    lo, hi = np.searchsorted(starts, [a, b])
    edges = [*(int(s) for s in starts[lo:hi]), b]
    view = memoryview(raw)
    return np.array([crc32c.crc32c(view[(s - a) * itemsize:(e - a) * itemsize])
                     for s, e in zip(edges[:-1], edges[1:], strict=True)], dtype=np.uint32)


def strict_tables(version: int) -> bool:
    """Whether every chunk of a store's tables was written (format 2), so a missing one is
    damage; format 1 skipped chunks equal to the fill value, which zarr then reads back."""
    return int(version) >= 2


class StrictStore(WrapperStore):
    """A zarr store on which a missing, empty or short chunk object is an error, not fill.

    zarr reads a missing chunk (or a zero-length object, or a shard whose index cannot be
    fetched) as the fill value: a damaged copy would return zeros. Every store this package
    writes has every chunk written (:data:`ARRAY_CONFIG`), so a chunk key that comes back
    ``None`` means damage. Metadata documents (``zarr.json``) keep zarr's own handling.
    """

    def __init__(self, store, url: str = "", strict: bool = True) -> None:
        super().__init__(store)
        self.url = url
        #: off for the tables of a format-1 store (see :func:`strict_tables`)
        self.strict = strict

    def _with_store(self, store):
        return type(self)(store, self.url, self.strict)

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        if not self.strict or key.rsplit("/", 1)[-1] == "zarr.json":
            return value
        if value is None:
            raise missing_error(self.url, key)
        want = _requested_length(byte_range)
        if len(value) == 0 or (want is not None and len(value) != want):
            raise truncated_error(self.url, key, f"{len(value)} bytes where "
                                  f"{'more' if want is None else want} were expected")
        return value


def _requested_length(byte_range: ByteRequest | None) -> int | None:
    if isinstance(byte_range, RangeByteRequest):
        return byte_range.end - byte_range.start
    if isinstance(byte_range, SuffixByteRequest):
        return byte_range.suffix
    return None


_LFP_KEY = re.compile(r"^lfp/probe_(\d+)/(data|timestamps)/c/(\d+)")
_SPIKE_KEY = re.compile(r"^units/spike_times/c/(\d+)$")


def describe_object(key: str) -> str:
    """What an object of a session store holds, in words (for errors and reports)."""
    if m := _LFP_KEY.match(key):
        what = "LFP" if m[2] == "data" else "LFP timestamps"
        return f"{what} shard {m[3]} of probe {m[1]}"
    if m := _SPIKE_KEY.match(key):
        return f"spike-time chunk {m[1]}"
    if key.endswith("zarr.json"):
        return f"metadata of {key.rsplit('/', 1)[0] or 'the store'}"
    node = key.split("/c/", 1)[0] if "/c/" in key else key.rsplit("/", 1)[0]
    return f"a chunk of {node}"


def damaged_error(exc: BaseException, url: str, key: str, rows: tuple[int, int] | None = None
                  ) -> DamagedStoreError | None:
    """Our error for zarr's reaction to a damaged object (a checksum that does not match, an
    index or chunk that cannot be decoded), or ``None`` when ``exc`` is something else. One
    of ours comes back as a copy: callers raise the result ``from exc``."""
    if isinstance(exc, DamagedStoreError):
        return copy.copy(exc)
    text = str(exc)
    signs = ("checksum do not match", "Stored and computed checksum", "decompression",
             "Corrupted", "corrupt", "buffer is too small", "cannot reshape",
             "Unknown frame descriptor", "Destination buffer", "src size is incorrect")
    if not isinstance(exc, ValueError | RuntimeError | TypeError) or \
            not any(s.lower() in text.lower() for s in signs):
        return None
    span = f", samples {rows[0]}–{rows[1]}" if rows else ""
    return DamagedStoreError(f"{storage.join(url, key)} is damaged ({describe_object(key)}"
                             f"{span}: {type(exc).__name__}: {text[:160]}). "
                             + reconvert_hint(url))


# ---- layout ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Chunking and codecs of a new store (existing arrays keep the layout they were made with).

    Defaults come from ``benchmarks/zarr_layout.py`` (see ``docs/zarr-layout.md``).
    """

    #: LFP inner chunk: samples × all channels (1250 samples ≈ 1 s at ~1250 Hz)
    lfp_chunk: int = 1250
    #: inner chunks per shard: one shard ≈ 64 s ≈ 9 MB on S3 for 96 channels, 31 MB decoded
    lfp_chunks_per_shard: int = 64
    lfp_clevel: int = 5
    #: zstd level for probes whose LFP is not on the int16 grid (stored as float32)
    float_zstd_level: int = 7
    #: spike times per chunk object (raw float64: 8 MiB objects, exact ranged reads per unit)
    spike_chunk: int = 1 << 20
    table_zstd_level: int = 5

    @property
    def lfp_shard(self) -> int:
        return self.lfp_chunk * self.lfp_chunks_per_shard


# ---- LFP encodings ---------------------------------------------------------------------------
#: Allen's LFP quantum: raw int16 counts × 0.195 µV. ``float32(k * 0.195e-6)`` round-trips
#: through int16 for every k in the int16 range (the writer checks every block anyway).
LFP_VOLTS_PER_BIT = 0.195e-6
#: int16 counts × ``scale_factor`` (lossless for Allen's quantised volts)
ENCODING_INT16 = "int16-scaled"
#: the float32 values themselves, for a probe whose data are not exactly on that grid
ENCODING_FLOAT32 = "float32"


#: Values decoded per step of :func:`decode_lfp`: its float64 products stay in cache (1 MiB).
DECODE_BATCH = 1 << 17


def decode_lfp(raw: np.ndarray, scale: float | None, order: str = "C") -> np.ndarray:
    """Stored LFP ``(time, channel)`` → float32 volts. For int16 counts the product is formed in
    float64 and rounded once to float32, which reproduces Allen's float32 volts bit for bit
    (checked at conversion).

    The products are formed for :data:`DECODE_BATCH` values' worth of rows at a time in one
    small buffer: the whole block at once made two float64 temporaries of 4× the int16 block
    each (a 64 s, 70-channel block: 45 MB each, on top of its 22 MB result) and took 2.4× as
    long. ``order="F"`` writes the result channel-major, as the NWB reader delivers its blocks:
    the spectral kernel copies a channel's segment from contiguous memory then (24 % faster per
    block), for 4 ms more per block here than writing it time-major.
    """
    if scale is None:
        return raw
    out = np.empty(raw.shape, np.float32, order=order)
    if raw.ndim != 2 or raw.size == 0:
        out[...] = raw.astype(np.float64) * scale
        return out
    rows = max(1, DECODE_BATCH // raw.shape[1])
    tmp = np.empty((min(rows, raw.shape[0]), raw.shape[1]), np.float64)
    for a in range(0, raw.shape[0], rows):
        b = min(raw.shape[0], a + rows)
        np.multiply(raw[a:b], scale, out=tmp[:b - a])
        out[a:b] = tmp[:b - a]  # rounded to float32, as astype rounds
    return out


def encode_lfp_int16(block: np.ndarray, scale: float) -> np.ndarray | None:
    """int16 counts that decode to exactly ``block`` (every bit), or ``None`` if there are none
    (values off the grid, out of int16 range, NaN, or negative zero)."""
    counts = np.rint(block.astype(np.float64) / scale)
    lim = np.iinfo(np.int16)
    if not np.all((counts >= lim.min) & (counts <= lim.max)):  # also False for NaN
        return None
    k = counts.astype(np.int16)
    back = decode_lfp(k, scale)
    if not np.array_equal(back.view(np.uint32), np.ascontiguousarray(block).view(np.uint32)):
        return None
    return k


def lfp_codecs(encoding: str, layout: Layout) -> dict[str, Any]:
    """dtype, filters and codecs of a probe's ``data`` array for ``encoding``.

    Transposed so each inner chunk is stored channel-major (a channel's samples are contiguous
    and compress well); int16 with Blosc-zstd and byte shuffle, float32 with zstd; a CRC32C last.
    """
    if encoding == ENCODING_INT16:
        return {"dtype": "int16", "filters": [TransposeCodec(order=(1, 0))],
                "serializer": BytesCodec(),
                "compressors": checksummed([BloscCodec(cname="zstd", clevel=layout.lfp_clevel,
                                                       shuffle="shuffle", typesize=2)]),
                "fill_value": 0}
    if encoding == ENCODING_FLOAT32:
        return {"dtype": "float32", "filters": [TransposeCodec(order=(1, 0))],
                "serializer": BytesCodec(),
                "compressors": checksummed([ZstdCodec(level=layout.float_zstd_level)]),
                "fill_value": 0.0}
    raise InvalidFileError(f"unknown LFP encoding {encoding!r} (known: {ENCODING_INT16!r}, "
                           f"{ENCODING_FLOAT32!r}): the store was written by a newer "
                           "neuropixels-dask; upgrade the package.")


def lfp_scale(arr: zarr.Array) -> float | None:
    """The ``scale_factor`` that turns an int16 ``data`` array into volts (``None``: float)."""
    return arr.attrs.get("scale_factor") if np.dtype(arr.dtype).kind == "i" else None


def lfp_read_dtype(encoding: str, stored: np.dtype | str) -> str:
    """The dtype reads return for ``encoding`` (int16 counts come back as float32 volts)."""
    return np.dtype(np.float32).str if encoding == ENCODING_INT16 else np.dtype(stored).str


# ---- tables ----------------------------------------------------------------------------------
def column_values(s: pd.Series) -> tuple[np.ndarray, Any]:
    """numpy values of a column and the zarr dtype to store them as."""
    dt = s.dtype
    if isinstance(dt, pd.StringDtype) or dt == np.dtype(object):
        vals = s.to_numpy(dtype=object)
        if not all(isinstance(v, str) for v in vals):
            raise ValueError(f"column {s.name!r} holds non-string objects "
                             f"({sorted({type(v).__name__ for v in vals})}); only strings "
                             "and numbers can be stored.")
        return vals, str
    if dt.kind in "biuf":
        return s.to_numpy(), dt
    raise ValueError(f"column {s.name!r} has unsupported dtype {dt}.")


def table_spec_for(name: str, df: pd.DataFrame) -> tuple[dict, str]:
    """The table attributes (column order, dtypes, index) and the dimension name of ``df``."""
    cols = [str(c) for c in df.columns]
    if len(set(cols)) != len(cols):
        raise ValueError(f"table {name!r} has duplicate column names.")
    if isinstance(df.index, pd.RangeIndex):
        dim = df.index.name or "row"
        index = {"kind": "range", "start": int(df.index.start), "stop": int(df.index.stop),
                 "step": int(df.index.step), "name": df.index.name}
    else:
        dim = str(df.index.name or "index")
        index = {"kind": "array", "name": dim, "dtype": str(df.index.dtype)}
    if dim in cols:
        raise ValueError(f"table {name!r}: a column is named like its index ({dim!r}).")
    return {"columns": cols, "dtypes": {c: str(df[c].dtype) for c in cols}, "index": index}, dim


def table_spec(group: zarr.Group) -> dict:
    spec = group.attrs.get(TABLE_ATTRS_KEY)
    if spec is None:
        raise InvalidFileError(f"{group.store_path} is not a table group written by convert.")
    return spec


def table_array_paths(spec: dict) -> list[str]:
    """Arrays (relative to the table's group) that hold it: index first, then the columns."""
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


#: concurrent requests when a group of tables is read
TABLE_READ_THREADS = 16


def read_arrays(group: zarr.Group, paths: list[str]) -> dict[str, np.ndarray]:
    """Whole small arrays, fetched concurrently: a group of tables costs one round trip."""
    nodes = [group[p] for p in paths]
    if not nodes:
        return {}
    url = getattr(group.store, "url", "")

    def load(arr: zarr.Array) -> np.ndarray:
        try:
            return arr[...]
        except Exception as exc:  # noqa: BLE001 - damage is named, anything else passes
            key = f"{arr.path}/{arr.metadata.encode_chunk_key((0,) * arr.ndim)}"
            err = damaged_error(exc, url, key)
            if err is None:
                raise
            raise err from exc

    with ThreadPoolExecutor(min(TABLE_READ_THREADS, len(nodes))) as pool:
        values = list(pool.map(load, nodes))
    return dict(zip(paths, values, strict=True))



# ---- opening stores --------------------------------------------------------------------------
def storage_options(url: str, options: dict | None) -> storage.StorageOptions:
    """Our storage options for a Zarr store at ``url``.

    s3fs fetches a whole object with a HEAD (to size it) and then concurrent ranged GETs when
    ``max_concurrency > 1``: two requests where one does for our metadata documents and shards of
    a few MB. Parallelism comes from Dask tasks and zarr's concurrent chunk reads instead.
    """
    if storage.is_s3(url):
        return storage.with_defaults(options, url, max_concurrency=1)
    return storage.resolve(url, options)


def filesystem(url: str, options: dict | None):
    """``storage.filesystem`` with this format's options."""
    return storage.filesystem(url, storage_options(url, options))


def is_local(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def open_store(url: str, options: dict | None, *, read_only: bool = True,
               strict: bool = False):
    """A zarr store for ``url``: ``LocalStore`` for local paths (atomic writes), else fsspec.

    ``strict``: a missing or short chunk object raises ``DamagedStoreError`` (:class:`StrictStore`)
    instead of reading as the fill value; the reader opens every store it reads this way.
    """
    opts = storage_options(url, options)
    fs, path = storage.filesystem(url, opts)
    if is_local(fs):
        store = zarr.storage.LocalStore(path, read_only=read_only)
    else:
        # zarr makes its own asynchronous instance of the filesystem from the same options
        store = zarr.storage.FsspecStore.from_url(url, storage_options=opts.to_fsspec(),
                                                  read_only=read_only)
    return StrictStore(store, url) if strict else store
