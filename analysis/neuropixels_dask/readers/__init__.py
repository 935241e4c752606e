"""Storage formats behind one interface, registered by name (as xarray registers its backends).

A format is a module that provides ``open_session_reader(session_url, session_id,
storage_options)`` (a :class:`SessionReader`) and the data reads that run inside Dask tasks:
``read_lfp_block(src, i0, i1, cols)``, ``read_timestamps(src, i0, i1)``,
``read_spike_ranges(src, ranges)``. Sources (:class:`LFPSource`, :class:`SpikeSource`) name their
format, and :func:`backend` finds its module; an unknown format is an error, never a guess.

A cache says which format it holds in its ``manifest.json``: the key of :data:`BACKENDS` entries
is looked up there in order (a converted copy keeps the published ``session_nwb`` entry and adds
``session_zarr``, so Zarr is asked first).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType

from ..errors import InvalidFileError
from .base import LFPSource, SessionReader, SpikeSource

__all__ = ["BACKENDS", "Backend", "LFPSource", "SessionReader", "SpikeSource", "backend",
           "clear_caches", "format_of_manifest", "open_session_reader", "read_lfp_block", "read_spike_ranges",
           "read_spikes", "read_timestamps", "register"]


@dataclass(frozen=True)
class Backend:
    """A registered format: its module (imported on first use) and its manifest entry."""

    name: str
    module: str
    manifest_key: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


#: registered formats, in the order a cache's manifest is matched against them
BACKENDS: dict[str, Backend] = {}


def register(name: str, module: str, manifest_key: str) -> None:
    """Register a storage format (``module`` is imported when the format is first used)."""
    BACKENDS[name] = Backend(name, module, manifest_key)


register("zarr", "neuropixels_dask.readers.zarr", manifest_key="session_zarr")
register("nwb", "neuropixels_dask.readers.nwb", manifest_key="session_nwb")


def backend(fmt: str) -> ModuleType:
    """The module of format ``fmt``; an unknown format is an ``InvalidFileError``."""
    try:
        entry = BACKENDS[fmt]
    except KeyError:
        raise InvalidFileError(
            f"Unknown storage format {fmt!r}; this neuropixels-dask reads {sorted(BACKENDS)}. "
            "Upgrade the package if the cache was written by a newer one.") from None
    return entry.load()


def format_of_manifest(manifest: dict, url: str) -> str:
    """The format a cache's ``manifest.json`` announces (first matching :data:`BACKENDS`)."""
    keys = {e.get("key") for e in manifest.get("manifest", []) if isinstance(e, dict)}
    for entry in BACKENDS.values():
        if entry.manifest_key in keys:
            return entry.name
    wanted = ", ".join(repr(b.manifest_key) for b in BACKENDS.values())
    raise InvalidFileError(
        f"{url}/manifest.json lists no session files (no entry with key {wanted}). It is not "
        "an ecephys cache manifest, or a damaged one: re-copy it from the source cache.")


def open_session_reader(cache, session_id: int) -> SessionReader:
    """The reader for ``session_id`` of ``cache``, of the format the cache holds."""
    return backend(cache.format).open_session_reader(cache.session_url(session_id), session_id,
                                                     cache.storage_options)


def read_lfp_block(src: LFPSource, i0: int, i1: int, cols):
    """LFP samples ``[i0, i1)`` of columns ``cols`` (runs inside Dask tasks)."""
    return backend(src.format).read_lfp_block(src, i0, i1, cols)


def read_timestamps(src: LFPSource, i0: int, i1: int):
    return backend(src.format).read_timestamps(src, i0, i1)


def read_spike_ranges(src: SpikeSource, ranges: list[tuple[int, int]]):
    """Spike times of several units in one batch (``[(start, stop), …]`` of the flat array)."""
    return backend(src.format).read_spike_ranges(src, ranges)


def clear_caches() -> None:
    """Forget what the loaded formats keep per process (after a store was rewritten here)."""
    for entry in BACKENDS.values():
        module = sys.modules.get(entry.module)
        if module is not None and hasattr(module, "clear_caches"):
            module.clear_caches()


def read_spikes(src: SpikeSource, start: int, stop: int):
    """Flat spike times ``[start, stop)``."""
    return read_spike_ranges(src, [(start, stop)])[0]
