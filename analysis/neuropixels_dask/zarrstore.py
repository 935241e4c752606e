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
* **opening stores** over fsspec with the options this format wants.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec, BytesCodec, TransposeCodec, ZstdCodec

from . import storage
from .errors import InvalidFileError

# ---- keys ------------------------------------------------------------------------------------
#: root attribute holding this package's description of the store
ATTRS_KEY = "neuropixels_dask"
#: attribute of a table group: column order, dtypes, index
TABLE_ATTRS_KEY = "neuropixels_dask_table"
FORMAT_NAME = "ecephys-session"
FORMAT_VERSION = 1
#: the manifest entry ``convert`` adds: how a cache announces that it is a Zarr copy
MANIFEST_ENTRY = {"key": "session_zarr", "type": "dir", "spec": "session_%d.zarr",
                  "parent_key": "session_data"}
#: tables read together in one concurrent batch (everything ``session.units`` needs)
CORE_TABLES = ("probes", "channels", "units")
SPIKE_TIMES_PATH = "units/spike_times"
SPIKE_INDEX_PATH = "units/spike_times_index"
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


def decode_lfp(raw: np.ndarray, scale: float | None) -> np.ndarray:
    """Stored LFP → float32 volts. For int16 counts the product is formed in float64 and rounded
    once to float32, which reproduces Allen's float32 volts bit for bit (checked at conversion)."""
    if scale is None:
        return raw
    return (raw.astype(np.float64) * scale).astype(np.float32)


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
    and compress well); int16 with Blosc-zstd and byte shuffle, float32 with zstd.
    """
    if encoding == ENCODING_INT16:
        return {"dtype": "int16", "filters": [TransposeCodec(order=(1, 0))],
                "serializer": BytesCodec(),
                "compressors": [BloscCodec(cname="zstd", clevel=layout.lfp_clevel,
                                           shuffle="shuffle", typesize=2)],
                "fill_value": 0}
    if encoding == ENCODING_FLOAT32:
        return {"dtype": "float32", "filters": [TransposeCodec(order=(1, 0))],
                "serializer": BytesCodec(),
                "compressors": [ZstdCodec(level=layout.float_zstd_level)], "fill_value": 0.0}
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
    with ThreadPoolExecutor(min(TABLE_READ_THREADS, len(nodes))) as pool:
        values = list(pool.map(lambda a: a[...], nodes))
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


def open_store(url: str, options: dict | None, *, read_only: bool = True):
    """A zarr store for ``url``: ``LocalStore`` for local paths (atomic writes), else fsspec."""
    opts = storage_options(url, options)
    fs, path = storage.filesystem(url, opts)
    if is_local(fs):
        return zarr.storage.LocalStore(path, read_only=read_only)
    # zarr makes its own asynchronous instance of the filesystem from the same options
    return zarr.storage.FsspecStore.from_url(url, storage_options=opts.to_fsspec(),
                                             read_only=read_only)
