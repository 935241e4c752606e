"""Where a chunked HDF5 dataset keeps its chunks, found with a few concurrent ranged reads.

Why: h5py finds a chunk by walking the dataset's chunk index (a version-1 B-tree) one node at a
time. Each node it has not seen is a separate small read, and in a long, incrementally written
recording the nodes lie megabytes apart: the first 1 s window of the benchmark's 846 MB LFP file
cost ~75 serial requests (≈ 2.6 s at 35 ms each) before a single data byte was fetched.

Here the tree is read breadth-first instead: the dataset's object header gives the root, and each
level is fetched in one concurrent batch of ranged GETs, descending only into the children whose
key range holds a wanted chunk. A window then costs one round trip per tree level (2–3), and the
nodes are kept per process, so later windows of the same file reuse them.

Only what this needs of the HDF5 format is parsed (object header v1/v2 with continuations, data
layout message v3, v1 B-tree nodes of type 1, 8-byte offsets). Anything else (a v4 layout with
another chunk index, other offset sizes, a signature that does not match) returns ``None`` and
the caller falls back to h5py's own lookup, so the worst case is the old speed, never a wrong
answer. tests/test_chunkindex.py checks every chunk against h5py.

What is read is checked before it is believed, so that damage is an error and never a chunk at
the wrong place: a chunk's origin must lie on the chunk grid and inside the dataset, the keys of
a node must increase strictly, a child must sit one level below its parent and start at the key
that led to it, chunk sizes must fit the filters (an unfiltered chunk is exactly one chunk of
bytes), a filter mask may only name filters the dataset has, and the stored chunks of a node must
not overlap in the file. Anything else raises :class:`DamagedIndex`, which the reader reports as
an ``InvalidFileError`` naming the file (h5py refuses the same files with "bad coordinate
offset" and the like).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import h5py
import numpy as np

#: bytes fetched per B-tree node: enough for 2K = 64 entries of a 3-D chunk key (the default)
NODE_FETCH = 8192
#: bytes fetched for an object header chunk (the layout message is near its start)
HEADER_FETCH = 4096
_LAYOUT, _CONTINUATION = 0x08, 0x10

Fetch = Callable[[list[int], list[int]], list[bytes]]
#: ``read(start, stop)``: one range through the open file's metadata block cache (no request
#: when h5py has already read that block; one block otherwise)
Read = Callable[[int, int], bytes]


@dataclass(frozen=True)
class ChunkInfo:
    """One stored chunk: where it is, how long, which filters were skipped."""

    offset: int
    size: int
    filter_mask: int


@dataclass(frozen=True)
class Geometry:
    """What a chunk key is checked against: the dataset's shape and chunk shape, how many
    filters its pipeline has, the bytes of one unfiltered chunk, and the file's size."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    nfilters: int
    chunk_bytes: int
    eof: int


class DamagedIndex(Exception):
    """The chunk index contradicts itself or the dataset: the file is damaged (the reader
    turns this into an ``InvalidFileError`` naming the file)."""


