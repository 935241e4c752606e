"""``map_sessions``: run a per-session analysis over many sessions in parallel, keep what worked.

Each session's function runs on the client (it only opens metadata and builds a lazy graph); all
graphs are then computed together where the client rule says (``tasks.client``: an explicit
client, else a local scheduler chosen in Dask's config, else the current distributed client), so
reads from every session overlap. A session
that fails (missing file, bad data, a worker lost too often) is reported with its error and does not
take the others down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dask
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class SessionResults:
    """What ``map_sessions`` returns: the combined result and the failures, by session id."""

    result: Any
    per_session: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"SessionResults({len(self.per_session)} sessions ok, {len(self.failed)} failed"
                + (f": {self.failed}" if self.failed else "") + ")")


def _combine(results: dict[int, Any]) -> Any:
    if not results:
        return None
    values = list(results.values())
    ids = list(results)
    if all(isinstance(v, xr.DataArray | xr.Dataset) for v in values):
        return xr.concat(values, dim=pd.Index(ids, name="session_id"), coords="minimal",
                         compat="override", join="outer")
    if all(isinstance(v, pd.DataFrame | pd.Series) for v in values):
        return pd.concat(values, keys=ids, names=["session_id"])
    return results


def map_sessions(func: Callable[..., Any], session_ids: Iterable[int], cache=None, *,
                 client=None, retries: int = 2, progress: bool = True,
                 **kwargs: Any) -> SessionResults:
    """Apply ``func(session, **kwargs)`` to every session and compute all results in parallel.

    ``func`` receives an opened :class:`EcephysSession` and returns a lazy or eager xarray or
    pandas object (or anything Dask can compute). Results are concatenated along a new
    ``session_id`` dimension / index level. Tasks are retried ``retries`` times (e.g. after a
    worker is lost); sessions that still fail are listed in ``.failed`` with the reason.
    """
    from ..catalog import open_cache
    from .client import current_client

    cache = cache or open_cache()
    session_ids = [int(s) for s in session_ids]
    failed: dict[int, str] = {}
    lazy: dict[int, Any] = {}
    for sid in tqdm(session_ids, desc="opening sessions", disable=not progress, unit="session"):
        try:
            lazy[sid] = func(cache.get_session_data(sid), **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported per session, the others go on
            failed[sid] = f"{type(exc).__name__}: {exc}"
            log.warning("session %s failed while building its graph: %s", sid, exc)

    done: dict[int, Any] = {}
    client = current_client(client)
    if client is not None:
        from distributed import as_completed

        futures = {client.compute(obj, retries=retries): sid for sid, obj in lazy.items()}
        bar = tqdm(total=len(futures), desc="computing", disable=not progress, unit="session")
        for fut in as_completed(futures):
            sid = futures[fut]
            try:
                done[sid] = fut.result()
            except Exception as exc:  # noqa: BLE001
                failed[sid] = f"{type(exc).__name__}: {exc}"
            bar.update()
        bar.close()
    else:
        for sid, obj in tqdm(lazy.items(), desc="computing", disable=not progress,
                             unit="session"):
            try:
                (done[sid],) = dask.compute(obj)
            except Exception as exc:  # noqa: BLE001
                failed[sid] = f"{type(exc).__name__}: {exc}"
    ordered = {sid: done[sid] for sid in session_ids if sid in done}
    return SessionResults(_combine(ordered), ordered, failed)
