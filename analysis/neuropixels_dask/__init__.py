"""neuropixels_dask: the Allen Visual Coding – Neuropixels cache as lazy, parallel Dask objects.

>>> import neuropixels_dask as npd                                  # doctest: +SKIP
>>> cache = npd.open_cache()                       # the public bucket, anonymous
>>> session = cache.get_session_data(715093703)
>>> lfp = session.get_lfp(session.probes.index[0])  # xarray (time, channel), nothing read yet

Importing the package registers its Dask config defaults (``neuropixels_dask.yaml`` plus
``NEUROPIXELS_DASK__*`` variables) and nothing else: the public names below are loaded on first
use (PEP 562), so ``python -m neuropixels_dask.local.s3server`` or a hub process that only needs
a submodule never pays for the science stack, and no S3 server, web framework, JupyterHub or
plotting library is ever imported by ``import neuropixels_dask`` (``tests/test_import.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import config  # noqa: F401 - registers the Dask config defaults

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "open_cache": "catalog", "EcephysProjectCache": "catalog",
    "EcephysSession": "session",
    "get_client": "cluster",
    "map_sessions": "tasks.sessions", "SessionResults": "tasks.sessions",
    **{name: "errors" for name in (
        "AccessDeniedError", "CacheNotFoundError", "EndpointUnreachableError", "InvalidFileError",
        "InvalidSelectionError", "NeuropixelsDaskError", "NoLFPError", "StoreUnavailableError",
        "UnknownProbeError", "UnknownSessionError", "UnknownUnitError")},
}
_SUBMODULES = ("analyses", "kernels", "plots", "readers", "storage", "tasks")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import analyses, kernels, plots, readers, storage, tasks  # noqa: F401
    from .catalog import EcephysProjectCache, open_cache  # noqa: F401
    from .cluster import get_client  # noqa: F401
    from .session import EcephysSession  # noqa: F401
    from .tasks.sessions import SessionResults, map_sessions  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'neuropixels_dask' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
