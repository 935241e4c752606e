"""The NWB reader against h5py on the same bytes: every HDF5 layout, and every kind of damage.

The reader finds and decodes LFP chunks itself (readers/nwb.py, readers/chunkindex.py), so it must
read exactly what HDF5 reads. Each case here writes a small LFP file with h5py, reads it through
the reader (the local path and over S3) and through h5py, and holds the reader to one rule: **the
same values, or a named error, never different values** (and a named error wherever h5py refuses
the bytes). Hypothesis chooses the damaged byte: flipped bytes and truncation in a compressed
chunk, an uncompressed chunk, a Fletcher32-checked chunk, a B-tree node, a B-tree key and the
dataset's object header.
"""

from __future__ import annotations

import itertools
import os
import struct

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuropixels_dask import caching, readers
from neuropixels_dask.errors import InvalidFileError, NeuropixelsDaskError
from neuropixels_dask.readers import chunkindex, nwb

pytestmark = pytest.mark.usefixtures("close_handles_after_module")

SID, PID = 1, 7
N, C = 600, 6
BASE = f"acquisition/probe_{PID}_lfp/probe_{PID}_lfp_data"
DATA = f"{BASE}/data"
_names = itertools.count()


def _values(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-3000, 3000, (N, C)).astype(dtype)
    return (rng.standard_normal((N, C)) * 1e-4).astype(dtype)


def _dcpl(layout: int, early: bool = False):
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(layout)
    if layout == h5py.h5d.CHUNKED:
        dcpl.set_chunk((100, 2))
    if early:
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def _unwritten(ds: h5py.Dataset) -> None:
    """Write every chunk but two (they read as the fill value)."""
    values = _values(ds.dtype.str)
    ds[:200] = values[:200]
    ds[300:, :] = values[300:]
    ds[200:300, 2:] = values[200:300, 2:]


#: name → (libver, create_dataset keywords, how to write the values)
LAYOUTS = {
    "int16 big-endian gzip": ("earliest", dict(dtype=">i2", chunks=(100, 1),
                                                compression="gzip"), None),
    "float32 big-endian": ("earliest", dict(dtype=">f4", chunks=(100, 1)), None),
    "float64": ("earliest", dict(dtype="f8", chunks=(100, 2), compression="gzip"), None),
    "contiguous": ("earliest", dict(dtype="f4"), None),
    "compact": ("earliest", dict(dtype="f4", dcpl=_dcpl(h5py.h5d.COMPACT)), None),
    "lzf": ("earliest", dict(dtype="f4", chunks=(100, 1), compression="lzf"), None),
    "shuffle+gzip": ("earliest", dict(dtype="f4", chunks=(100, 1), shuffle=True,
                                      compression="gzip"), None),
    "unaligned chunks": ("earliest", dict(dtype="f4", chunks=(70, 4), compression="gzip"), None),
    "deep B-tree": ("earliest", dict(dtype="f4", chunks=(4, 1)), None),
    "fixed array": ("latest", dict(dtype="f4", chunks=(100, 1), compression="gzip"), None),
    "extensible array": ("latest", dict(dtype="f4", chunks=(100, 1), compression="gzip",
                                        maxshape=(None, C)), None),
    "B-tree v2": ("latest", dict(dtype="f4", chunks=(100, 1), compression="gzip",
                                 maxshape=(None, None)), None),
    "implicit": ("latest", dict(dtype="f4", dcpl=_dcpl(h5py.h5d.CHUNKED, early=True)), None),
    "fill value -7.5 gzip": ("earliest", dict(dtype="f4", chunks=(100, 1), compression="gzip",
                                              fillvalue=-7.5), _unwritten),
    "fill value NaN raw": ("earliest", dict(dtype="f4", chunks=(100, 1), fillvalue=np.nan),
                           _unwritten),
    "fill value NaN v4 index": ("latest", dict(dtype="f4", chunks=(100, 1), fillvalue=np.nan,
                                               compression="gzip", maxshape=(None, C)),
                                _unwritten),
    "default fill value": ("earliest", dict(dtype="f4", chunks=(100, 1)), _unwritten),
    "fill time never": ("earliest", dict(dtype="f4", chunks=(100, 1), fillvalue=3.0,
                                         fill_time="never"), _unwritten),
    "fletcher32": ("earliest", dict(dtype="f4", chunks=(100, 1), compression="gzip",
                                    shuffle=True, fletcher32=True), None),
    "fletcher32 raw": ("earliest", dict(dtype="f4", chunks=(100, 1), fletcher32=True), None),
}