class ChunkIndex:
    """The chunk B-tree of one dataset, read lazily and level by level with ``fetch``."""

    def __init__(self, root: int, ndims: int, fetch: Fetch, read: Read | None = None,
                 geometry: Geometry | None = None) -> None:
        self.root = root
        self.ndims = ndims  # the dataset's rank (keys carry one more, always 0)
        self.geometry = geometry  # None: keys are not checked against the dataset
        self._fetch = fetch
        self._read = read
        self._nodes: dict[int, _Node] = {}
        #: nodes being fetched right now, and the event their waiters wait for
        self._pending: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def lookup(self, coords: Iterable[tuple[int, ...]]) -> dict[tuple[int, ...], ChunkInfo | None]:
        """``{chunk origin (element coordinates): ChunkInfo or None if never written}``."""
        wanted = sorted({tuple(int(v) for v in c) for c in coords})
        found: dict[tuple[int, ...], ChunkInfo | None] = dict.fromkeys(wanted)
        if self.root == _UNDEFINED:  # no chunk written yet: the tree was never made
            return found
        if self.geometry is not None and not 0 < self.root < self.geometry.eof:
            raise DamagedIndex(f"the chunk index's root address {self.root} lies outside the "
                               f"file ({self.geometry.eof} bytes)")
        # (node address, wanted coordinates, (level, first key, last key) the parent expects)
        level: list[tuple[int, list, tuple | None]] = [(self.root, wanted, None)]
        while level:
            nodes = self._nodes_at([addr for addr, _, _ in level])
            below: dict[int, tuple[list[tuple[int, ...]], tuple]] = {}
            for (addr, want, expect), node in zip(level, nodes, strict=True):
                if expect is not None and (node.level, node.keys[0].origin,
                                           node.keys[-1].origin) != expect:
                    raise DamagedIndex(
                        f"B-tree node at byte {addr} (level {node.level}, keys "
                        f"{node.keys[0].origin}…{node.keys[-1].origin}) does not match the "
                        f"entry that points to it (level {expect[0]}, keys {expect[1]}…"
                        f"{expect[2]})")
                for i, child in enumerate(node.children):
                    lo = node.keys[i].origin
                    hi = node.keys[i + 1].origin
                    if node.level == 0:
                        if lo in found:
                            k = node.keys[i]
                            found[lo] = ChunkInfo(child, k.size, k.filter_mask)
                        continue
                    inside = [c for c in want if lo <= c <= hi]
                    if inside:
                        entry = below.setdefault(child, ([], (node.level - 1, lo, hi)))
                        entry[0].extend(inside)
            level = [(a, w, e) for a, (w, e) in below.items()]
        return found

    def _nodes_at(self, addrs: list[int]) -> list[_Node]:
        """The nodes at ``addrs``, each fetched once per index however many threads ask at the
        same time (tasks of one worker share the index): a thread needing a node another is
        fetching waits for it, so the reads an analysis makes do not depend on timing."""
        while True:
            with self._lock:
                missing = sorted({a for a in addrs if a not in self._nodes})
                waiting = {id(e): e for a in missing if (e := self._pending.get(a))}
                mine = [a for a in missing if a not in self._pending]
                done = threading.Event()
                self._pending.update(dict.fromkeys(mine, done))
            if mine:
                try:
                    self._load(mine)
                finally:
                    with self._lock:
                        for a in mine:
                            self._pending.pop(a, None)
                    done.set()
            if not waiting:
                break
            for event in waiting.values():
                event.wait()  # then look again: a failed fetch is retried by this thread
        return [self._nodes[a] for a in addrs]

    def _load(self, missing: list[int]) -> None:
        if missing == [self.root] and self._read is not None:
            # the root: through the block cache, where h5py often has it already (it is
            # written next to the dataset's header); other nodes lie far from anything h5py
            # read, and a block would fetch 8× a node's bytes
            blobs = [self._read(self.root, self.root + NODE_FETCH)]
        else:
            blobs = self._fetch(missing, [a + NODE_FETCH for a in missing])
        parsed = {a: _parse_node(b, self.ndims, a, self.geometry)
                  for a, b in zip(missing, blobs, strict=True)}
        with self._lock:
            self._nodes.update(parsed)


@dataclass(frozen=True)
class _Key:
    size: int
    filter_mask: int
    origin: tuple[int, ...]


@dataclass(frozen=True)
class _Node:
    level: int
    keys: list[_Key]
    children: list[int]


class FormatNotHandled(Exception):
    """The file uses a part of the HDF5 format this module does not read (caller falls back)."""


def _parse_node(buf: bytes, ndims: int, addr: int = 0, geometry: Geometry | None = None
                ) -> _Node:
    if buf[:4] != b"TREE" or buf[4] != 1:
        raise FormatNotHandled("not a v1 B-tree node of raw data chunks")
    level, used = buf[5], struct.unpack_from("<H", buf, 6)[0]
    pos = 24  # signature 4, type 1, level 1, entries 2, left and right siblings 8 + 8
    key_len = 8 + 8 * (ndims + 1)
    if pos + used * (key_len + 8) + key_len > len(buf):
        raise FormatNotHandled("B-tree node larger than fetched")
    keys, children = [], []
    for i in range(used + 1):
        size, mask = struct.unpack_from("<II", buf, pos)
        origin = struct.unpack_from(f"<{ndims + 1}Q", buf, pos + 8)[:ndims]
        keys.append(_Key(size, mask, tuple(origin)))
        pos += key_len
        if i < used:
            children.append(struct.unpack_from("<Q", buf, pos)[0])
            pos += 8
    node = _Node(level, keys, children)
    if geometry is not None:
        _check_node(node, buf, ndims, addr, geometry)
    return node


