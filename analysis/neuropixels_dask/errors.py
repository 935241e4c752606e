"""Exceptions in the user's words.

Every error names what was wrong and what to do; none leaks a bare ``KeyError``/``OSError`` from h5py
or botocore. They subclass the builtin a caller would naturally catch (``KeyError``, ``OSError``,
``ValueError``) so existing ``except`` clauses keep working.
"""

from __future__ import annotations


class NeuropixelsDaskError(Exception):
    """Base class of every error raised on purpose by this package."""


class CacheNotFoundError(NeuropixelsDaskError, FileNotFoundError):
    """The cache URL holds no ``manifest.json`` / tables, or the bucket does not exist."""


class AccessDeniedError(NeuropixelsDaskError, PermissionError):
    """The object store refused our credentials."""


class EndpointUnreachableError(NeuropixelsDaskError, ConnectionError):
    """The object store could not be reached at all."""


class StoreUnavailableError(NeuropixelsDaskError, OSError):
    """The object store kept failing transiently (503 SlowDown, 500, bodies cut short) after
    every retry."""


class UnknownSessionError(NeuropixelsDaskError, KeyError):
    """A session id that the cache does not list."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0]) if self.args else ""


class UnknownProbeError(UnknownSessionError):
    """A probe id that the session does not have."""


class UnknownUnitError(UnknownSessionError):
    """A unit id that the session does not have."""


class NoLFPError(NeuropixelsDaskError, LookupError, ValueError):
    """The probe has no LFP file (a few real probes have none). Also a ``ValueError``: AllenSDK's
    own data-access tutorial catches that for a missing LFP file."""


class LFPMissingAtConversionError(NoLFPError):
    """A Zarr copy has no LFP for a probe whose LFP file the source cache should have had
    (``has_lfp_data``) but lacked when ``convert`` ran: the copy is incomplete, not the probe."""


class InvalidURLError(NeuropixelsDaskError, ValueError):
    """A cache or store URL that names nothing we can read: empty, or an unknown protocol."""


class InvalidFileError(NeuropixelsDaskError, OSError):
    """A file that is truncated, not NWB/HDF5, or misses groups the Allen layout has."""


class InvalidSelectionError(NeuropixelsDaskError, ValueError):
    """A time range, channel list or bin specification that cannot be honoured."""


class DamagedStoreError(InvalidFileError):
    """An object of a Zarr copy is missing, truncated or fails its checksum: the copy must be
    rewritten (``neuropixels-dask convert`` rewrites only the damaged blocks)."""


class UnverifiedStoreWarning(UserWarning):
    """A Zarr copy written before metadata checksums (format 2, no manifest): its metadata
    documents are read as they are; reconvert it to get them checked."""


class ClusterLostError(NeuropixelsDaskError, ConnectionError):
    """The Dask cluster (its scheduler) went away while a computation was running."""


class WorkerMemoryError(NeuropixelsDaskError, MemoryError):
    """Workers kept dying while running a task: most likely it needs more memory than a worker
    has (``worker_memory``)."""
