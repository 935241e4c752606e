"""``map_sessions``: run a per-session analysis over many sessions in parallel, keep what worked.

Each session's function runs on the client (it only opens metadata and builds a lazy graph); all
graphs are then computed together where the client rule says (``tasks.client``: an explicit
client, else a local scheduler chosen in Dask's config, else the current distributed client), so
reads from every session overlap. A session that fails (missing file, bad data, workers dying
while running one of its tasks) is reported with its error in the user's words
(``cluster.explain``) and does not take the others down.

Losing the cluster does not lose what finished: when the scheduler goes away, the sessions
computed so far are returned, the others are listed in ``.unfinished`` (with a warning), and
``map_sessions(..., resume=previous)`` on a new client computes only those (and the failed
ones), returning everything together.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dask
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from ..errors import ClusterLostError

log = logging.getLogger(__name__)


@dataclass
class SessionResults:
    """What ``map_sessions`` returns: the combined result, and what did not work, by session id.

    ``failed``: sessions whose graph could not be built or whose computation raised (the
    reason, in words). ``unfinished``: sessions still computing when the cluster was lost
    (``cluster_lost`` says what happened). Pass the object as ``resume=`` to compute only those.
    """

    result: Any
    per_session: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    unfinished: list[int] = field(default_factory=list)
    cluster_lost: str | None = None

    @property
    def complete(self) -> bool:
        """Every session has its result."""
        return not self.failed and not self.unfinished

    @property
    def remaining(self) -> list[int]:
        """Sessions a rerun with ``resume=`` computes: the failed and the unfinished ones."""
        return [*self.failed, *[s for s in self.unfinished if s not in self.failed]]

    def __repr__(self) -> str:
        out = f"SessionResults({len(self.per_session)} sessions ok, {len(self.failed)} failed"
        if self.failed:
            out += f": {self.failed}"
        if self.unfinished:
            out += (f"; {len(self.unfinished)} unfinished, the cluster was lost: "
                    f"{self.unfinished}; map_sessions(..., resume=<these results>) computes "
                    "only the rest")
        return out + ")"


def _combine(results: dict[int, Any]) -> Any:
    if not results:
        return None
    values = list(results.values())
    ids = list(results)
    if all(isinstance(v, xr.DataArray | xr.Dataset) for v in values):
        # "different": a coordinate that differs between sessions (segment counts, standard
        # errors, confidence bounds) gets a session_id dimension instead of the first
        # session's values standing for all of them
        return xr.concat(values, dim=pd.Index(ids, name="session_id"), coords="different",
                         compat="equals", join="outer")
    if all(isinstance(v, pd.DataFrame | pd.Series) for v in values):
        return pd.concat(values, keys=ids, names=["session_id"])
    return results


def _reason(exc: BaseException, graph: Any = None) -> BaseException:
    from ..cluster import explain

    return explain(exc, graph)


def _on_cluster(client, lazy: dict[int, Any], retries: int, progress: bool,
                done: dict[int, Any], failed: dict[int, str]) -> tuple[list[int], str | None]:
    """Compute every session's graph on ``client``; ``(unfinished, why)`` if it was lost."""
    from distributed import as_completed

    unfinished: list[int] = []
    lost: BaseException | None = None
    try:
        futures = {client.compute(obj, retries=retries): sid for sid, obj in lazy.items()}
    except Exception as exc:  # noqa: BLE001 - a cluster gone before the first submission
        return list(lazy), str(ClusterLostError(f"The Dask cluster could not take the "
                                                f"computation ({type(exc).__name__}: {exc})."))
    bar = tqdm(total=len(futures), desc="computing", disable=not progress, unit="session")
    finished = 0
    try:
        # loop=: the given client need not be the default one
        for fut in as_completed(futures, loop=client.loop):
            sid = futures[fut]
            try:
                done[sid] = fut.result()
            except Exception as exc:  # noqa: BLE001 - reported per session
                err = _reason(exc, lazy[sid])
                if isinstance(err, ClusterLostError):
                    unfinished.append(sid)
                    lost = lost or err
                else:
                    failed[sid] = f"{type(err).__name__}: {err}"
            bar.update()
            finished += 1
            log.info("map_sessions: session %s %s (%d of %d)", sid,
                     "done" if sid in done else "not done", finished, len(futures))
    except Exception as exc:  # noqa: BLE001 - the connection itself failed mid-way?
        err = _reason(exc)
        if not isinstance(err, ClusterLostError) and client.status == "running":
            raise
        lost = lost or err
        unfinished += [s for s in lazy if s not in done and s not in failed
                       and s not in unfinished]
    finally:
        bar.close()
    return unfinished, (str(lost) if lost is not None and unfinished else None)


def map_sessions(func: Callable[..., Any], session_ids: Iterable[int], cache=None, *,
                 client=None, retries: int = 2, progress: bool = True,
                 resume: SessionResults | None = None, **kwargs: Any) -> SessionResults:
    """Apply ``func(session, **kwargs)`` to every session and compute all results in parallel.

    ``func`` receives an opened :class:`EcephysSession` and returns a lazy or eager xarray or
    pandas object (or anything Dask can compute). Results are concatenated along a new
    ``session_id`` dimension / index level. Tasks that raise are retried ``retries`` times
    (workers that die are the scheduler's business: ``distributed.scheduler.allowed-failures``);
    sessions that still fail are listed in ``.failed`` with the reason. If the cluster is lost,
    the sessions that finished are returned and the rest listed in ``.unfinished``.

    ``resume``: the results of an earlier call; its sessions with a result are not computed
    again, and the returned object holds them together with the new ones.

    >>> res = map_sessions(session_structure_spectra, ids, cache)          # doctest: +SKIP
    >>> if not res.complete:                                               # doctest: +SKIP
    ...     res = map_sessions(session_structure_spectra, ids, cache, resume=res,
    ...                        client=npd.get_client())
    """
    from ..catalog import open_cache
    from .client import current_client

    cache = cache or open_cache()
    session_ids = [int(s) for s in session_ids]
    kept = dict(resume.per_session) if resume is not None else {}
    todo = [s for s in session_ids if s not in kept]
    failed: dict[int, str] = {}
    lazy: dict[int, Any] = {}
    for sid in tqdm(todo, desc="opening sessions", disable=not progress, unit="session"):
        try:
            lazy[sid] = func(cache.get_session_data(sid), **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported per session, the others go on
            failed[sid] = f"{type(exc).__name__}: {exc}"
            log.warning("session %s failed while building its graph: %s", sid, exc)

    done: dict[int, Any] = {}
    unfinished: list[int] = []
    lost: str | None = None
    client = current_client(client)
    if client is not None and lazy:
        unfinished, lost = _on_cluster(client, lazy, retries, progress, done, failed)
    else:
        for sid, obj in tqdm(lazy.items(), desc="computing", disable=not progress,
                             unit="session"):
            try:
                (done[sid],) = dask.compute(obj)
            except Exception as exc:  # noqa: BLE001
                err = _reason(exc, obj)
                failed[sid] = f"{type(err).__name__}: {err}"
    if unfinished:
        msg = (f"{lost} {len(done) + len(kept)} of {len(session_ids)} sessions have their "
               f"result; unfinished: {unfinished}. Rerun with a new client and "
               "map_sessions(..., resume=<these results>) to compute only the rest.")
        log.warning("%s", msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    ordered = {sid: {**kept, **done}[sid] for sid in session_ids if sid in kept or sid in done}
    return SessionResults(_combine(ordered), ordered, failed, unfinished, lost)