def write_session(folder: str, libver: str, kw: dict, write=None, *, timestamps=None) -> str:
    """A session folder holding an (empty) session file and a probe's LFP file written by h5py;
    the LFP file's path back."""
    os.makedirs(folder, exist_ok=True)
    with h5py.File(os.path.join(folder, f"session_{SID}.nwb"), "w"):
        pass
    path = os.path.join(folder, f"probe_{PID}_lfp.nwb")
    bounds = ("latest", "latest") if libver == "latest" else (libver, "v108")
    with h5py.File(path, "w", libver=bounds) as f:
        g = f.create_group(BASE)
        kw = dict(kw)
        dtype = kw.pop("dtype")
        ds = g.create_dataset("data", shape=(N, C), dtype=dtype, **kw)
        if write is None:
            ds[...] = _values(dtype)
        else:
            write(ds)
        ts = timestamps if timestamps is not None else 13.6 + np.arange(N) / 1250.0
        g.create_dataset("timestamps", data=ts, chunks=(64,), compression="gzip")
        g.create_dataset("electrodes", data=np.arange(C))
        f.create_dataset("general/extracellular_ephys/electrodes/id",
                         data=np.arange(C, dtype=np.int64) + 1000)
    return path


def ours(folder_url: str, storage_options: dict | None = None) -> np.ndarray:
    """The whole LFP dataset as the reader reads it (nothing cached from an earlier case)."""
    caching.clear_all()
    reader = nwb.NWBSessionReader(folder_url, SID, storage_options)
    src = reader.lfp_source(PID, "probeA")
    return readers.read_lfp_block(src, 0, src.shape[0], np.arange(src.shape[1]))


def theirs(path: str) -> np.ndarray | None:
    """The dataset as h5py reads it, or ``None`` where h5py refuses."""
    try:
        with h5py.File(path, "r") as f:
            return f[DATA][()]
    except Exception:  # noqa: BLE001 - any refusal counts as one
        return None


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit (NaN included), in the same dtype."""
    return a.dtype == b.dtype and a.shape == b.shape \
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def assert_same_or_named(folder: str, path: str, opts: dict | None = None,
                         url: str | None = None) -> str:
    """The rule: the same values as h5py, or a named error; a named error where h5py refuses.
    Returns which happened ("same" or "named")."""
    want = theirs(path)
    try:
        got = ours(url or folder, opts)
    except NeuropixelsDaskError as exc:
        assert isinstance(exc, InvalidFileError), exc
        assert (url or folder).rstrip("/") in str(exc) or "probe_" in str(exc), exc
        return "named"
    assert want is not None, "h5py refuses these bytes, the reader returned values"
    assert _same(got, want), "the reader returned values that differ from h5py's"
    return "same"


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_reads_as_h5py_reads_it(tmp_path, s3_server, name):
    """Each layout, written by h5py: bit-equal to h5py, locally and over S3."""
    libver, kw, write = LAYOUTS[name]
    folder = str(tmp_path / "s")
    path = write_session(folder, libver, kw, write)
    want = theirs(path)
    assert want is not None
    assert _same(ours(folder), want), name
    prefix = f"matrix/layout{next(_names)}"
    s3_server.upload(folder, prefix)
    assert _same(ours(s3_server.url(prefix), s3_server.storage_options()), want), name
    if write is _unwritten and kw.get("fill_time") != "never":  # the fill value, not zeros
        fill = np.float32(kw.get("fillvalue", 0))
        assert _same(want[200:300, :2], np.full((100, 2), fill, want.dtype))


# ---- damage ------------------------------------------------------------------------------

#: the files damaged below: gzip and raw with several B-tree levels, and Fletcher32
DAMAGE_BASES = {
    "gzip": dict(dtype="f4", chunks=(10, 1), compression="gzip"),
    "raw": dict(dtype="f4", chunks=(10, 1)),
    "fletcher32": dict(dtype="f4", chunks=(10, 1), fletcher32=True, compression="gzip"),
}


def _tree(path: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]]:
    """Byte ranges of the data's B-tree: node headers and child pointers, keys, and the object
    header (v1: 16 bytes of prefix and its messages)."""
    raw = _bytes(path)
    with h5py.File(path, "r") as f:
        ds = f[DATA]
        index = chunkindex.chunk_index(
            ds, lambda a, b: [raw[s:e] for s, e in zip(a, b, strict=True)])
        head = chunkindex._header_address(ds)
    key_len = 8 + 8 * 3
    nodes, keys, todo = [], [], [index.root]
    while todo:
        addr = todo.pop()
        level, used = raw[addr + 5], struct.unpack_from("<H", raw, addr + 6)[0]
        nodes.append((addr, addr + 24))
        for i in range(used + 1):
            k = addr + 24 + i * (key_len + 8)
            keys.append((k, k + key_len))
            if i < used:
                nodes.append((k + key_len, k + key_len + 8))
                if level:
                    todo.append(struct.unpack_from("<Q", raw, k + key_len)[0])
    assert len(keys) > 64, "the tree should have more than one level"
    size = struct.unpack_from("<I", raw, head + 8)[0]
    return nodes, keys, [(head, head + 16 + size)]


def _bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _chunks(path: str) -> list[tuple[int, int]]:
    with h5py.File(path, "r") as f:
        ds = f[DATA]
        infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    return [(i.byte_offset, i.byte_offset + i.size) for i in infos]


class _Bases(dict):
    """``{base: (file bytes, {object kind: byte ranges})}``, short in hypothesis's reports."""

    def __repr__(self) -> str:
        return f"<damage bases {sorted(self)}>"


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> _Bases:
    """Each damage base as bytes, with the byte ranges of each kind of object in it."""
    out = _Bases()
    for name, kw in DAMAGE_BASES.items():
        folder = str(tmp_path_factory.mktemp(name))
        path = write_session(folder, "earliest", kw)
        nodes, keys, header = _tree(path)
        chunk = {"gzip": "compressed chunk", "raw": "uncompressed chunk",
                 "fletcher32": "fletcher32 chunk"}[name]
        objects = {chunk: _chunks(path), "B-tree node": nodes, "B-tree key": keys,
                   "object header": header}
        out[name] = (_bytes(path), objects)
    return out