#: an HDF5 address that was never assigned
_UNDEFINED = (1 << 64) - 1


def _check_node(node: _Node, buf: bytes, ndims: int, addr: int, g: Geometry) -> None:
    """Raise :class:`DamagedIndex` where ``node`` contradicts itself or the dataset."""
    def bad(why: str) -> DamagedIndex:
        return DamagedIndex(f"B-tree node at byte {addr}: {why}")

    key_len = 8 + 8 * (ndims + 1)
    if not node.children:
        raise bad("no entries")
    # keys with their element offset: 0 for a chunk, the element size for a last key that
    # may repeat the last chunk's origin
    origins = [k.origin + struct.unpack_from("<Q", buf, 24 + i * (key_len + 8) + 8 + 8 * ndims)
               for i, k in enumerate(node.keys)]
    itemsize = g.chunk_bytes // max(1, int(np.prod(g.chunks)))
    for i, origin in enumerate(origins):  # every key on the grid, as HDF5 decodes them
        if any(o % c for o, c in zip(origin, (*g.chunks, itemsize), strict=True)):
            raise bad(f"key {i} {origin} is not on the chunk grid {g.chunks} (bad coordinate "
                      "offset)")
        if i < len(node.children) and origin[-1]:
            raise bad(f"key {i} has a non-zero element offset")
    for i in range(1, len(origins)):
        if not origins[i - 1] < origins[i]:
            raise bad(f"keys {origins[i - 1]} and {origins[i]} are not in increasing order "
                      "(two chunks overlap, or a key was damaged)")
    if node.level:
        for child in node.children:
            if not 0 < child < g.eof:
                raise bad(f"a child node's address {child} lies outside the file ({g.eof} "
                          "bytes)")
        return
    spans = []
    for k, child in zip(node.keys, node.children, strict=False):
        if any(o >= n for o, n in zip(k.origin, g.shape, strict=True)):
            raise bad(f"chunk origin {k.origin} lies outside the dataset's shape {g.shape}")
        if k.filter_mask >> g.nfilters:
            raise bad(f"chunk {k.origin} has filter mask {k.filter_mask:#x}, but the dataset "
                      f"has {g.nfilters} filter(s)")
        if k.size == 0 or (g.nfilters == 0 and k.size != g.chunk_bytes):
            raise bad(f"chunk {k.origin} is stored in {k.size} bytes; an unfiltered chunk "
                      f"is {g.chunk_bytes}" if g.nfilters == 0 else
                      f"chunk {k.origin} is stored in 0 bytes")
        if not 0 < child < child + k.size <= g.eof:
            raise bad(f"chunk {k.origin} at bytes {child}–{child + k.size} lies outside the "
                      f"file ({g.eof} bytes)")
        spans.append((child, child + k.size))
    spans.sort()
    for (a0, a1), (b0, _) in zip(spans, spans[1:], strict=False):
        if b0 < a1:
            raise bad(f"the chunks stored at bytes {a0} and {b0} overlap")


