"""Byte ranges and whole objects, in concurrent batches: the one place that fetches data.

HDF5 chunks and B-tree nodes, spike slices, Zarr shards and Zarr spike chunks all arrive here,
so how ranges become requests is decided once, for every format.
"""

from __future__ import annotations

import fsspec


def fetch(fs: fsspec.AbstractFileSystem, path: str, starts: list[int], stops: list[int]
          ) -> list[bytes]:
    """Bytes ``[start, stop)`` of one object for every pair, concurrently."""
    return fetch_many(fs, [path] * len(starts), starts, stops)


def fetch_many(fs: fsspec.AbstractFileSystem, paths: list[str], starts: list[int],
               stops: list[int]) -> list[bytes]:
    """Bytes ``[start, stop)`` of ``paths[i]`` for every ``i`` (objects of one store),
    concurrently."""
    if not paths:
        return []
    # on_error="raise": fsspec's default ("return") puts a failed range's exception in the list
    # where the bytes should be
    return fs.cat_ranges(list(paths), list(starts), list(stops), on_error="raise")


def fetch_objects(fs: fsspec.AbstractFileSystem, paths: list[str], missing_ok: bool = False
                  ) -> list[bytes | None]:
    """Whole objects, concurrently; a missing one is ``None`` when ``missing_ok``, else
    ``FileNotFoundError`` naming it."""
    if not paths:
        return []
    blobs = fs.cat(list(paths), on_error="omit" if missing_ok else "raise")
    if not isinstance(blobs, dict):  # one path: fsspec returns its bytes
        blobs = {paths[0]: blobs}
    return [blobs.get(p) for p in paths]
