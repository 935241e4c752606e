"""The one rule for where a graph runs, shared by every task-running function of the package.

1. A client passed explicitly wins.
2. A local scheduler chosen through Dask's config (``dask.config.set(scheduler="threads")``,
   ``"processes"``, ``"sync"``) wins over an ambient distributed client: that is how Dask itself
   decides, so ``.compute()``, ``map_sessions`` and ``convert`` agree.
3. Else the current distributed client, if there is one.
4. Else ``None``: Dask's default scheduler for the collection.

Creating a cluster is a different job (:func:`neuropixels_dask.get_client`); nothing here starts
one.
"""

from __future__ import annotations

from typing import Any

import dask.config

#: values of Dask's ``scheduler`` config that mean "the distributed client"
DISTRIBUTED = (None, "dask.distributed", "distributed")


def current_client(client: Any = None) -> Any:
    """The distributed client to run on, or ``None`` for Dask's local schedulers (see above)."""
    if client is not None:
        return client
    if dask.config.get("scheduler", None) not in DISTRIBUTED:
        return None
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None
