"""``verify``: find missing and damaged objects of a Zarr copy without the NWB source.

Copies of stores are moved between buckets (``aws s3 sync``, rclone) and can lose or damage
objects long after ``convert --verify`` passed; zarr reads a lost chunk as its fill value. This
check needs only the store itself, because every object of a format-2 store can be checked on
its own (``zarrstore``: a CRC32C on every chunk and shard index, every chunk written):

* **one LIST** of the store (keys and sizes) against what the consolidated metadata says must be
  there: every node's ``zarr.json`` and every chunk or shard object inside the array's extent;
* **sizes**: raw chunks (spike times) have an exact size; a shard's index says where its inner
  chunks end, which must be where the index begins;
* **index and checksum reads**: the index of every shard (its last few hundred bytes, with
  its own CRC32C) and small objects (table columns, below :data:`SMALL_OBJECT_BYTES`) whole,
  checked against their CRC32C, in concurrent batches.

* **metadata**: every ``zarr.json`` against the SHA-256 the store's ``manifest.json``
  recorded when ``convert`` committed it (format 3; a format-2 store's report notes it has none).

``deep=True`` also reads every data object in full and checks every chunk's CRC32C: it finds
a flipped bit anywhere, at the cost of reading the whole store (no decompression: the checksum
covers the stored bytes).

A format-1 store (written before checksums) is checked the same way where it can be: every
data chunk must be there, shard indexes (zarr's default index codecs already carry a CRC32C)
and raw chunk sizes; its inner chunks carry no checksum, which the report says.
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec, ShardingCodec

from . import storage
from . import zarrstore as zs
from .errors import DamagedStoreError, NeuropixelsDaskError

#: objects smaller than this are read whole and checksum-checked even without ``deep``
SMALL_OBJECT_BYTES = 1 << 20
#: bytes read per concurrent batch in ``deep`` mode (bounds the checker's memory)
DEEP_BATCH_BYTES = 256 << 20
#: shard index entry: (offset, nbytes), two little-endian uint64
INDEX_ENTRY_BYTES = 16
EMPTY = 2**64 - 1


@dataclass(frozen=True)
class Problem:
    """One missing or damaged object of a store."""

    key: str  # relative to the store
    kind: str  # missing | truncated | damaged | incomplete | unreadable
    detail: str

    def __str__(self) -> str:
        return f"  {self.kind:<10} {self.key}   {self.detail}"


@dataclass
class StoreReport:
    """What :func:`check_store` found in one session store."""

    store_url: str
    session_id: int | None = None
    version: int | None = None
    deep: bool = False
    objects: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source_cache: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def keys(self) -> set[str]:
        """Keys of the missing or damaged objects (what a repair must rewrite)."""
        return {p.key for p in self.problems}

    def __str__(self) -> str:
        who = f"session {self.session_id}" if self.session_id is not None else self.store_url
        how = ("every chunk checksum" if self.deep else
               "one LIST, shard indexes and small objects")
        head = (f"{who}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'} - "
                f"{self.objects} objects checked ({how}; format {self.version}; "
                f"{self.bytes_read / 1e6:.1f} MB read in {self.seconds:.1f} s): {self.store_url}")
        lines = [head, *[f"  note: {n}" for n in self.notes]]
        if self.problems:
            lines += [str(p) for p in self.problems[:50]]
            if len(self.problems) > 50:
                lines.append(f"  ... and {len(self.problems) - 50} more")
            lines.append("  -> " + zs.reconvert_hint(self.store_url, self.source_cache))
        return "\n".join(lines)


# ---- what must be there ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Expected:
    """One chunk or shard object an array must have, and how to check it."""

    key: str
    array: str
    kind: str  # shard | raw | small
    inner: tuple[int, ...] = ()  # shard: inner chunks inside the array's extent (C order)
    index_bytes: int = 0
    index_crc: bool = False
    inner_crc: bool = False
    raw_size: int = 0
    crc: bool = False


def is_data_array(path: str) -> bool:
    """LFP data and timestamps and the spike times: every chunk of them was written in every
    format version (format-1 tables skipped chunks equal to the fill value)."""
    return path == zs.SPIKE_TIMES_PATH or (path.startswith("lfp/")
                                           and path.endswith(("/data", "/timestamps")))


def _grid(shape: tuple[int, ...], chunk: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(product(*[range(-(-s // c)) for s, c in zip(shape, chunk, strict=True)]))


def expected_objects(path: str, meta: Any, strict: bool) -> list[_Expected]:
    """The chunk or shard objects array ``path`` (metadata ``meta``) must have.

    ``strict=False`` (format-1 tables): none are required (all-fill chunks were skipped).
    """
    shape = tuple(int(s) for s in meta.shape)
    if not strict or 0 in shape:
        return []
    grid_chunk = tuple(int(c) for c in meta.chunk_grid.chunk_shape)
    itemsize = meta.data_type.to_native_dtype().itemsize
    codecs = meta.codecs
    out = []
    for coords in _grid(shape, grid_chunk):
        key = f"{path}/{meta.encode_chunk_key(coords)}"
        if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
            sh = codecs[0]
            inner = tuple(int(c) for c in sh.chunk_shape)
            per = [g // i for g, i in zip(grid_chunk, inner, strict=True)]
            origin = [c * g for c, g in zip(coords, grid_chunk, strict=True)]
            inside = [-(-min(g, s - o) // i) for g, s, o, i in
                      zip(grid_chunk, shape, origin, inner, strict=True)]
            wanted = tuple(int(np.ravel_multi_index(ix, per)) for ix in
                           product(*[range(n) for n in inside]))
            crc = zs.has_checksum(list(sh.index_codecs))
            n_index = int(np.prod(per)) * INDEX_ENTRY_BYTES + (zs.CHECKSUM_BYTES if crc else 0)
            out.append(_Expected(key, path, "shard", wanted, n_index, crc,
                                 zs.has_checksum(list(sh.codecs))))
        elif isinstance(codecs[0], BytesCodec) and all(
                type(c) is zs.CHECKSUM for c in codecs[1:]):
            crc = zs.has_checksum(list(codecs))
            size = int(np.prod(grid_chunk)) * itemsize + (zs.CHECKSUM_BYTES if crc else 0)
            out.append(_Expected(key, path, "raw", raw_size=size, crc=crc))
        else:
            out.append(_Expected(key, path, "small", crc=zs.has_checksum(list(codecs))))
    return out


# ---- checking one store ----------------------------------------------------------------------

def list_objects(url: str, options: dict | None) -> dict[str, int]:
    """``{key relative to url: size}`` of every object under ``url`` (one recursive LIST)."""
    fs, path = zs.filesystem(url, options)
    base = path.rstrip("/") + "/"
    try:
        fs.invalidate_cache(path)
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:  # noqa: BLE001 - in the user's words
        raise storage.translate_error(exc, url) from exc
    return {p[len(base):]: int(info.get("size") or 0) for p, info in found.items()
            if p.startswith(base) and info.get("type", "file") != "directory"}


def _open_root(url: str, options: dict | None) -> zarr.Group:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return zarr.open_group(zs.open_store(url, options), mode="r", zarr_format=3,
                               use_consolidated=None)


def check_store(store_url: str, options: dict | None = None, *, deep: bool = False,
                listing: dict[str, int] | None = None, session_id: int | None = None
                ) -> StoreReport:
    """Check one session store (see the module docstring); never reads the NWB source.

    ``listing``: ``{key: size}`` of the store's objects when the caller listed them already
    (``verify_cache`` lists a whole cache at once).
    """
    t0 = time.perf_counter()
    opts = zs.storage_options(store_url, options)
    report = StoreReport(store_url.rstrip("/"), session_id, deep=deep)
    objects = list_objects(store_url, opts) if listing is None else listing
    if "zarr.json" not in objects:
        what = "no store (not converted, or lost)" if not objects else "root metadata missing"
        report.problems.append(Problem("zarr.json", "missing", what))
        return _done(report, t0)
    try:
        root = _open_root(store_url, opts)
    except Exception as exc:  # noqa: BLE001 - a damaged root document is a finding
        report.problems.append(Problem("zarr.json", "unreadable",
                                       f"{type(exc).__name__}: {str(exc)[:200]}"))
        return _done(report, t0)
    info = dict(root.attrs.get(zs.ATTRS_KEY) or {})
    report.version = int(info.get("version", 0) or 0)
    report.source_cache = zs.source_cache_of(info)
    if info.get("format") != zs.FORMAT_NAME:
        report.problems.append(Problem("zarr.json", "unreadable",
                                       "not a session store written by neuropixels-dask"))
        return _done(report, t0)
    consolidated = root.metadata.consolidated_metadata
    if not info.get("complete") or consolidated is None:
        report.problems.append(Problem("zarr.json", "incomplete",
                                       "conversion not finished: rerun convert"))
        return _done(report, t0)
    if report.version < 2:
        report.notes.append("format 1: inner chunks carry no checksum (reconvert into a new "
                            "destination to get them); presence, sizes and shard indexes "
                            "are checked")
    nodes = consolidated.flattened_metadata
    expected: list[_Expected] = []
    for path, meta in sorted(nodes.items()):
        if f"{path}/zarr.json" not in objects:
            report.problems.append(Problem(f"{path}/zarr.json", "missing",
                                           zs.describe_object(f"{path}/zarr.json")))
        if getattr(meta, "node_type", "") != "array":
            continue
        strict = zs.strict_tables(report.version) or is_data_array(path)
        expected += expected_objects(path, meta, strict)
    _check_manifest(report, store_url, opts, objects)
    report.objects = len(expected) + len(nodes) + 1
    present = []
    for e in expected:
        if e.key not in objects:
            report.problems.append(Problem(e.key, "missing", zs.describe_object(e.key)))
        elif objects[e.key] == 0:
            report.problems.append(Problem(e.key, "truncated",
                                           f"{zs.describe_object(e.key)}: empty object"))
        elif e.kind == "raw" and objects[e.key] != e.raw_size:
            report.problems.append(Problem(
                e.key, "truncated" if objects[e.key] < e.raw_size else "damaged",
                f"{zs.describe_object(e.key)}: {objects[e.key]} bytes, {e.raw_size} expected"))
        else:
            present.append(e)
    _check_contents(report, store_url, opts, present, objects, deep)
    return _done(report, t0)


def _check_manifest(report: StoreReport, url: str, opts: dict, objects: dict[str, int]) -> None:
    """Every metadata document against the manifest ``convert`` wrote when it committed the
    store (format 3): one concurrent batch of GETs of the documents and the manifest."""
    if zs.STORE_MANIFEST not in objects:
        if report.version >= 3:
            report.problems.append(Problem(zs.STORE_MANIFEST, "missing", "the commit record "
                                           "of the store (checksums of its metadata)"))
        else:
            report.notes.append(f"format {report.version}: no {zs.STORE_MANIFEST}, so its "
                                "metadata documents carry no checksum (convert into a new "
                                "destination to get one)")
        return
    docs = sorted(k for k in objects if zs.is_document(k)
                  and not k.startswith(zs.PROGRESS_DIR + "/"))
    blobs = storage.fetch_objects([storage.join(url, k) for k in [zs.STORE_MANIFEST, *docs]],
                                  opts, missing_ok=True)
    report.bytes_read += sum(len(b) for b in blobs if b is not None)
    try:
        manifest = zs.parse_manifest(blobs[0] or b"", url)
    except DamagedStoreError:
        report.problems.append(Problem(zs.STORE_MANIFEST, "damaged", "the commit record is "
                                       "unreadable or fails its own SHA-256"))
        return
    found = dict(zip(docs, blobs[1:], strict=True))
    for key in sorted(manifest["documents"]):
        if key in report.keys:
            continue
        if found.get(key) is None:
            report.problems.append(Problem(key, "missing", zs.describe_object(key)))
            continue
        try:
            zs.check_document(manifest, key, found[key], url)
        except DamagedStoreError:
            report.problems.append(Problem(key, "damaged", "differs from its checksum in "
                                           f"{zs.STORE_MANIFEST} (edited or damaged metadata)"))
    extra = sorted(set(docs) - set(manifest["documents"]))
    if extra:
        report.notes.append(f"metadata not in {zs.STORE_MANIFEST} (not read): {extra[:5]}")


def _done(report: StoreReport, t0: float) -> StoreReport:
    report.seconds = time.perf_counter() - t0
    return report


def _check_contents(report: StoreReport, url: str, opts: dict, present: list[_Expected],
                    sizes: dict[str, int], deep: bool) -> None:
    """Index reads of shards, whole reads of small objects (and of everything when ``deep``)."""
    def whole(e: _Expected) -> bool:
        return deep or (e.kind == "small" and sizes[e.key] <= SMALL_OBJECT_BYTES)

    shards = [e for e in present if e.kind == "shard" and not whole(e)]
    for e in [e for e in shards if sizes[e.key] < e.index_bytes]:
        report.problems.append(Problem(e.key, "truncated", f"{zs.describe_object(e.key)}: "
                                       f"{sizes[e.key]} bytes, smaller than its index"))
    shards = [e for e in shards if sizes[e.key] >= e.index_bytes]
    if shards:
        blobs = storage.fetch_object_ranges(
            [storage.join(url, e.key) for e in shards], opts,
            [sizes[e.key] - e.index_bytes for e in shards], [sizes[e.key] for e in shards])
        for e, blob in zip(shards, blobs, strict=True):
            report.bytes_read += len(blob)
            _check_index(report, e, blob, sizes[e.key], None)
    for batch in _batches([e for e in present if whole(e)], sizes):
        blobs = storage.fetch_objects([storage.join(url, b.key) for b in batch], opts,
                                      missing_ok=True)
        for b, blob in zip(batch, blobs, strict=True):
            _check_whole(report, b, blob, sizes[b.key])


def _batches(items: list[_Expected], sizes: dict[str, int]) -> list[list[_Expected]]:
    """``items`` in concurrent batches of at most :data:`DEEP_BATCH_BYTES` (one item at least)."""
    out: list[list[_Expected]] = []
    total = 0
    for e in items:
        if not out or total + sizes[e.key] > DEEP_BATCH_BYTES:
            out.append([])
            total = 0
        out[-1].append(e)
        total += sizes[e.key]
    return out


def _check_index(report: StoreReport, e: _Expected, index: bytes, size: int,
                 shard: bytes | None) -> None:
    """A shard's index: its checksum, every inner chunk inside the extent present and lying
    before the index; with the shard's bytes, every inner chunk's checksum."""
    what = zs.describe_object(e.key)
    if len(index) != e.index_bytes or (e.index_crc and not zs.crc_ok(index)):
        report.problems.append(Problem(e.key, "damaged", f"{what}: its index fails its "
                                       "checksum (truncated or overwritten)"))
        return
    body = len(index) - (zs.CHECKSUM_BYTES if e.index_crc else 0)
    entries = np.frombuffer(index[:body], "<u8").reshape(-1, 2)
    limit = size - e.index_bytes
    for i in e.inner:
        off, nbytes = (int(v) for v in entries[i])
        if off == EMPTY and nbytes == EMPTY:
            report.problems.append(Problem(e.key, "damaged", f"{what}: inner chunk {i} "
                                           "inside the recorded extent is not stored"))
            return
        if off + nbytes > limit:
            report.problems.append(Problem(e.key, "truncated", f"{what}: inner chunk {i} "
                                           f"ends at byte {off + nbytes}, past {limit}"))
            return
        if shard is not None and e.inner_crc and not zs.crc_ok(shard[off:off + nbytes]):
            report.problems.append(Problem(e.key, "damaged", f"{what}: inner chunk {i} "
                                           "fails its checksum"))
            return


def _check_whole(report: StoreReport, e: _Expected, blob: bytes | None, size: int) -> None:
    what = zs.describe_object(e.key)
    if blob is None:
        report.problems.append(Problem(e.key, "missing", f"{what} (vanished while checked)"))
        return
    report.bytes_read += len(blob)
    if len(blob) != size:
        report.problems.append(Problem(e.key, "truncated", f"{what}: {len(blob)} bytes read, "
                                       f"{size} listed"))
    elif e.kind == "shard":
        _check_index(report, e, blob[size - e.index_bytes:], size, blob)
    elif e.crc and not zs.crc_ok(blob):
        report.problems.append(Problem(e.key, "damaged", f"{what}: fails its checksum"))


# ---- a whole cache ---------------------------------------------------------------------------

def verify_cache(url: str, sessions: list[int] | None = None, *,
                 storage_options: dict | None = None, deep: bool = False) -> list[StoreReport]:
    """Check the session stores of the Zarr cache at ``url`` (default: every session of its
    ``sessions.csv``; a session without a store is a problem). The whole cache is listed once.
    """
    from .catalog import EcephysProjectCache

    cache = EcephysProjectCache(url, storage_options)
    if cache.format != "zarr":
        raise NeuropixelsDaskError(f"{url} is not a Zarr copy (its manifest has no "
                                   "'session_zarr'): verify checks what `convert` wrote.")
    ids = [int(s) for s in (cache.get_session_table().index if sessions is None else sessions)]
    opts = zs.storage_options(cache.url, cache.storage_options)
    everything = list_objects(cache.url, opts)
    reports = []
    for sid in ids:
        store = zs.store_url(cache.session_url(sid), sid)
        prefix = store[len(cache.url.rstrip("/")) + 1:].rstrip("/") + "/"
        listing = {k[len(prefix):]: v for k, v in everything.items() if k.startswith(prefix)}
        reports.append(check_store(store, opts, deep=deep, listing=listing, session_id=sid))
    return reports


# ---- CLI -----------------------------------------------------------------------------------

def _cmd_verify(args: argparse.Namespace) -> int:
    reports = verify_cache(args.dst, args.sessions, deep=args.deep)
    for r in reports:
        print(r)
    bad = [r for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)} of {len(reports)} session store(s) OK"
          + (f"; damaged or missing: {[r.session_id for r in bad]}" if bad else ""))
    return 1 if bad else 0


def register_cli(subparsers: Any) -> None:
    """``neuropixels-dask verify DST [--sessions ID ...] [--deep]``."""
    p = subparsers.add_parser(
        "verify", help="find missing and damaged objects of a Zarr copy (no source needed)",
        description="Check the session stores of a Zarr cache made by `convert` for missing, "
                    "truncated and damaged objects, using only the stores themselves: one "
                    "LIST, the shard indexes and the checksums every chunk carries. Exits 1 "
                    "when anything is wrong; `convert SRC DST --sessions ID` rewrites it.")
    p.add_argument("dst", help="the Zarr cache (local folder or s3://…)")
    p.add_argument("--sessions", type=int, nargs="+", metavar="ID",
                   help="session ids to check (default: every session of sessions.csv)")
    p.add_argument("--deep", action="store_true",
                   help="also read every object and check every chunk's checksum (reads the "
                        "whole store)")
    p.set_defaults(func=_cmd_verify)
