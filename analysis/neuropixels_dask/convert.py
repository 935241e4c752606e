"""``convert``: copy an NWB ecephys cache into the cloud-optimised Zarr layout, as Dask tasks.

What it guarantees, and how:

* **Same values, bit for bit.** Tables are written column by column with their dtypes recorded;
  spike times are copied raw; LFP is stored as int16 counts × 0.195 µV only where that reproduces
  every float32 bit of the source (checked on every block before it is written), else as float32.
  ``verify=True`` re-reads every value from both sides and compares the bits.
* **Parallel, streaming, bounded memory.** One Dask task per (probe × LFP shard) and per spike
  chunk; a task reads its slice of the NWB file, writes one shard object and returns a few bytes
  of status. Nothing larger than one block is ever held, on any worker or the client.
* **Resumable.** Every finished block leaves a marker under ``<store>/.convert/``; a rerun skips
  those blocks. A store becomes *complete* only at the very end: after all blocks are written and
  checked, ``complete`` is set in the root attributes and the metadata is consolidated; the reader
  refuses any store without both (so a reader never sees a half store as complete).
* **Checked, and repaired.** Every chunk and shard carries a CRC32C (``zarrstore``, format 2).
  Rerunning on a complete store first checks it without the source (``verify.check_store``: one
  LIST, shard indexes, checksums) and rewrites only the blocks found missing or damaged; with
  ``verify=True``, a block whose copy fails its checksums while being compared is rewritten too.
* **Committed last.** After the consolidated metadata, the store's ``manifest.json`` records
  the SHA-256 of every metadata document (store format 3, ``zarrstore``); the reader and
  ``verify`` check the metadata against it. Spike-chunk tasks return a CRC32C of every unit's
  part of their chunk, made from the source values, which every read of the copy checks.
* **The source is read-only.** A destination that is the source, lies inside it or holds it is
  refused before anything is written (:func:`refuse_overlap`). A probe whose LFP file the source
  lacks (though it recorded LFP) is said in the result and recorded in the manifest.
* **A cache, not just stores.** ``manifest.json`` (plus a ``session_zarr`` entry, which is how
  :class:`~neuropixels_dask.catalog.EcephysProjectCache` recognises a Zarr copy), the four CSV
  tables and ``synthetic_ground_truth.json`` are copied, so ``open_cache(DST)`` works.

Chunk and shard sizes were chosen by measurement (``benchmarks/zarr_layout.py``,
``docs/zarr-layout.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import posixpath
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

from . import readers, storage
from . import verify as store_check
from . import zarrstore as zs
from .catalog import EcephysProjectCache
from .errors import DamagedStoreError, NeuropixelsDaskError, NoLFPError
from .readers import nwb
from .readers.base import LFPSource, SpikeSource
from .tasks.runner import run_tasks
from .zarrstore import LFP_VOLTS_PER_BIT, Layout

log = logging.getLogger(__name__)

CACHE_FILES = ("sessions.csv", "probes.csv", "channels.csv", "units.csv")
OPTIONAL_CACHE_FILES = ("synthetic_ground_truth.json",)


class ConversionError(NeuropixelsDaskError, RuntimeError):
    """The copy differs from the source or could not be completed."""


@dataclass
class SessionResult:
    """What ``convert`` did for one session."""

    session_id: int
    store_url: str
    status: str  # "converted" | "already complete" | "verified" | "repaired"
    blocks_written: int = 0
    blocks_skipped: int = 0
    lfp_encodings: dict[int, str] = field(default_factory=dict)
    verified: bool = False
    seconds: float = 0.0
    #: what the check of a complete store found (and the run rewrote), one line per object
    repaired: list[str] = field(default_factory=list)
    #: probes that recorded LFP (``has_lfp_data``) whose LFP file the source lacked: why
    lfp_missing: dict[int, str] = field(default_factory=dict)

    def __str__(self) -> str:
        enc = ", ".join(f"{p}: {e}" for p, e in self.lfp_encodings.items()) or "no LFP"
        found = (f"; found and rewrote {len(self.repaired)} missing or damaged object(s): "
                 + "; ".join(self.repaired[:5]) + (" ..." if len(self.repaired) > 5 else "")
                 if self.repaired else "")
        lost = "".join(f"; WARNING: probe {p}'s LFP was missing from the source ({why}): "
                       "not converted, recorded in the store's manifest"
                       for p, why in self.lfp_missing.items())
        return (f"session {self.session_id}: {self.status} ({self.blocks_written} blocks "
                f"written, {self.blocks_skipped} skipped; LFP {enc}"
                f"{'; every value verified' if self.verified else ''}{found}{lost}) in "
                f"{self.seconds:.1f} s -> {self.store_url}")


# ---- jobs (picklable, one per Dask task) ---------------------------------------------------

@dataclass(frozen=True)
class LFPJob:
    src: LFPSource
    dst_url: str
    dst_options: dict = field(hash=False)
    group: str  # lfp/probe_<pid>
    i0: int
    i1: int
    encoding: str
    scale: float
    marker: str

    @property
    def key(self) -> str:
        return f"{self.group}/{self.i0}"


@dataclass(frozen=True)
class SpikeJob:
    src: SpikeSource
    dst_url: str
    dst_options: dict = field(hash=False)
    a: int
    b: int
    marker: str
    #: starts of the spike-time pieces in ``[a, b)`` (``zarrstore.spike_piece_starts``)
    pieces: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return f"spikes/{self.a}"


def _open_dst_array(url: str, path: str, options: dict) -> zarr.Array:
    """An array to write blocks into, with :data:`zarrstore.ARRAY_CONFIG`: the configuration
    is not stored with an array, and without it zarr skips a block equal to the fill value
    (a 64 s shard of exact zeros would never be written, and read back as missing)."""
    arr = zarr.open_array(zs.open_store(url, options, read_only=False), path=path, mode="r+",
                          zarr_format=3)
    return arr.with_config(zs.ARRAY_CONFIG)


def _write_marker(url: str, options: dict, payload: dict) -> None:
    fs, path = zs.filesystem(url, options)
    if zs.is_local(fs):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps(payload).encode())


def _write_lfp_block(job: LFPJob, values: np.ndarray, timestamps: np.ndarray) -> None:
    """Write one shard of data and timestamps (each one object: whole-shard writes)."""
    _open_dst_array(job.dst_url, f"{job.group}/data", job.dst_options)[job.i0:job.i1] = values
    _open_dst_array(job.dst_url, f"{job.group}/timestamps",
                    job.dst_options)[job.i0:job.i1] = timestamps


def lfp_block_task(job: LFPJob) -> dict:
    """Copy LFP samples ``[i0, i1)`` of one probe (all channels) and leave a marker."""
    cols = np.arange(job.src.shape[1])
    block = readers.read_lfp_block(job.src, job.i0, job.i1, cols)
    if job.encoding == zs.ENCODING_INT16:
        values = zs.encode_lfp_int16(block, job.scale)
        if values is None:
            return {"key": job.key, "status": "inexact"}
    else:
        values = block
    ts = readers.read_timestamps(job.src, job.i0, job.i1)
    _write_lfp_block(job, values, ts)
    _write_marker(job.marker, job.dst_options, {"rows": [job.i0, job.i1]})
    return {"key": job.key, "status": "written", "bytes": int(block.nbytes + ts.nbytes)}


def lfp_precheck_task(src: LFPSource, i1: int, scale: float) -> bool:
    """Whether the first block is exactly int16 × scale (picks the encoding of a new array)."""
    block = readers.read_lfp_block(src, 0, i1, np.arange(src.shape[1]))
    return zs.encode_lfp_int16(block, scale) is not None


def _piece_crcs(job: SpikeJob, values: np.ndarray) -> list[int]:
    """CRC32C of each spike-time piece of the block, over the bytes the store holds."""
    raw = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return [int(c) for c in zs.piece_checksums(raw, job.a, np.asarray(job.pieces, np.int64))]


def spike_block_task(job: SpikeJob) -> dict:
    """Copy spike times ``[a, b)``, leave a marker; return the block's piece checksums, made
    from the values read from the source (the reader checks the copy against them)."""
    values = readers.read_spikes(job.src, job.a, job.b)
    _open_dst_array(job.dst_url, zs.SPIKE_TIMES_PATH, job.dst_options)[job.a:job.b] = values
    _write_marker(job.marker, job.dst_options, {"elements": [job.a, job.b]})
    return {"key": job.key, "status": "written", "bytes": int(values.nbytes),
            "crcs": _piece_crcs(job, values)}


def spike_checksum_task(job: SpikeJob) -> dict:
    """The piece checksums of a block written earlier (a resumed or repaired conversion),
    from the source."""
    return {"key": job.key, "status": "checksummed",
            "crcs": _piece_crcs(job, readers.read_spikes(job.src, job.a, job.b))}


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a


def verify_lfp_task(job: LFPJob, dst: LFPSource) -> dict:
    """Compare every bit of LFP and timestamps ``[i0, i1)`` between source and copy (a copy
    that fails its checksums is ``damaged``: the block is rewritten, see ``verify_and_rewrite``)."""
    cols = np.arange(job.src.shape[1])
    bad = []
    try:
        if not np.array_equal(_bits(readers.read_lfp_block(job.src, job.i0, job.i1, cols)),
                              _bits(readers.read_lfp_block(dst, job.i0, job.i1, cols))):
            bad.append("data")
        if not np.array_equal(_bits(readers.read_timestamps(job.src, job.i0, job.i1)),
                              _bits(readers.read_timestamps(dst, job.i0, job.i1))):
            bad.append("timestamps")
    except DamagedStoreError as exc:
        return {"key": job.key, "status": "damaged", "what": [str(exc)]}
    return {"key": job.key, "status": "mismatch" if bad else "ok", "what": bad}


def verify_spike_task(job: SpikeJob, dst: SpikeSource) -> dict:
    try:
        ok = np.array_equal(_bits(readers.read_spikes(job.src, job.a, job.b)),
                            _bits(readers.read_spikes(dst, job.a, job.b)))
    except DamagedStoreError as exc:
        return {"key": job.key, "status": "damaged", "what": [str(exc)]}
    return {"key": job.key, "status": "ok" if ok else "mismatch", "what": [] if ok
            else ["spike_times"]}


# ---- tables --------------------------------------------------------------------------------

def _table_spec(name: str, df: pd.DataFrame) -> tuple[dict, str]:
    try:
        return zs.table_spec_for(name, df)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None


def _column(s: pd.Series) -> tuple[np.ndarray, Any]:
    try:
        return zs.column_values(s)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None


def write_tables(store_url: str, options: dict, tables: dict[str, pd.DataFrame],
                 layout: Layout, extra: dict[str, tuple[np.ndarray, str]] | None = None) -> None:
    """One array per column (and one for the index), dims named after the index, so
    ``xr.open_zarr(store, group=name)`` is a Dataset indexed like the DataFrame.

    A session has a few hundred small arrays and zarr spends a dozen requests creating each one on
    S3 (existence checks of the node and its parents, listings for overwrites). So the tables are
    built in a memory store, then every object is uploaded in one concurrent batch: one PUT per
    object. ``extra``: more 1-D arrays ``{path: (values, dim)}`` (the spike index).
    """
    content: dict[str, Any] = {}
    mem = zarr.open_group(zarr.storage.MemoryStore(content), mode="w", zarr_format=3)
    for name, df in tables.items():
        spec, dim = _table_spec(name, df)
        group = mem.create_group(name, attributes={zs.TABLE_ATTRS_KEY: spec})
        series = {c: df[c] for c in spec["columns"]}
        if spec["index"]["kind"] == "array":
            series = {dim: pd.Series(df.index, name=dim), **series}
        for col, s in series.items():
            values, dtype = _column(s)
            _small_array(group, col, values, dtype, dim, layout)
    for path, (values, dim) in (extra or {}).items():
        parent, col = path.rsplit("/", 1)
        _small_array(mem[parent], col, values, values.dtype, dim, layout)
    content.pop("zarr.json")  # the memory root stands for the session root: keep the real one
    upload(store_url, options, {k: v.to_bytes() for k, v in content.items()})


def _small_array(group: zarr.Group, name: str, values: np.ndarray, dtype: Any, dim: str,
                 layout: Layout) -> None:
    n = len(values)
    arr = group.create_array(name, shape=(n,), dtype=dtype, chunks=(max(n, 1),),
                             compressors=zs.checksummed([ZstdCodec(level=layout.table_zstd_level)]),
                             dimension_names=(dim,), config=zs.ARRAY_CONFIG)
    if n:
        arr[:] = values


def upload(store_url: str, options: dict, objects: dict[str, bytes]) -> None:
    """Write ``{key: bytes}`` under ``store_url`` in one concurrent batch."""
    fs, base = zs.filesystem(store_url, options)
    files = {f"{base.rstrip('/')}/{k}": v for k, v in objects.items()}
    if zs.is_local(fs):
        for d in {p.rsplit("/", 1)[0] for p in files}:
            fs.makedirs(d, exist_ok=True)
    try:
        fs.pipe(files)
    except Exception as exc:  # noqa: BLE001
        raise storage.translate_error(exc, store_url) from exc


def source_tables(reader: nwb.NWBSessionReader) -> dict[str, pd.DataFrame]:
    """Every table the reader interface exposes, keyed by its group path in the store."""
    tables = {"probes": reader.probes(), "channels": reader.channels(), "units": reader.units(),
              zs.RUNNING_TABLE: reader.running_speed()}
    inv = reader.invalid_times()
    if "tags" in inv:  # a list per row: stored as its JSON text, parsed back by the reader
        inv = inv.assign(tags=[json.dumps([str(t) for t in tags]) for tags in inv["tags"]])
    tables[zs.INVALID_TIMES_TABLE] = inv
    for name, t in reader.stimulus_tables().items():
        tables[zs.stimulus_group_path(name)] = t
    return tables


def _check_tables(root: zarr.Group, tables: dict[str, pd.DataFrame], spike_index: np.ndarray,
                  url: str) -> None:
    """Read every table back (one concurrent batch) and compare it with the source frame:
    values, dtypes, index and column order."""
    groups = {name: root[name] for name in tables}
    specs = {name: zs.table_spec(g) for name, g in groups.items()}
    paths = {name: zs.table_array_paths(spec) for name, spec in specs.items()}
    values = zs.read_arrays(root, [f"{n}/{p}" for n, ps in paths.items() for p in ps]
                            + [zs.SPIKE_INDEX_PATH])
    for name, df in tables.items():
        back = zs.assemble_table(specs[name],
                                 {p: values[f"{name}/{p}"] for p in paths[name]})
        try:
            pd.testing.assert_frame_equal(back, df, check_exact=True)
        except AssertionError as exc:
            raise ConversionError(f"table {name!r} of {url} differs from the source after "
                                  f"writing: {exc}") from None
    if not np.array_equal(values[zs.SPIKE_INDEX_PATH], spike_index):
        raise ConversionError(f"spike_times_index of {url} differs from the source.")


# ---- cache-level files ---------------------------------------------------------------------

def copy_cache_files(src: EcephysProjectCache, dst_url: str, dst_options: dict) -> None:
    """manifest.json (+ ``session_zarr``), the four CSV tables and the ground truth, verbatim."""
    sfs, _ = zs.filesystem(src.url, src.storage_options)
    dfs, _ = zs.filesystem(dst_url, dst_options)
    if zs.is_local(dfs):
        dfs.makedirs(zs.filesystem(dst_url, dst_options)[1], exist_ok=True)
    for name in CACHE_FILES + OPTIONAL_CACHE_FILES:
        s_url = storage.join(src.url, name)
        _, spath = zs.filesystem(s_url, src.storage_options)
        try:
            data = sfs.cat_file(spath)
        except FileNotFoundError:
            if name in OPTIONAL_CACHE_FILES:
                continue
            raise
        except Exception as exc:  # noqa: BLE001
            raise storage.translate_error(exc, s_url) from exc
        dfs.pipe_file(zs.filesystem(storage.join(dst_url, name), dst_options)[1], data)
    manifest = json.loads(json.dumps(src.manifest))
    entries = manifest.setdefault("manifest", [])
    if not any(e.get("key") == zs.MANIFEST_ENTRY["key"] for e in entries):
        entries.append(dict(zs.MANIFEST_ENTRY))
    dfs.pipe_file(zs.filesystem(storage.join(dst_url, "manifest.json"), dst_options)[1],
                  json.dumps(manifest, indent=2).encode())


# ---- one session ---------------------------------------------------------------------------

def create_lfp_arrays(root: zarr.Group, group: str, src: LFPSource, encoding: str,
                       layout: Layout, overwrite: bool = False) -> None:
    """``data`` (time, channel), ``timestamps`` (time) and ``channel`` (ids) of one probe.

    Dimension names and the CF ``scale_factor`` / ``coordinates`` attributes make
    ``xr.open_zarr(store, group="lfp/probe_<id>")`` a Dataset in volts with a channel index.
    """
    n, c = src.shape
    chunk = min(layout.lfp_chunk, max(n, 1))
    per_shard = max(1, min(layout.lfp_chunks_per_shard, -(-max(n, 1) // chunk)))
    sharded = layout.lfp_chunks_per_shard > 1
    g = root.require_group(group)
    kw = zs.lfp_codecs(encoding, layout)
    data = g.create_array("data", shape=(n, c), chunks=(chunk, c),
                          shards=(chunk * per_shard, c) if sharded else None,
                          dimension_names=("time", "channel"), overwrite=overwrite,
                          config=zs.ARRAY_CONFIG, **kw)
    attrs = {"units": "V", "long_name": "LFP", "coordinates": "timestamps"}
    if encoding == zs.ENCODING_INT16:
        attrs["scale_factor"] = LFP_VOLTS_PER_BIT
    data.attrs.update(attrs)
    ts = g.create_array("timestamps", shape=(n,), dtype="float64", chunks=(chunk,),
                        shards=(chunk * per_shard,) if sharded else None,
                        dimension_names=("time",), overwrite=overwrite,
                        compressors=zs.checksummed([BloscCodec(
                            cname="zstd", clevel=layout.lfp_clevel, shuffle="shuffle",
                            typesize=8)]), config=zs.ARRAY_CONFIG)
    ts.attrs.update({"units": "s", "long_name": "sample times"})
    ch = g.create_array("channel", shape=(c,), dtype="int64", chunks=(max(c, 1),),
                        compressors=zs.checksummed([ZstdCodec(level=layout.table_zstd_level)]),
                        dimension_names=("channel",), overwrite=overwrite,
                        config=zs.ARRAY_CONFIG)
    if c:
        ch[:] = np.asarray(src.channel_ids, dtype=np.int64)


def _markers(url: str, options: dict) -> set[str]:
    """Relative keys of the progress markers present (one listing)."""
    fs, path = zs.filesystem(url, options)
    try:
        fs.invalidate_cache(path)
        found = fs.find(path)
    except FileNotFoundError:
        return set()
    except Exception as exc:  # noqa: BLE001
        raise storage.translate_error(exc, url) from exc
    base = path.rstrip("/") + "/"
    return {p[len(base):] for p in found if p.startswith(base)}


def _remove_markers(url: str, options: dict) -> None:
    fs, path = zs.filesystem(url, options)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


def _dst_lfp_source(store: str, options: dict, group: str, arr: zarr.Array, src: LFPSource,
                    encoding: str) -> LFPSource:
    shard = arr.shards or arr.chunks
    return LFPSource(format="zarr", url=store, storage_options=options,
                     data_path=f"{group}/data", timestamps_path=f"{group}/timestamps",
                     shape=tuple(int(s) for s in arr.shape), chunks=(int(shard[0]), arr.shape[1]),
                     dtype=zs.lfp_read_dtype(encoding, arr.dtype),
                     channel_ids=src.channel_ids, t_first=src.t_first, t_last=src.t_last)


class SessionConversion:
    """The conversion of one session, phase by phase (each phase safe to repeat after a crash).

    ``prepare`` writes the store's metadata, tables and empty arrays; ``run`` copies the blocks
    without a marker; ``verify`` compares every value; ``finish`` marks the store complete.
    """

    def __init__(self, src: EcephysProjectCache, dst_url: str, session_id: int, *,
                 dst_options: dict, layout: Layout, client=None, progress: bool = True):
        self.sid = int(session_id)
        self.src_session = src.session_url(self.sid)
        nwb.check_session_file(storage.join(self.src_session, f"session_{self.sid}.nwb"),
                               src.storage_options)
        self.src = src
        self.options = dst_options
        self.layout = layout
        self.client = client
        self.progress = progress
        self.url = zs.store_url(storage.join(dst_url, f"session_{self.sid}"), self.sid)
        self.progress_url = storage.join(self.url, zs.PROGRESS_DIR)
        self.store = zs.open_store(self.url, dst_options, read_only=False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                self.root = zarr.open_group(self.store, mode="a", zarr_format=3)
        except (ValueError, TypeError, KeyError) as exc:  # an unparseable root document
            raise ConversionError(f"{self.url}/zarr.json, the root of the store, is damaged "
                                  f"({type(exc).__name__}: {exc}); nothing in the store can be "
                                  "trusted without it: delete the store and convert again."
                                  ) from exc
        self.info = dict(self.root.attrs.get(zs.ATTRS_KEY) or {})
        if self.info and self.info.get("format") != zs.FORMAT_NAME:
            raise ConversionError(f"{self.url} exists and is not a session store of this "
                                  "package; move it away or pick another destination.")
        self.complete = (bool(self.info.get("complete"))
                         and self.root.metadata.consolidated_metadata is not None)
        self.result = SessionResult(self.sid, self.url, "converted")
        #: a repair that must rewrite the spike-time checksums (their array was damaged)
        self.rewrite_checksums = False

    # ---- source ---------------------------------------------------------------------------
    def read_source(self) -> None:
        """Source tables and data descriptions (metadata only)."""
        reader = nwb.NWBSessionReader(self.src_session, self.sid, self.src.storage_options)
        self.tables = source_tables(reader)
        self.spike_index = reader.spike_index().astype(np.int64)
        self.spikes_src = reader.spike_source()
        self.n_spikes = int(self.spike_index[-1]) if len(self.spike_index) else 0
        meta = reader.session_metadata()
        self.session_metadata = {k: (v.isoformat() if k == "session_start_time" else
                                     (v.item() if hasattr(v, "item") else v))
                                 for k, v in meta.items()}
        self.lfp_src: dict[int, LFPSource] = {}
        self.result.lfp_missing = {}
        for pid, row in self.tables["probes"].iterrows():
            try:
                self.lfp_src[int(pid)] = reader.lfp_source(int(pid), str(row["description"]))
            except NoLFPError as exc:
                if bool(row.get("has_lfp_data", False)):  # recorded, but the file is not there
                    why = str(exc).split(". ", 1)[0]
                    self.result.lfp_missing[int(pid)] = why
                    log.warning("session %s probe %s: LFP missing from the source (%s); the "
                                "copy will have none for it", self.sid, pid, why)

    def _save_info(self) -> None:
        self.root.attrs[zs.ATTRS_KEY] = self.info

    def uncommit(self) -> None:
        """Remove the manifest (the commit record) before the store is changed: a reader then
        finds an incomplete store, never one whose metadata no longer matches its record."""
        fs, path = zs.filesystem(storage.join(self.url, zs.STORE_MANIFEST), self.options)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            err = storage.translate_error(exc, self.url)
            if not isinstance(err, FileNotFoundError):
                raise err from exc

    # ---- phases ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Root attributes, tables (once), the spike array and one array set per LFP probe."""
        old = self.info
        self.uncommit()
        self.info = {"format": zs.FORMAT_NAME, "version": zs.FORMAT_VERSION,
                     "session_id": self.sid, "complete": False,
                     "source": storage.join(self.src_session, f"session_{self.sid}.nwb"),
                     "created": old.get("created",
                                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                     "layout": dataclasses.asdict(self.layout), "lfp": old.get("lfp", {}),
                     "stimulus_tables": [n.split("/", 1)[1] for n in self.tables
                                         if n.startswith("stimulus/")],
                     "tables": list(self.tables),
                     "lfp_missing": {str(p): w for p, w in self.result.lfp_missing.items()},
                     "session_metadata": self.session_metadata}
        self._save_info()
        if "tables" not in _markers(self.progress_url, self.options):
            write_tables(self.url, self.options, self.tables, self.layout,
                         extra={zs.SPIKE_INDEX_PATH: (self.spike_index, "id")})
            _write_marker(storage.join(self.progress_url, "tables"), self.options, {})
        self._prepare_spike_array()
        new = [pid for pid in self.lfp_src if str(pid) not in self.info["lfp"]
               or zs.lfp_group_path(pid) + "/data" not in self.root]
        first = [(lfp_precheck_task, (self.lfp_src[p], min(self.layout.lfp_shard,
                                                            self.lfp_src[p].shape[0]),
                                      LFP_VOLTS_PER_BIT)) for p in new]
        exact = run_tasks(first, client=self.client, progress=False)
        for pid, ok in zip(new, exact, strict=True):
            self._new_lfp_arrays(pid, zs.ENCODING_INT16 if ok else zs.ENCODING_FLOAT32)
        for pid, s in self.lfp_src.items():
            have = tuple(self.root[zs.lfp_group_path(pid) + "/data"].shape)
            if have != tuple(s.shape):
                raise ConversionError(f"{self.url}: probe {pid} LFP is {have} but the source "
                                      f"is {s.shape}: the source changed. Delete the store and "
                                      "convert again.")
        self._save_info()

    def _prepare_spike_array(self) -> None:
        if zs.SPIKE_TIMES_PATH in self.root:
            have = self.root[zs.SPIKE_TIMES_PATH].shape
            if have != (self.n_spikes,):
                raise ConversionError(f"{self.url} holds {have[0]} spike times but the source "
                                      f"has {self.n_spikes}: the source changed. Delete the "
                                      "store and convert again.")
            return
        arr = self.root.require_group("units").create_array(
            "spike_times", shape=(self.n_spikes,), dtype="float64",
            chunks=(max(1, min(self.layout.spike_chunk, self.n_spikes)),),
            serializer=BytesCodec(), compressors=zs.checksummed(None), filters=None,
            dimension_names=("spike",), config=zs.ARRAY_CONFIG)
        arr.attrs.update({"units": "s", "note": "ragged: unit i owns [index[i-1], index[i])"})

    def _new_lfp_arrays(self, pid: int, encoding: str) -> None:
        """(Re)create a probe's arrays with ``encoding``, forgetting its finished blocks."""
        s = self.lfp_src[pid]
        create_lfp_arrays(self.root, zs.lfp_group_path(pid), s, encoding, self.layout,
                           overwrite=True)
        _remove_markers(storage.join(self.progress_url, zs.lfp_group_path(pid)), self.options)
        self.info["lfp"][str(pid)] = {"encoding": encoding, "channel_ids": list(s.channel_ids),
                                      "t_first": s.t_first, "t_last": s.t_last,
                                      "n_samples": s.shape[0], "rate": s.rate,
                                      "evenly_spaced": s.evenly_spaced}

    def lfp_jobs(self, pid: int) -> list[LFPJob]:
        g = zs.lfp_group_path(pid)
        arr = self.root[f"{g}/data"]
        n, shard = arr.shape[0], (arr.shards or arr.chunks)[0]
        enc = self.info["lfp"][str(pid)]["encoding"]
        return [LFPJob(self.lfp_src[pid], self.url, self.options, g, i, min(n, i + shard), enc,
                       LFP_VOLTS_PER_BIT, storage.join(self.progress_url, g, str(i)))
                for i in range(0, n, shard)]

    def spike_jobs(self) -> list[SpikeJob]:
        c = int(self.root[zs.SPIKE_TIMES_PATH].chunks[0])
        starts = zs.spike_piece_starts(self.spike_index, c, self.n_spikes)
        jobs = []
        for a in range(0, self.n_spikes, c):
            b = min(self.n_spikes, a + c)
            lo, hi = np.searchsorted(starts, [a, b])
            jobs.append(SpikeJob(self.spikes_src, self.url, self.options, a, b,
                                 storage.join(self.progress_url, "spikes", str(a)),
                                 tuple(int(x) for x in starts[lo:hi])))
        return jobs

    def write_spike_checksums(self, done: list[dict]) -> None:
        """The piece checksums of every spike block (``done``: what the blocks just written
        returned; the others are checksummed from the source) as :data:`SPIKE_CRC_PATH`."""
        have = {r["key"]: r["crcs"] for r in done if "crcs" in r}
        jobs = self.spike_jobs()
        more = run_tasks([(spike_checksum_task, (j,)) for j in jobs if j.key not in have],
                         client=self.client, progress=False)
        have.update({r["key"]: r["crcs"] for r in more})
        crcs = np.array([c for j in jobs for c in have[j.key]], dtype=np.uint32)
        n = len(crcs)
        arr = self.root.require_group("units").create_array(
            zs.SPIKE_CRC_PATH.rsplit("/", 1)[1], shape=(n,), dtype="uint32",
            chunks=(max(n, 1),), dimension_names=("piece",), overwrite=True,
            compressors=zs.checksummed([ZstdCodec(level=self.layout.table_zstd_level)]),
            config=zs.ARRAY_CONFIG)
        arr.attrs.update({"note": "CRC32C of each unit's spike times within each chunk "
                                  "(zarrstore.spike_piece_starts)"})
        if n:
            arr[:] = crcs

    def _all_jobs(self) -> list[LFPJob | SpikeJob]:
        return [j for pid in self.lfp_src for j in self.lfp_jobs(pid)] + self.spike_jobs()

    def _missing(self, jobs: list) -> list:
        have = _markers(self.progress_url, self.options)
        base = len(self.progress_url.rstrip("/")) + 1
        return [j for j in jobs if j.marker[base:] not in have]

    def run(self, only: set[str] | None = None) -> None:
        """Copy every block without a marker (or, for a repair, the blocks keyed ``only``); a
        probe whose later block is off the int16 grid is rewritten as float32; then check that
        every block is there and the tables equal."""
        jobs = self._all_jobs()
        todo = self._missing(jobs) if only is None else [j for j in jobs if j.key in only]
        self.result.blocks_skipped = len(jobs) - len(todo)
        calls = [(lfp_block_task if isinstance(j, LFPJob) else spike_block_task, (j,))
                 for j in todo]
        out = run_tasks(calls, client=self.client, progress=self.progress,
                        desc=f"session {self.sid}")
        self.result.blocks_written = sum(r["status"] == "written" for r in out)
        if only is None or self.rewrite_checksums:
            self.write_spike_checksums(out)
        inexact = sorted({int(r["key"].split("/")[1].split("_")[1]) for r in out
                          if r["status"] == "inexact"})
        for pid in inexact:  # rare: the first block was on the grid, a later one is not
            log.warning("probe %s: LFP is not exactly int16 x %.3g V after its first block; "
                        "storing float32", pid, LFP_VOLTS_PER_BIT)
            self._new_lfp_arrays(pid, zs.ENCODING_FLOAT32)
            self._save_info()
            redo = run_tasks([(lfp_block_task, (j,)) for j in self.lfp_jobs(pid)],
                             client=self.client, progress=self.progress,
                             desc=f"session {self.sid} probe {pid} (float32)")
            self.result.blocks_written += len(redo)
        missing = self._missing(self._all_jobs()) if only is None else []
        if missing:
            raise ConversionError(f"{self.url}: {len(missing)} block(s) were not written "
                                  f"(e.g. {[j.key for j in missing[:3]]}); rerun convert.")
        _check_tables(self.root, self.tables, self.spike_index, self.url)

    def repair(self, report: store_check.StoreReport) -> None:
        """Rewrite what the check of this complete store found missing or damaged.

        The store is marked incomplete first (readers refuse it meanwhile, as during a
        conversion). A node's lost ``zarr.json`` is written back from the consolidated metadata;
        an LFP or spike-time object is rewritten by the block that wrote it; a table column or
        the spike index by writing the tables again; a probe's channel array by recreating the
        probe. The caller checks the store again before it is marked complete.
        """
        self.result.repaired = [f"{p.kind} {p.key}" for p in report.problems]
        if "zarr.json" in report.keys:
            raise ConversionError(f"{self.url}/zarr.json, the root of the store, is damaged "
                                  f"({report.problems[0].detail}); nothing in the store can be "
                                  "trusted without it: delete the store and convert again.")
        self.uncommit()
        nodes = {k[:-len("/zarr.json")] for k in report.keys if k.endswith("/zarr.json")}
        blocks, tables, probes = self._repairs_for(report.keys - {f"{n}/zarr.json"
                                                                  for n in nodes})
        consolidated = self.root.metadata.consolidated_metadata
        self.info["complete"] = False
        self._save_info()
        if nodes:  # before anything consolidates the store again from a listing
            from zarr.core.buffer import default_buffer_prototype

            proto = default_buffer_prototype()
            flat = consolidated.flattened_metadata
            upload(self.url, self.options, {
                f"{n}/zarr.json": flat[n].to_buffer_dict(proto)["zarr.json"].to_bytes()
                for n in nodes if n in flat})
        self.read_source()
        if tables:
            _remove_markers(storage.join(self.progress_url, "tables"), self.options)
        for pid in probes:  # recreated by prepare(), every block rewritten
            self.info["lfp"].pop(str(pid), None)
        self.prepare()
        redo = blocks | {j.key for pid in probes if pid in self.lfp_src
                         for j in self.lfp_jobs(pid)}
        self.run(only=redo)

    def _repairs_for(self, keys: set[str]) -> tuple[set[str], bool, set[int]]:
        """What rewrites the objects ``keys``: ``(block keys, tables?, probes to recreate)``.
        An LFP data or timestamps shard is block ``lfp/probe_<id>/<first row>``, a spike-time
        chunk ``spikes/<first element>``; a probe's other objects recreate the probe; anything
        else belongs to the tables (or the spike index written with them)."""
        blocks: set[str] = set()
        probes: set[int] = set()
        tables = False
        for key in keys:
            parts = key.split("/")
            if parts[0] == "lfp" and len(parts) > 4 and parts[2] in ("data", "timestamps") \
                    and parts[3] == "c":
                arr = self.root[f"lfp/{parts[1]}/{parts[2]}"]
                shard = int((arr.shards or arr.chunks)[0])
                blocks.add(f"lfp/{parts[1]}/{int(parts[4]) * shard}")
            elif parts[0] == "lfp" and len(parts) > 1:
                probes.add(int(parts[1].removeprefix("probe_")))
            elif key == zs.STORE_MANIFEST:
                continue  # written anew when the store is committed again
            elif key.startswith(zs.SPIKE_CRC_PATH + "/"):
                self.rewrite_checksums = True
            elif key.startswith(zs.SPIKE_TIMES_PATH + "/c/"):
                chunk = int(self.root[zs.SPIKE_TIMES_PATH].chunks[0])
                blocks.add(f"spikes/{int(parts[-1]) * chunk}")
            else:
                tables = True
        return blocks, tables, probes

    def verify(self) -> dict[str, str]:
        """Re-read every LFP sample, timestamp and spike time from both sides; compare bits.

        Returns the blocks whose copy fails its checksums (to rewrite), each with what the
        reader said; a copy that decodes but differs from the source is a
        ``ConversionError``."""
        readers.clear_caches()
        dst_spikes = SpikeSource("zarr", self.url, self.options, zs.SPIKE_TIMES_PATH,
                                 byte_offset=0, dtype="<f8")
        calls: list[tuple[Callable, tuple]] = []
        for pid in self.lfp_src:
            g = zs.lfp_group_path(pid)
            dsrc = _dst_lfp_source(self.url, self.options, g, self.root[f"{g}/data"],
                                   self.lfp_src[pid], self.info["lfp"][str(pid)]["encoding"])
            calls += [(verify_lfp_task, (j, dsrc)) for j in self.lfp_jobs(pid)]
        calls += [(verify_spike_task, (j, dst_spikes)) for j in self.spike_jobs()]
        out = run_tasks(calls, client=self.client, progress=self.progress,
                        desc=f"verify {self.sid}")
        bad = [f"{r['key']} ({', '.join(r['what'])})" for r in out if r["status"] == "mismatch"]
        if bad:
            raise ConversionError(f"{self.url} differs from the source in {len(bad)} block(s): "
                                  f"{bad[:5]}. Delete the store and convert again.")
        damaged = {r["key"]: r["what"][0] for r in out if r["status"] == "damaged"}
        if not damaged:
            _check_tables(self.root, self.tables, self.spike_index, self.url)
            self.result.verified = True
        return damaged

    def verify_and_rewrite(self) -> None:
        """:meth:`verify`; blocks whose copy fails its checksums are rewritten (the store is
        incomplete meanwhile) and verified again."""
        damaged = self.verify()
        if not damaged:
            return
        self.result.repaired += [f"damaged block {k}" for k in sorted(damaged)]
        if any(zs.SPIKE_CRC_PATH in what for what in damaged.values()):
            self.rewrite_checksums = True  # the checksums were hit, not (only) the blocks
        self.uncommit()
        if self.info.get("complete"):
            self.info["complete"] = False
            self._save_info()
        self.run(only=set(damaged))
        readers.clear_caches()
        still = self.verify()
        if still:
            first = sorted(still)[0]
            raise ConversionError(
                f"{self.url}: block(s) {sorted(still)[:5]} still fail their checks after being "
                f"rewritten from the source (e.g. {first}: {still[first][:300]}): what was "
                "written does not read back, so the destination store (or something between) "
                "loses or changes objects. Check it, then convert again.")

    def finish(self, verified: bool) -> None:
        """Mark complete (attributes, then consolidated metadata), commit (the manifest, last),
        then drop the markers."""
        self.info.update(complete=True, verified=verified,
                         completed=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._save_info()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.consolidate_metadata(self.store)
        self.commit()
        _remove_markers(self.progress_url, self.options)

    def commit(self) -> None:
        """Write the manifest: the SHA-256 of every metadata document as it now is in the store
        (one LIST, one concurrent batch of GETs), the session and the LFP found missing."""
        keys = [k for k in store_check.list_objects(self.url, self.options)
                if zs.is_document(k) and not k.startswith(zs.PROGRESS_DIR + "/")]
        blobs = storage.fetch_objects([storage.join(self.url, k) for k in keys], self.options)
        missing = self.info.get("lfp_missing") or {}
        record = zs.make_manifest(dict(zip(keys, blobs, strict=True)), session_id=self.sid,
                                  source=self.info.get("source"), lfp_missing=missing,
                                  spike_checksums=zs.SPIKE_CRC_PATH)
        upload(self.url, self.options, {zs.STORE_MANIFEST: record})


def convert_session(src: EcephysProjectCache, dst_url: str, session_id: int, *,
                    dst_options: dict, layout: Layout, verify: bool, client=None,
                    progress: bool = True) -> SessionResult:
    """Convert, resume or verify one session; see :func:`convert`."""
    t0 = time.perf_counter()
    readers.clear_caches()
    job = SessionConversion(src, dst_url, session_id, dst_options=dst_options, layout=layout,
                            client=client, progress=progress)
    r = job.result
    # a complete store is checked first, from the store alone (fast: verify.check_store)
    report = store_check.check_store(job.url, dst_options, session_id=session_id) \
        if job.complete else None
    if report is not None and not report.ok:
        log.warning("%s", report)
        job.repair(report)
        if verify:
            job.verify_and_rewrite()
        job.finish(verified=verify)
        r.status = "repaired"
    elif job.complete and verify:
        job.read_source()
        job.verify_and_rewrite()
        if r.repaired:
            job.finish(verified=True)
        r.status = "repaired" if r.repaired else "verified"
    elif job.complete:
        r.status = "already complete"
    else:
        job.read_source()
        job.prepare()
        job.run()
        if verify:
            job.verify_and_rewrite()
        job.finish(verified=verify)
    if r.repaired:
        after = store_check.check_store(job.url, dst_options, session_id=session_id)
        if not after.ok:
            raise ConversionError(f"{job.url} is still damaged after rewriting what was "
                                  f"found:\n{after}\nDelete the store and convert again.")
    _remove_markers(job.progress_url, dst_options)  # left if a run stopped right there
    r.lfp_encodings = {int(p): m["encoding"] for p, m in job.info.get("lfp", {}).items()}
    r.lfp_missing = {int(p): w for p, w in (job.info.get("lfp_missing") or {}).items()}
    readers.clear_caches()
    r.seconds = time.perf_counter() - t0
    return r


# ---- the whole cache -----------------------------------------------------------------------

def _location(url: str, options: dict) -> tuple[str, str]:
    """``(where, path)``: the server (an S3 endpoint) or ``file``, and the normalised path of
    ``url`` on it (local paths absolute with symlinks resolved; ``.``/``..``/``//`` folded)."""
    if storage.is_s3(url):
        ck = options.get("client_kwargs") or {}
        endpoint = ck.get("endpoint_url") or options.get("endpoint_url") or ""
        return f"s3 {endpoint}", posixpath.normpath("/" + url.split("://", 1)[1]).rstrip("/")
    fs, path = zs.filesystem(url, options)
    if zs.is_local(fs):
        return "file", os.path.realpath(path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol, posixpath.normpath("/" + path).rstrip("/")


def refuse_overlap(src_url: str, src_options: dict, dst_url: str, dst_options: dict) -> None:
    """``ConversionError`` when the destination is the source, lies inside it or holds it.

    ``convert`` writes ``manifest.json`` and the tables at the destination's top: into the
    source, that rewrites the source cache's own manifest, and every unconverted session of it
    then reads as "not converted". The source is read-only to ``convert``, always, so this is
    checked before anything is opened for writing.
    """
    (sw, sp), (dw, dp) = _location(src_url, src_options), _location(dst_url, dst_options)
    if sw != dw:
        return
    if sp == dp:
        how = "is the source"
    elif dp.startswith(sp.rstrip("/") + "/"):
        how = "lies inside the source"
    elif sp.startswith(dp.rstrip("/") + "/"):
        how = "contains the source"
    else:
        return
    raise ConversionError(f"The destination {dst_url} {how} ({src_url}). convert never writes "
                          "into its source: pick a destination outside the source cache "
                          "(e.g. a sibling folder or another bucket prefix).")


def convert(src_url: str, dst_url: str, sessions: Iterable[int] | None = None, *,
            storage_options: dict | None = None, dst_storage_options: dict | None = None,
            verify: bool = False, progress: bool = True, client=None,
            layout: Layout | None = None) -> list[SessionResult]:
    """Convert an NWB cache at ``src_url`` to the Zarr layout at ``dst_url`` (any fsspec URL).

    ``sessions``: ids to convert (default: every session of ``sessions.csv``). Runs as Dask tasks
    on ``client`` / the current distributed client / Dask's default scheduler. Rerunning resumes
    (finished blocks are skipped); a complete session is checked without the source (one LIST,
    shard indexes, checksums: ``verify.check_store``) and only what is missing or damaged is
    rewritten; ``verify=True`` then compares every value with the source.

    >>> convert("s3://bucket/ecephys-cache", "s3://bucket/ecephys-zarr")   # doctest: +SKIP
    """
    layout = layout or Layout()
    src_url = storage.check_url(src_url, "source")
    dst_url = storage.check_url(dst_url, "destination").rstrip("/")
    refuse_overlap(src_url, storage.resolve(src_url, storage_options), dst_url,
                   zs.storage_options(dst_url, dst_storage_options))
    src = EcephysProjectCache(src_url, storage_options)
    if src.format != "nwb":
        raise ConversionError(f"{src_url} is already a Zarr copy (its manifest has "
                              "'session_zarr'); convert reads the published NWB layout.")
    dst_options = zs.storage_options(dst_url, dst_storage_options)
    table = src.get_session_table()
    ids = [int(s) for s in (table.index if sessions is None else sessions)]
    unknown = sorted(set(ids) - {int(s) for s in table.index})
    if unknown:
        raise ConversionError(f"session(s) {unknown} are not in {src_url}; valid ids: "
                              f"{list(table.index)[:10]}")
    copy_cache_files(src, dst_url, dst_options)
    results = []
    for sid in ids:
        r = convert_session(src, dst_url, sid, dst_options=dst_options, layout=layout,
                            verify=verify, client=client, progress=progress)
        log.info("%s", r)
        results.append(r)
    return results


# ---- CLI -----------------------------------------------------------------------------------

def _cmd_convert(args: argparse.Namespace) -> int:
    client = None
    if args.cluster:
        from .cluster import get_client

        client = get_client()
    results = convert(args.src, args.dst, args.sessions, verify=args.verify,
                      progress=not args.no_progress, client=client)
    for r in results:
        print(r)
    return 0


def register_cli(subparsers: Any) -> None:
    """``neuropixels-dask convert SRC DST [--sessions ID ...] [--verify]``."""
    p = subparsers.add_parser(
        "convert", help="copy an NWB cache to the cloud-optimised Zarr layout (resumable)",
        description="Copy sessions of an NWB ecephys cache (SRC) to per-session Zarr v3 stores "
                    "under DST, with the cache tables, so that open_cache(DST) reads them. "
                    "Rerun the same command to resume an interrupted conversion.")
    p.add_argument("src", help="NWB cache URL (folder with manifest.json), e.g. s3://…/ecephys-cache")
    p.add_argument("dst", help="destination URL (local folder or s3://…)")
    p.add_argument("--sessions", type=int, nargs="+", metavar="ID",
                   help="session ids to convert (default: all)")
    p.add_argument("--verify", action="store_true",
                   help="re-read and compare every value with the source before marking done")
    p.add_argument("--cluster", action="store_true",
                   help="run on neuropixels_dask.get_client() (dask-gateway on the hub, else a "
                        "LocalCluster) instead of local threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_convert)