def _messages(buf: bytes, header_addr: int, fetch: Read) -> Iterable[tuple[int, bytes]]:
    """``(type, body)`` of every message in the object header at the start of ``buf``."""
    if buf[:4] == b"OHDR":  # version 2
        if buf[4] != 2:
            raise FormatNotHandled("object header version")
        flags = buf[5]
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 0x03)
        size = int.from_bytes(buf[pos:pos + width], "little")
        pos += width
        if pos + size > len(buf):  # a header larger than the first fetch
            buf = fetch(header_addr, header_addr + pos + size)
        blocks = [(buf, pos, pos + size - 4)]  # (bytes, start, end) of message space
        order = 2 if flags & 0x04 else 0
        while blocks:
            data, pos, end = blocks.pop(0)
            while pos + 4 <= end:
                mtype, msize = data[pos], struct.unpack_from("<H", data, pos + 1)[0]
                body = data[pos + 4 + order:pos + 4 + order + msize]
                pos += 4 + order + msize
                if mtype == _CONTINUATION:
                    addr, length = struct.unpack_from("<QQ", body)
                    more = fetch(addr, addr + length)
                    if more[:4] != b"OCHK":
                        raise FormatNotHandled("continuation block")
                    blocks.append((more, 4, length - 4))
                else:
                    yield mtype, body
        return
    if buf[0] != 1:
        raise FormatNotHandled("object header version")
    nmsgs, size = struct.unpack_from("<H", buf, 2)[0], struct.unpack_from("<I", buf, 8)[0]
    if 16 + size > len(buf):  # a header larger than the first fetch
        buf = fetch(header_addr, header_addr + 16 + size)
    blocks = [(buf, 16, 16 + size)]
    seen = 0
    while blocks and seen < nmsgs:
        data, pos, end = blocks.pop(0)
        while pos + 8 <= end and seen < nmsgs:
            mtype, msize = struct.unpack_from("<HH", data, pos)
            body = data[pos + 8:pos + 8 + msize]
            pos += 8 + msize
            seen += 1
            if mtype == _CONTINUATION:
                addr, length = struct.unpack_from("<QQ", body)
                more = fetch(addr, addr + length)
                blocks.append((more, 0, length))
            else:
                yield mtype, body


def _header_address(ds: h5py.Dataset) -> int:
    """The file address of ``ds``'s object header, without reading anything.

    Not ``h5py.h5o.get_info``: it also sums the metadata sizes of the object, and for a chunked
    dataset that walks the whole chunk B-tree through the file object, node by node (163 reads
    of the benchmark's LFP file, ~6 s over S3 on the first block of every worker).
    ``H5Gget_objinfo`` reports the address from the object's link alone.
    """
    try:
        low, high = h5py.h5g.get_objinfo(ds.id).objno
        if not high:  # the whole address fits the first word (64-bit longs)
            return int(low)
    except (AttributeError, TypeError, ValueError, RuntimeError):  # an HDF5 without it
        pass
    return int(h5py.h5o.get_info(ds.id).addr)


def geometry(ds: h5py.Dataset) -> Geometry:
    """The shape, chunk shape and filter count of ``ds`` (from its header, read at open)."""
    chunks = tuple(int(c) for c in ds.chunks)
    return Geometry(tuple(int(n) for n in ds.shape), chunks,
                    ds.id.get_create_plist().get_nfilters(),
                    int(np.prod(chunks)) * ds.dtype.itemsize, int(ds.file.id.get_filesize()))


def chunk_index(ds: h5py.Dataset, fetch: Fetch, read: Read | None = None) -> ChunkIndex | None:
    """The chunk index of ``ds`` read through ``fetch(starts, stops) -> [bytes]``, or ``None``
    when this module cannot read it (the caller then asks h5py chunk by chunk).

    ``read(start, stop) -> bytes``, when given, reads single ranges through the open file's
    metadata block cache: the dataset's object header (and its continuations, and often the
    tree's root) lie in blocks h5py read to open the dataset, so they cost no request.
    """
    if ds.chunks is None or ds.file.id.get_create_plist().get_sizes() != (8, 8):
        return None

    def one(start: int, stop: int) -> bytes:
        return read(start, stop) if read is not None else fetch([start], [stop])[0]

    try:
        addr = _header_address(ds)
        head = one(addr, addr + HEADER_FETCH)
        for mtype, body in _messages(head, addr, one):
            if mtype != _LAYOUT:
                continue
            if body[0] != 3 or body[1] != 2:  # layout version 3, chunked class
                return None
            rank = body[2] - 1
            (root,) = struct.unpack_from("<Q", body, 3)
            if rank != ds.ndim:
                return None
            return ChunkIndex(root, rank, fetch, read, geometry(ds))
    except (FormatNotHandled, struct.error, IndexError, ValueError):
        return None
    return None
