"""Storage formats behind one interface; ``open_session_reader`` picks one from the URL."""

from __future__ import annotations

from .base import LFPSource, SessionReader, SpikeSource

__all__ = ["LFPSource", "SessionReader", "SpikeSource", "open_session_reader", "read_lfp_block",
           "read_spike_ranges", "read_spikes", "read_timestamps"]


def read_lfp_block(src: LFPSource, i0: int, i1: int, cols):
    """Dispatch a data read to the source's format (runs inside Dask tasks)."""
    if src.format == "zarr":
        from . import zarr as fmt
    else:
        from . import nwb as fmt
    return fmt.read_lfp_block(src, i0, i1, cols)


def read_timestamps(src: LFPSource, i0: int, i1: int):
    if src.format == "zarr":
        from . import zarr as fmt
    else:
        from . import nwb as fmt
    return fmt.read_timestamps(src, i0, i1)


def read_spikes(src: SpikeSource, start: int, stop: int):
    if src.format == "zarr":
        from . import zarr as fmt
    else:
        from . import nwb as fmt
    return fmt.read_spikes(src, start, stop)


def read_spike_ranges(src: SpikeSource, ranges):
    """Spike times of several units in one batch (``[(start, stop), …]`` of the flat array)."""
    if src.format == "zarr":
        from . import zarr as fmt
    else:
        from . import nwb as fmt
    return fmt.read_spike_ranges(src, ranges)


def open_session_reader(cache, session_id: int) -> SessionReader:
    """The reader for ``session_id`` of ``cache``, chosen from what the cache holds."""
    from .. import storage

    url = cache.session_url(session_id)
    if cache.format == "zarr":
        from .zarr import ZarrSessionReader

        return ZarrSessionReader(url, session_id, cache.storage_options)
    from .nwb import NWBSessionReader, check_session_file

    check_session_file(storage.join(url, f"session_{int(session_id)}.nwb"),
                       cache.storage_options)
    return NWBSessionReader(url, session_id, cache.storage_options)
