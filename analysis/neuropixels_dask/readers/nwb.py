"""Reader for the published NWB (HDF5) files, read with h5py over tuned fsspec files.

pynwb's object model builds every container in the file on open, which over S3 means hundreds of
small sequential reads; here only the datasets a method needs are touched. LFP data are not read
through h5py at all: a task looks up the byte addresses of the storage chunks it needs in the
dataset's chunk index (``chunkindex``: read one concurrent batch per B-tree level, cached per
worker; h5py's own lookup where that does not apply), fetches them in one concurrent batch and
inflates them itself. That keeps
transfers at the compressed size of the touched chunks and lets threads overlap their requests
(h5py serialises all its calls within a process).

What it returns is what HDF5 returns, or an ``InvalidFileError`` naming the file, never other
numbers: a chunk never written reads as the dataset's fill value, a Fletcher32 checksum is
verified, a chunk whose bytes do not undo to exactly one chunk is refused, the chunk index is
checked as it is read (``chunkindex``), and a dataset this module does not read itself (not
chunked, another filter, no defined fill value) is read by h5py, whose errors are reported in
the same words. tests/reliability/test_nwb_damage_matrix.py holds it to that against h5py.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from datetime import datetime

import h5py
import numpy as np
import pandas as pd

from .. import config, inflate, storage
from ..caching import ProcessCache
from ..errors import CacheNotFoundError, InvalidFileError, NeuropixelsDaskError, NoLFPError
from . import chunkindex, fletcher32
from .base import LFPSource, SessionReader, SpikeSource, is_evenly_spaced

H5Z_DEFLATE, H5Z_SHUFFLE, H5Z_FLETCHER32 = 1, 2, 3
#: datasets of a ragged/region column that are not scalar table columns
_NON_SCALAR = {"spike_times", "spike_amplitudes", "waveform_mean", "tags", "timeseries",
               "electrodes", "group"}


def _close_h5(f: h5py.File) -> None:
    fobj = getattr(f, "_npd_fileobj", None)
    f.close()
    if fobj is not None:
        fobj.close()


#: open HDF5 files per process (``remote.open_files_per_worker``): consecutive tasks on the same
#: file reuse its handle; one in use is closed only after its last reader lets go
files: ProcessCache[tuple[str, str], h5py.File] = ProcessCache(
    "hdf5 files", maxsize=lambda: int(config.get("remote.open_files_per_worker", 32)),
    on_evict=_close_h5)


@contextlib.contextmanager
def open_h5(url: str, storage_options: dict | None) -> Iterator[h5py.File]:
    """The HDF5 file at ``url``, opened once per process and held while the block runs; errors
    say what is wrong with the file."""
    opts = storage.resolve(url, storage_options)

    def opener() -> h5py.File:
        fobj = storage.open_file(url, opts)
        try:
            f = h5py.File(fobj, "r")
            f._npd_fileobj = fobj  # closed with the file
            return f
        except OSError as exc:
            fobj.close()
            msg = str(exc)
            if "truncated" in msg:
                raise InvalidFileError(
                    f"{url} is truncated ({msg}). The upload or download was cut short: "
                    "re-copy the file from the source cache.") from exc
            if "signature" in msg or "not an hdf5" in msg.lower():
                raise InvalidFileError(
                    f"{url} is not an HDF5/NWB file (no HDF5 signature). Check that the cache "
                    "holds the published NWB files at their usual keys.") from exc
            raise InvalidFileError(f"{url} could not be opened as HDF5: {msg}") from exc

    with files.acquire((url, opts.key), opener) as f:
        yield f


def _require(f: h5py.File, path: str, url: str) -> h5py.Group | h5py.Dataset:
    try:
        return f[path]
    except KeyError:
        raise InvalidFileError(
            f"{url} has no '/{path}'. It does not look like an Allen ecephys NWB file "
            "(session files hold /units, /intervals and /general/extracellular_ephys; LFP "
            "files hold /acquisition/probe_<id>_lfp).") from None


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in ("O", "S"):
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values],
                        dtype=object)
    return values


def read_table(group: h5py.Group, skip: set[str] = frozenset()) -> pd.DataFrame:
    """Scalar columns of an hdmf DynamicTable, in ``colnames`` order, index from ``id``."""
    colnames = [c.decode() if isinstance(c, bytes) else str(c)
                for c in group.attrs.get("colnames", [])]
    data = {}
    for name in colnames:
        if name in skip or name in _NON_SCALAR or f"{name}_index" in group:
            continue
        ds = group[name]
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
            continue
        data[name] = _decode(ds[()])
    index = pd.Index(group["id"][()], name="id")
    return pd.DataFrame(data, index=index)


class NWBSessionReader(SessionReader):
    """The session file ``session_<id>.nwb`` plus its probes' ``probe_<pid>_lfp.nwb`` files.

    The file is opened (and checked) here and then held only while a method reads it, from the
    per-process cache :data:`files`, so a session object never pins an HDF5 handle.
    """

    def __init__(self, session_url: str, session_id: int, storage_options: dict | None = None):
        self.url = session_url.rstrip("/")
        self.session_id = int(session_id)
        self.storage_options = storage.resolve(self.url, storage_options)
        self.file_url = storage.join(self.url, f"session_{self.session_id}.nwb")
        check_session_file(self.file_url, self.storage_options)
        with self._file():
            pass

    def _file(self) -> contextlib.AbstractContextManager[h5py.File]:
        return open_h5(self.file_url, self.storage_options)

    # ---- metadata -------------------------------------------------------------------------
    def probes(self) -> pd.DataFrame:
        with self._file() as f:
            groups = _require(f, "general/extracellular_ephys", self.file_url)
            rows = []
            for name, g in groups.items():
                if name == "electrodes" or not isinstance(g, h5py.Group):
                    continue
                a = g.attrs
                dev = f.get(f"general/devices/{name}")
                rows.append({
                    "id": int(a.get("probe_id", -1)),
                    "description": name,
                    "location": _str(a.get("location", "")),
                    "sampling_rate": float(dev.attrs.get("sampling_rate", np.nan))
                    if dev is not None else np.nan,
                    "lfp_sampling_rate": float(a.get("lfp_sampling_rate", np.nan)),
                    "has_lfp_data": bool(a.get("has_lfp_data", False)),
                })
        return pd.DataFrame(rows).set_index("id")

    def channels(self) -> pd.DataFrame:
        with self._file() as f:
            g = _require(f, "general/extracellular_ephys/electrodes", self.file_url)
            return read_table(g, skip={"group"})

    def units(self) -> pd.DataFrame:
        with self._file() as f:
            return read_table(_require(f, "units", self.file_url))

    def spike_index(self) -> np.ndarray:
        with self._file() as f:
            return _require(f, "units/spike_times_index", self.file_url)[()].astype(np.int64)

    def spike_source(self) -> SpikeSource:
        with self._file() as f:
            ds = _require(f, "units/spike_times", self.file_url)
            return SpikeSource("nwb", self.file_url, self.storage_options, "units/spike_times",
                               byte_offset=_raw_offset(ds), dtype=ds.dtype.str)

    def stimulus_tables(self) -> dict[str, pd.DataFrame]:
        with self._file() as f:
            intervals = _require(f, "intervals", self.file_url)
            return {name: read_table(g) for name, g in intervals.items()
                    if name.endswith("_presentations")}

    def invalid_times(self) -> pd.DataFrame:
        with self._file() as f:
            g = f.get("intervals/invalid_times")
            if g is None:
                return super().invalid_times()
            table = read_table(g)
            if "tags" in g and "tags_index" in g:  # ragged: [scope, scope id, label] per row
                tags = _decode(g["tags"][()])
                ends = g["tags_index"][()].astype(np.int64)
                starts = np.concatenate([[0], ends[:-1]])
                table["tags"] = pd.Series([np.asarray(tags[a:b], dtype=object)
                                           for a, b in zip(starts, ends, strict=True)],
                                          index=table.index, dtype=object)
            return table

    def session_metadata(self) -> dict:
        with self._file() as f:
            subject = f.get("general/subject")
            attrs = subject.attrs if subject is not None else {}

            def text(path: str) -> str | None:
                return _str(f[path][()]) if path in f else None

            return {
                "specimen_name": _plain(attrs.get("specimen_name")),
                "age_in_days": _plain(attrs.get("age_in_days")),
                "full_genotype": text("general/subject/genotype"),
                "strain": text("general/subject/strain"),
                "sex": text("general/subject/sex"),
                "stimulus_name": text("general/stimulus"),
                "subject_id": text("general/subject/subject_id"),
                "age": text("general/subject/age"),
                "species": text("general/subject/species"),
                "session_start_time": datetime.fromisoformat(
                    _str(_require(f, "session_start_time", self.file_url)[()])),
            }

    def running_speed(self) -> pd.DataFrame:
        with self._file() as f:
            g = f.get("processing/running/running_speed")
            if g is None:
                return pd.DataFrame(columns=["start_time", "end_time", "velocity"])
            ts = g["timestamps"][()]
            v = g["data"][()]
            ends = f.get("processing/running/running_speed_end_times/timestamps")
            end = ends[()] if ends is not None else None
        if end is None:  # older files: each sample ends where the next begins
            end = np.append(ts[1:], ts[-1] + (ts[-1] - ts[-2] if ts.size > 1 else 0.0))
        return pd.DataFrame({"start_time": ts, "end_time": end, "velocity": v})

    def lfp_source(self, probe_id: int, probe_name: str) -> LFPSource:
        url = storage.join(self.url, f"probe_{probe_id}_lfp.nwb")
        try:
            # no separate existence check: opening says it as well, one round trip sooner
            with open_h5(url, self.storage_options) as f, \
                    _h5py_errors(url, f"the LFP series of probe {probe_id}"):
                return self._lfp_source(f, url, probe_id)
        except CacheNotFoundError:
            raise NoLFPError(
                f"Probe {probe_id} ({probe_name}) of session {self.session_id} has no LFP file "
                f"({url} does not exist). A few probes of the real dataset were recorded without "
                "LFP; pick a probe with has_lfp_data == True (session.probes).") from None

    def _lfp_source(self, f: h5py.File, url: str, probe_id: int) -> LFPSource:
        """The LFP series of an open file: shape, chunks, filters, channels, first and last
        timestamp."""
        base = None
        for cand in (f"acquisition/probe_{probe_id}_lfp/probe_{probe_id}_lfp_data",
                     f"acquisition/probe_{probe_id}_lfp_data"):
            if cand in f:
                base = cand
                break
        if base is None:
            raise InvalidFileError(
                f"{url} has no /acquisition/probe_{probe_id}_lfp/probe_{probe_id}_lfp_data: "
                "not an Allen LFP file for this probe.")
        data = f[f"{base}/data"]
        ts = f[f"{base}/timestamps"]
        if not isinstance(data, h5py.Dataset) or not isinstance(ts, h5py.Dataset):
            raise InvalidFileError(f"{url}: /{base}/data and /{base}/timestamps must be "
                                   "datasets. The file is damaged or not an Allen LFP file: "
                                   "re-copy it from the source cache.")
        region = np.asarray(f[f"{base}/electrodes"][()])
        ids = np.asarray(_require(f, "general/extracellular_ephys/electrodes/id", url)[()])
        channel_ids = _lfp_channel_ids(url, base, data, ts, region, ids)
        chunks = data.chunks or data.shape
        t_first, t_last, even = _sample_timestamps(f, ts, url, self.storage_options)
        return LFPSource(
            format="nwb", url=url, storage_options=self.storage_options,
            data_path=f"{base}/data", timestamps_path=f"{base}/timestamps",
            shape=tuple(int(s) for s in data.shape), chunks=tuple(int(c) for c in chunks),
            dtype=data.dtype.str, filters=_filters(data), channel_ids=channel_ids,
            t_first=t_first, t_last=t_last, evenly_spaced=even)


def _lfp_channel_ids(url: str, base: str, data: h5py.Dataset, ts: h5py.Dataset,
                     region: np.ndarray, ids: np.ndarray) -> tuple[int, ...]:
    """The channel id of each LFP column: the electrodes table's ids at the series' region.

    The data, its region and its timestamps must agree, or the file is refused by name: a
    column without a channel (or a channel without a column) would be read as another
    channel's samples, or as zeros.
    """
    where = f"{url} (/{base})"
    if data.ndim != 2 or ts.ndim != 1:
        raise InvalidFileError(f"{where}: LFP data must be (time, channel) and its timestamps "
                               f"1-D, not {data.shape} and {ts.shape}. The file is not an "
                               "Allen LFP file or is damaged: re-copy it from the source cache.")
    if ts.shape[0] != data.shape[0]:
        raise InvalidFileError(f"{where}: the LFP data has {data.shape[0]} samples but "
                               f"{ts.shape[0]} timestamps. The file is damaged or was written "
                               "incompletely: re-copy it from the source cache.")
    if region.ndim != 1 or region.dtype.kind not in "iu":
        raise InvalidFileError(f"{where}: the LFP electrodes region is not a list of rows of "
                               f"the electrodes table ({region.dtype}, shape {region.shape}).")
    if region.size != data.shape[1]:
        raise InvalidFileError(
            f"{where}: the LFP data has {data.shape[1]} channel column(s) but its electrodes "
            f"region lists {region.size} electrode(s); they must agree, one electrode per "
            "column. The file is damaged or inconsistent: re-copy it from the source cache.")
    if region.size and (int(region.min()) < 0 or int(region.max()) >= ids.size):
        raise InvalidFileError(
            f"{where}: the LFP electrodes region refers to rows {int(region.min())}…"
            f"{int(region.max())} of the electrodes table, which has {ids.size} rows. The file "
            "is damaged or inconsistent: re-copy it from the source cache.")
    return tuple(int(i) for i in ids[region])


#: chunks of the timestamps, besides the first and the last, checked against even spacing when
#: an LFP file is opened (fetched in the same batch as those two)
TIMESTAMP_SAMPLE_CHUNKS = 3


def _sample_timestamps(f: h5py.File, ts: h5py.Dataset, url: str, opts
                       ) -> tuple[float, float, bool]:
    """``ts[0]``, ``ts[-1]`` and whether a sample of ``ts`` is evenly spaced between them.

    The first and last chunk and :data:`TIMESTAMP_SAMPLE_CHUNKS` chunks spread between them
    are fetched in one batch after one index lookup (h5py would read them one after the
    other), and every timestamp in them is compared with the even spacing that the first, the
    last and the count give (``base.is_evenly_spaced``). A dataset this module does not read
    itself is sampled by h5py, at the same places.
    """
    n = ts.shape[0]
    if n == 0:
        raise InvalidFileError(f"{url}: the LFP series {ts.name} has no timestamps.")
    filters = _filters(ts) if ts.chunks is not None else ()
    ct = ts.chunks[0] if ts.chunks is not None else n
    n_chunks = -(-n // ct)
    picks = sorted({0, n_chunks - 1} | {n_chunks * k // (TIMESTAMP_SAMPLE_CHUNKS + 1)
                                        for k in range(1, TIMESTAMP_SAMPLE_CHUNKS + 1)})
    coords = [(k * ct,) for k in picks]
    values: list[np.ndarray] | None = None
    if _reads_itself(ts, filters) and _fill_value(ts) is not None:
        found = _chunk_infos(url, opts, ts.name, ts, coords, _metadata_reader(f))
        if all(found[c] is not None for c in coords):
            infos = [found[c] for c in coords]
            blobs = storage.fetch_ranges(url, opts, [i.offset for i in infos],
                                         [i.offset + i.size for i in infos])
            bufs = _unfilter_many(blobs, filters, [i.filter_mask for i in infos],
                                  ts.dtype.itemsize, ct * ts.dtype.itemsize, url)
            values = [np.frombuffer(b, ts.dtype)[:min(ct, n - c0)]
                      for b, (c0,) in zip(bufs, coords, strict=True)]
    if values is None:  # h5py's to read (a chunk never written reads as the fill value)
        with _h5py_errors(url, f"the timestamps {ts.name}"):
            values = [ts[c0:min(n, c0 + ct)] for (c0,) in coords]
    index = np.concatenate([np.arange(c0, c0 + len(v)) for (c0,), v in zip(coords, values,
                                                                          strict=True)])
    stamps = np.concatenate(values).astype(np.float64)
    t_first, t_last = float(stamps[0]), float(stamps[-1])
    return t_first, t_last, is_evenly_spaced(index, stamps, n)


def open_session_reader(session_url: str, session_id: int,
                        storage_options: dict | None) -> NWBSessionReader:
    """The reader of a published session (the format's entry point, see ``readers``)."""
    return NWBSessionReader(session_url, session_id, storage_options)


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _plain(v):
    """An HDF5 attribute value as Python/NumPy scalar text or number (``None`` if absent)."""
    return v.decode() if isinstance(v, bytes) else v


def _reads_itself(ds: h5py.Dataset, filters: tuple) -> bool:
    """Whether this module decodes ``ds``'s chunks itself: chunked, only filters it undoes,
    and stored as exactly the numpy type h5py returns (an IEEE float or integer of either byte
    order; any other file type, e.g. a float with other bit fields, needs HDF5's conversion)."""
    if ds.chunks is None or not all(_undoes(code, values, ds.dtype.itemsize)
                                    for code, values in filters):
        return False
    return _standard_type(ds)


def _undoes(code: int, values: tuple, itemsize: int) -> bool:
    """Whether this module undoes filter ``code`` with client data ``values`` exactly as HDF5
    does: deflate at a level HDF5 accepts, shuffle by the dataset's element size, Fletcher32
    (other parameters, e.g. a damaged level HDF5 refuses, are h5py's to judge)."""
    if code == H5Z_DEFLATE:
        return len(values) == 1 and 0 <= values[0] <= 9
    if code == H5Z_SHUFFLE:
        return values in ((), (itemsize,))
    return code == H5Z_FLETCHER32


def _standard_type(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` is stored as exactly the numpy type h5py gives it (no conversion)."""
    try:
        return bool(ds.id.get_type().equal(h5py.h5t.py_create(ds.dtype)))
    except (TypeError, ValueError):
        return False


def _fill_value(ds: h5py.Dataset):
    """What HDF5 returns for a chunk of ``ds`` never written: its fill value (from the
    dataset's fill value message, HDF5's default 0 when it has none), or ``None`` where
    HDF5 returns nothing defined (no fill value, or fill time "never": h5py's to read)."""
    plist = ds.id.get_create_plist()
    if plist.fill_value_defined() == h5py.h5d.FILL_VALUE_UNDEFINED \
            or plist.get_fill_time() == h5py.h5d.FILL_TIME_NEVER:
        return None
    return ds.fillvalue


@contextlib.contextmanager
def _h5py_errors(url: str, what: str) -> Iterator[None]:
    """h5py's errors about the file as ``InvalidFileError`` naming it (ours and the store's
    pass through, in the store's words: h5py re-raises what the file object raised)."""
    try:
        yield
    except NeuropixelsDaskError:
        raise
    except (ConnectionError, TimeoutError) as exc:
        raise storage.translate_error(exc, url) from exc
    except (OSError, RuntimeError, ValueError, KeyError, IndexError, TypeError) as exc:
        if type(exc).__module__.split(".")[0] in ("botocore", "aiohttp", "s3fs", "fsspec"):
            raise storage.translate_error(exc, url) from exc
        raise InvalidFileError(f"{url}: HDF5 cannot read {what} ({type(exc).__name__}: "
                               f"{exc}). The file is damaged: re-copy it from the source "
                               "cache.") from exc


def _filters(ds: h5py.Dataset) -> tuple:
    plist = ds.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, _name = plist.get_filter(i)
        out.append((int(code), tuple(int(v) for v in values)))
    return tuple(out)


def _raw_offset(ds: h5py.Dataset) -> int | None:
    """Byte offset of element 0 if ``ds`` is stored raw and in one piece, as the numpy type
    h5py returns, else ``None`` (h5py reads it)."""
    if _filters(ds) or not _standard_type(ds):
        return None
    if ds.chunks is None:
        off = ds.id.get_offset()
        return int(off) if off is not None else None
    if ds.id.get_num_chunks() == 1 and ds.chunks[0] >= ds.shape[0]:
        return int(ds.id.get_chunk_info(0).byte_offset)
    return None


# ---- data reads (run inside Dask tasks) ----------------------------------------------------

def _damaged_chunk(url: str, why: str) -> InvalidFileError:
    return InvalidFileError(f"{url}: {why}. The file is damaged: re-copy it from the source "
                            "cache.")


def _unfilter_many(raws: list[bytes], filters: tuple, masks: list[int], itemsize: int,
                   chunk_bytes: int, url: str) -> list[bytes]:
    """Undo the HDF5 filter pipeline of many chunks (applied in order on write, so reversed
    here); the deflate step of all chunks runs as one batch on the inflate pool. Each result
    is exactly ``chunk_bytes`` long, or the file named in ``url`` is reported damaged."""
    bufs = list(raws)
    for i in reversed(range(len(filters))):
        todo = [k for k, m in enumerate(masks) if not m & (1 << i)]  # bit set: filter skipped
        code = filters[i][0]
        if code == H5Z_DEFLATE:
            try:
                out = inflate.inflate_many([bufs[k] for k in todo], chunk_bytes)
            except inflate.InflateError as exc:
                raise _damaged_chunk(url, f"a compressed LFP chunk does not inflate ({exc})"
                                     ) from exc
            for k, buf in zip(todo, out, strict=True):
                bufs[k] = buf
        elif code == H5Z_SHUFFLE:
            for k in todo:
                if len(bufs[k]) % itemsize:
                    raise _damaged_chunk(url, f"a shuffled chunk of {len(bufs[k])} bytes is not "
                                         f"a whole number of {itemsize}-byte values")
                bufs[k] = np.frombuffer(bufs[k], np.uint8).reshape(itemsize, -1).T.tobytes()
        elif code == H5Z_FLETCHER32:
            for k in todo:
                body = fletcher32.strip(bufs[k])
                if body is None:
                    raise _damaged_chunk(url, "a chunk fails its Fletcher32 checksum (data "
                                         "error detected by Fletcher32 checksum)")
                bufs[k] = body
    for buf in bufs:
        _check_length(buf, chunk_bytes, url)
    return bufs


def _check_length(buf: bytes, chunk_bytes: int, url: str) -> None:
    if len(buf) != chunk_bytes:
        raise _damaged_chunk(url, f"a chunk holds {len(buf)} bytes once its filters are undone, "
                             f"not the {chunk_bytes} of one chunk (its stored size or filter "
                             "mask is wrong, or the file is cut short)")


#: Inflate each chunk as soon as its (coalesced) request is in, on the inflate pool, while the
#: task still waits for its other requests (as hidefix decodes while its requests are in
#: flight). Measured in benchmarks/results/2026-12-01-coalesce-sweep.md ("overlap").
OVERLAP_INFLATE = True


def _fetch_unfiltered(src: LFPSource, infos: list[chunkindex.ChunkInfo], itemsize: int,
                      chunk_bytes: int, place: Callable[[int, bytes], None]) -> None:
    """Fetch the stored chunks ``infos`` of ``src`` (coalesced, storage/ranges.py), undo the
    HDF5 filter pipeline and hand each chunk to ``place(i, bytes)``; returns once every chunk is
    placed.

    The outermost filter (the last applied on write: deflate in the published files) starts on
    each chunk as its request arrives, and ``place`` runs on the inflate pool right after it, so
    a chunk is copied into its block and let go at once: a task holds the compressed row and the
    block, not every inflated chunk as well (that was a third block while the row arrived).
    ``place`` must be safe to call from several threads at once for different chunks.
    """
    starts = [info.offset for info in infos]
    stops = [info.offset + info.size for info in infos]
    masks = [info.filter_mask for info in infos]
    last = len(src.filters) - 1
    early = OVERLAP_INFLATE and last >= 0 and src.filters[last][0] == H5Z_DEFLATE
    if not early:
        blobs = storage.fetch_ranges(src.url, src.storage_options, starts, stops)
        for i, buf in enumerate(_unfilter_many(blobs, src.filters, masks, itemsize,
                                               chunk_bytes, src.url)):
            place(i, buf)
        return
    inner = src.filters[:last]  # what remains once the deflate step is done

    def finish(i: int) -> Callable[[bytes], None]:
        def run(buf: bytes) -> None:
            place(i, _unfilter_many([buf], inner, [masks[i]], itemsize, chunk_bytes,
                                    src.url)[0])
        return run

    fs, path = storage.filesystem(src.url, src.storage_options)
    futures: list[Future] = []
    try:
        with storage.bounded():  # one deadline for the whole row (storage/deadline.py)
            for i, blob in storage.ranges.fetch_iter(fs, [path] * len(infos), starts, stops):
                if masks[i] & (1 << last):  # stored without deflate
                    finish(i)(blob)
                else:
                    futures.append(inflate.submit(blob, chunk_bytes, then=finish(i)))
    except Exception as exc:  # noqa: BLE001 - re-raised in the user's words
        for f in futures:
            f.cancel()
        wait(futures)  # no pool thread may still write into the caller's block
        raise storage.translate_error(exc, src.url) from exc
    try:
        for future in futures:
            future.result()
    except inflate.InflateError as exc:
        raise _damaged_chunk(src.url, f"a compressed LFP chunk does not inflate ({exc})"
                             ) from exc
    finally:
        for f in futures:
            f.cancel()
        wait(futures)


def read_lfp_block(src: LFPSource, i0: int, i1: int, cols: np.ndarray) -> np.ndarray:
    """LFP samples ``[i0, i1)`` of columns ``cols`` as ``(time, channel)``, channel-major in
    memory (exact chunk fetches).

    The file is held only while the chunks' addresses are looked up; fetching and inflating
    run without h5py (and without its global lock).
    """
    cols = np.asarray(cols, dtype=np.int64)
    dtype = np.dtype(src.dtype)
    ct, cc = src.chunks
    rows = range(i0 // ct, (i1 - 1) // ct + 1)
    ccols = np.unique(cols // cc)
    coords = [(r * ct, int(c) * cc) for r in rows for c in ccols]
    with open_h5(src.url, src.storage_options) as f:
        with _h5py_errors(src.url, f"the dataset {src.data_path}"):
            ds = f[src.data_path]
            fill = _fill_value(ds)  # from the header h5py read at open: no request
        if not _reads_itself(ds, src.filters) or fill is None:
            return _read_with_h5py(ds, src.url, i0, i1, cols)
        infos = _chunk_infos(src.url, src.storage_options, src.data_path, ds, coords,
                             _metadata_reader(f))
    stored = [coord for coord in coords if infos[coord] is not None]
    # channel-major memory (Fortran order): each chunk is one channel's run of samples, so a
    # column is one contiguous copy, and ``block.T`` is the contiguous (channel, time) array the
    # spectral kernel copies its segments from (2 instead of 24 ms per 70-channel block here,
    # and the kernel 20 % faster)
    out = np.empty((i1 - i0, len(cols)), dtype, order="F")
    columns: dict[int, list[tuple[int, int]]] = {}  # chunk column → [(j, column inside)]
    for j, col in enumerate(cols.tolist()):
        columns.setdefault(col // cc, []).append((j, col % cc))
    missing = {(r * ct, c * cc) for r in rows for c in columns} - set(stored)
    for r0, c0 in missing:  # never written: the dataset's fill value, as HDF5 reads it
        a, b = max(i0, r0), min(i1, r0 + ct)
        for j, _ in columns[c0 // cc]:
            out[a - i0:b - i0, j] = fill

    def place(k: int, raw: bytes) -> None:  # on the inflate pool: chunks fill disjoint columns
        r0, c0 = stored[k]
        ch = np.frombuffer(raw, dtype).reshape(ct, cc)
        a, b = max(i0, r0), min(i1, r0 + ct)
        for j, inside in columns[c0 // cc]:
            out[a - i0:b - i0, j] = ch[a - r0:b - r0, inside]

    _fetch_unfiltered(src, [infos[c] for c in stored], dtype.itemsize,
                      ct * cc * dtype.itemsize, place)
    return out


def _read_with_h5py(ds: h5py.Dataset, url: str, i0: int, i1: int, cols: np.ndarray
                    ) -> np.ndarray:
    """``ds[i0:i1, cols]`` read by h5py (a layout this module does not read itself),
    channel-major as :func:`read_lfp_block` returns it."""
    order = np.argsort(cols)
    with _h5py_errors(url, f"LFP samples {i0}–{i1} of {ds.name}"):
        block = ds[i0:i1, cols[order]] if len(cols) else np.empty((i1 - i0, 0), ds.dtype)
    out = np.empty_like(block, order="F")
    out[:, order] = block
    return out


#: chunk indexes of LFP datasets per process (``chunkindex.ChunkIndex``, or ``None`` where only
#: h5py can read it), so that a file's B-tree nodes are fetched once per worker
indexes: ProcessCache[tuple[str, str, str], chunkindex.ChunkIndex | None] = ProcessCache(
    "hdf5 chunk indexes", maxsize=64)


def _chunk_infos(url: str, storage_options, path: str, ds: h5py.Dataset,
                 coords: list[tuple[int, ...]], read: chunkindex.Read | None = None
                 ) -> dict[tuple[int, ...], chunkindex.ChunkInfo | None]:
    """Where the chunks at ``coords`` of dataset ``path`` of ``url`` are stored: from the
    B-tree read level by level in concurrent batches (``chunkindex``, kept per process), else
    from h5py one chunk at a time."""
    opts = storage.resolve(url, storage_options)
    key = (url, opts.key, path)

    def fetch(starts: list[int], stops: list[int]) -> list[bytes]:
        return storage.fetch_ranges(url, opts, starts, stops)

    index = indexes.get(key, lambda: chunkindex.chunk_index(ds, fetch, read))
    if index is not None:
        try:
            return index.lookup(coords)
        except chunkindex.DamagedIndex as exc:
            raise InvalidFileError(f"{url}: the chunk index of {path} is damaged ({exc}). "
                                   "Re-copy the file from the source cache.") from exc
        except (chunkindex.FormatNotHandled, struct.error, IndexError, ValueError):
            indexes.forget(key)  # this file's index is h5py's to read from now on
            indexes.get(key, lambda: None)
    out: dict[tuple[int, int], chunkindex.ChunkInfo | None] = {}
    with _h5py_errors(url, f"the chunk index of {path}"):
        for coord in coords:
            info = ds.id.get_chunk_info_by_coord(coord)
            out[coord] = None if info.byte_offset is None else chunkindex.ChunkInfo(
                int(info.byte_offset), int(info.size), int(info.filter_mask))
    return out


def _metadata_reader(f: h5py.File) -> chunkindex.Read | None:
    """``read(start, stop)`` through the metadata block cache of ``f`` (opened by
    :func:`open_h5`): what h5py read to open the file and the dataset costs no second request.
    ``None`` for other file objects (local files: the OS cache does this).

    It calls the cache directly, not ``seek`` + ``read`` on the file object, whose position h5py
    may be using in another thread; the block cache itself is thread-safe.
    """
    cache = getattr(getattr(f, "_npd_fileobj", None), "cache", None)
    if not isinstance(cache, storage.HDF5BlockCache):
        return None

    def read(start: int, stop: int) -> bytes:
        return cache._fetch(start, min(stop, cache.size))

    return read


def read_timestamps(src: LFPSource, i0: int, i1: int) -> np.ndarray:
    with open_h5(src.url, src.storage_options) as f, \
            _h5py_errors(src.url, f"timestamps {i0}–{i1} of {src.timestamps_path}"):
        return f[src.timestamps_path][i0:i1]


def check_session_file(url: str, storage_options: dict | None) -> None:
    """Raise ``CacheNotFoundError`` if the session file is missing (before h5py sees it)."""
    if not storage.exists(url, storage_options):
        raise CacheNotFoundError(f"{url} does not exist. The cache lists this session but its "
                                 "NWB file is missing: check that the copy of the cache is "
                                 "complete.")


def read_spike_ranges(src: SpikeSource, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
    """Several units' spike times: one concurrent batch of exact ranged reads when stored raw."""
    dtype = np.dtype(src.dtype)
    if src.byte_offset is None:
        with open_h5(src.url, src.storage_options) as f, \
                _h5py_errors(src.url, f"spike times of {src.path}"):
            ds = f[src.path]
            return [ds[a:b] if b > a else np.empty(0, dtype) for a, b in ranges]
    want = [(a, b) for a, b in ranges if b > a]
    blobs = storage.fetch_ranges(
        src.url, src.storage_options,
        [src.byte_offset + dtype.itemsize * a for a, _ in want],
        [src.byte_offset + dtype.itemsize * b for _, b in want]) if want else []
    it = iter(blobs)
    return [np.frombuffer(next(it), dtype).astype(np.float64, copy=False) if b > a
            else np.empty(0, np.float64) for a, b in ranges]
