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
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import h5py

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


class ChunkIndex:
    """The chunk B-tree of one dataset, read lazily and level by level with ``fetch``."""

    def __init__(self, root: int, ndims: int, fetch: Fetch, read: Read | None = None) -> None:
        self.root = root
        self.ndims = ndims  # the dataset's rank (keys carry one more, always 0)
        self._fetch = fetch
        self._read = read
        self._nodes: dict[int, _Node] = {}
        self._lock = threading.Lock()

    def lookup(self, coords: Iterable[tuple[int, ...]]) -> dict[tuple[int, ...], ChunkInfo | None]:
        """``{chunk origin (element coordinates): ChunkInfo or None if never written}``."""
        wanted = sorted({tuple(int(v) for v in c) for c in coords})
        found: dict[tuple[int, ...], ChunkInfo | None] = dict.fromkeys(wanted)
        level = [(self.root, wanted)]
        while level:
            nodes = self._nodes_at([addr for addr, _ in level])
            below: dict[int, list[tuple[int, ...]]] = {}
            for (_addr, want), node in zip(level, nodes, strict=True):
                for i, child in enumerate(node.children):
                    lo = node.keys[i].origin
                    hi = node.keys[i + 1].origin if i + 1 < len(node.keys) else None
                    if node.level == 0:
                        if lo in found:
                            k = node.keys[i]
                            found[lo] = ChunkInfo(child, k.size, k.filter_mask)
                        continue
                    inside = [c for c in want if c >= lo and (hi is None or c <= hi)]
                    if inside:
                        below.setdefault(child, []).extend(inside)
            level = list(below.items())
        return found

    def _nodes_at(self, addrs: list[int]) -> list[_Node]:
        with self._lock:
            missing = sorted({a for a in addrs if a not in self._nodes})
        if missing:
            if missing == [self.root] and self._read is not None:
                # the root: through the block cache, where h5py often has it already (it is
                # written next to the dataset's header); other nodes lie far from anything h5py
                # read, and a block would fetch 8× a node's bytes
                blobs = [self._read(self.root, self.root + NODE_FETCH)]
            else:
                blobs = self._fetch(missing, [a + NODE_FETCH for a in missing])
            parsed = {a: _parse_node(b, self.ndims) for a, b in zip(missing, blobs, strict=True)}
            with self._lock:
                self._nodes.update(parsed)
        return [self._nodes[a] for a in addrs]


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


def _parse_node(buf: bytes, ndims: int) -> _Node:
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
    return _Node(level, keys, children)


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
            return ChunkIndex(root, rank, fetch, read)
    except (FormatNotHandled, struct.error, IndexError, ValueError):
        return None
    return None
