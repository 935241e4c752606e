"""neuropixels_dask: the Allen Visual Coding – Neuropixels cache as lazy, parallel Dask objects.

>>> import neuropixels_dask as npd                                  # doctest: +SKIP
>>> cache = npd.open_cache()                       # the public bucket, anonymous
>>> session = cache.get_session_data(715093703)
>>> lfp = session.get_lfp(session.probes.index[0])  # xarray (time, channel), nothing read yet
"""

from __future__ import annotations

from . import analyses, config  # noqa: F401 - config registers the Dask config defaults
from .analyses import map_sessions
from .catalog import EcephysProjectCache, open_cache
from .cluster import get_client
from .errors import (
    AccessDeniedError,
    CacheNotFoundError,
    EndpointUnreachableError,
    InvalidFileError,
    InvalidSelectionError,
    NeuropixelsDaskError,
    NoLFPError,
    UnknownProbeError,
    UnknownSessionError,
    UnknownUnitError,
)
from .session import EcephysSession

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError", "CacheNotFoundError", "EcephysProjectCache", "EcephysSession",
    "EndpointUnreachableError", "InvalidFileError", "InvalidSelectionError",
    "NeuropixelsDaskError", "NoLFPError", "UnknownProbeError", "UnknownSessionError",
    "UnknownUnitError", "analyses", "get_client", "map_sessions", "open_cache",
]