CASES = [(base, obj) for base in DAMAGE_BASES
         for obj in ("chunk", "B-tree node", "B-tree key", "object header")]
DAMAGE = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])


def _damaged(tmp_path, base: bytes, spans, pick: int, at: float, xor: int | None) -> str:
    """A copy of ``base`` with one byte flipped (``xor``) or the file cut (``xor=None``) at a
    place inside one of ``spans``; the session folder back."""
    start, stop = spans[pick % len(spans)]
    where = start + int(at * (stop - start - 1))
    raw = bytearray(base)
    if xor is None:
        raw = raw[:where]
    else:
        raw[where] ^= xor
    folder = str(tmp_path / f"d{next(_names)}")
    os.makedirs(folder)
    with h5py.File(os.path.join(folder, f"session_{SID}.nwb"), "w"):
        pass
    with open(os.path.join(folder, f"probe_{PID}_lfp.nwb"), "wb") as fh:
        fh.write(bytes(raw))
    return folder


@pytest.mark.parametrize("base,obj", CASES, ids=[f"{b}-{o}" for b, o in CASES])
@pytest.mark.parametrize("kind", ["flip", "truncate"])
@DAMAGE
@given(pick=st.integers(0, 10_000), at=st.floats(0, 1), xor=st.integers(1, 255))
def test_damage_gives_h5py_values_or_a_named_error(tmp_path, bases, base, obj, kind, pick, at,
                                                   xor):
    raw, objects = bases[base]
    key = next(k for k in objects if k.endswith("chunk")) if obj == "chunk" else obj
    folder = _damaged(tmp_path, raw, objects[key], pick, at, xor if kind == "flip" else None)
    outcome = assert_same_or_named(folder, os.path.join(folder, f"probe_{PID}_lfp.nwb"))
    if kind == "truncate":
        assert outcome == "named"


def test_the_issue_cases_are_named_errors(tmp_path, bases):
    """The cases the issue found: a chunk origin off the grid (h5py: "bad coordinate offset"),
    a filter mask that does not fit, a bad B-tree signature, a Fletcher32 mismatch; each an
    InvalidFileError naming the file."""
    raw, objects = bases["gzip"]
    leaf_keys = objects["B-tree key"]
    cases = {}
    k0 = leaf_keys[-3][0]  # a key of the last leaf visited: a chunk's
    origin = bytearray(raw)
    struct.pack_into("<Q", origin, k0 + 8, struct.unpack_from("<Q", raw, k0 + 8)[0] + 3)
    cases["origin"] = origin
    mask = bytearray(raw)
    struct.pack_into("<I", mask, k0 + 4, 0x1)
    cases["mask"] = mask
    sig = bytearray(raw)
    sig[objects["B-tree node"][0][0]] ^= 0x20
    cases["signature"] = sig
    f32, f32_objects = bases["fletcher32"]
    flipped = bytearray(f32)
    start, stop = f32_objects["fletcher32 chunk"][5]
    flipped[start + (stop - start) // 2] ^= 0x01
    cases["fletcher32"] = flipped
    for name, data in cases.items():
        folder = str(tmp_path / name)
        os.makedirs(folder)
        with h5py.File(os.path.join(folder, f"session_{SID}.nwb"), "w"):
            pass
        with open(os.path.join(folder, f"probe_{PID}_lfp.nwb"), "wb") as fh:
            fh.write(bytes(data))
        with pytest.raises(InvalidFileError) as err:
            ours(folder)
        assert f"probe_{PID}_lfp.nwb" in str(err.value), name
        assert "re-copy" in str(err.value).lower(), name


def test_damage_over_s3_is_named_as_well(tmp_path, s3_server, bases):
    """Over S3 the same bytes give the same answer: one case of each kind of object (the
    B-tree and header of the gzip file, the chunk of each file)."""
    for base, obj in [(b, o) for b, o in CASES if b == "gzip" or o == "chunk"]:
        raw, objects = bases[base]
        key = next(k for k in objects if k.endswith("chunk")) if obj == "chunk" else obj
        for xor in (0x01, None) if obj == "B-tree key" else (0x01,):  # None: cut there
            folder = _damaged(tmp_path, raw, objects[key], 1, 0.5, xor)
            prefix = f"matrix/damage{next(_names)}"
            s3_server.upload(folder, prefix)
            local = assert_same_or_named(folder, os.path.join(folder, f"probe_{PID}_lfp.nwb"))
            remote = assert_same_or_named(folder, os.path.join(folder, f"probe_{PID}_lfp.nwb"),
                                          s3_server.storage_options(), s3_server.url(prefix))
            assert local == remote, (base, obj, xor)
