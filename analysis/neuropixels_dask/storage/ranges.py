"""Many byte ranges of one object in one concurrent batch: the one place that fetches ranges.

HDF5 chunks, B-tree nodes, spike slices and Zarr shard pieces all arrive here, so how ranges are
turned into requests is decided once.
"""

from __future__ import annotations

import fsspec


def fetch(fs: fsspec.AbstractFileSystem, path: str, starts: list[int], stops: list[int]
          ) -> list[bytes]:
    """``[fs.cat_file(path, a, b) for a, b in zip(starts, stops)]``, concurrently."""
    if not starts:
        return []
    # on_error="raise": fsspec's default ("return") puts a failed range's exception in the list
    # where the bytes should be
    return fs.cat_ranges([path] * len(starts), list(starts), list(stops), on_error="raise")
