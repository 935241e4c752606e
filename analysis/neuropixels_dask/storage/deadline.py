"""A bound on how long reads wait for an object store that does not answer.

botocore's retries are counted, not timed: an endpoint that refuses connections is given up on
after ``remote.retries`` attempts, which can be a few seconds of bad luck with the random
backoff or a minute of good luck, and an endpoint that accepts connections and never answers
costs ``read_timeout`` per attempt, many minutes in all, during which a notebook cell just hangs.
So the time is bounded, for every S3 request this package makes (s3fs, zarr's own store and
h5py's reads alike): this module holds the rules, :class:`.httpsession.DeadlineSession` (the
aiobotocore HTTP session that ``storage.options`` puts in every client's config) applies them:

* every S3 operation (all botocore attempts of one request) must be answered within
  ``remote.outage_timeout`` seconds of its first attempt, and every call of this package that
  reads (``storage.fetch_*``, the Zarr reader's reads) within that time of its start, whatever
  s3fs retries inside it (:func:`bounded`);
* while the endpoint refuses connections, an attempt keeps reconnecting (short pauses, each
  counted and logged as a retry) until it answers or the time is up, so an outage shorter than
  the timeout changes nothing, however botocore's backoff falls;
* when the time is up: :class:`~neuropixels_dask.errors.StoreUnavailableError` naming the
  endpoint; nothing else is retried or left running in the background (the waiting attempt is
  cancelled), so the worker is free at once.

A computation therefore ends within ``outage_timeout`` plus one of botocore's backoff pauses
(at most 20 s) of the store going down, never later.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
import urllib.parse
from collections.abc import Iterator

from .. import config
from ..errors import StoreUnavailableError

#: seconds an endpoint may stay silent before reads fail (``remote.outage_timeout`` in config):
#: 30 s rides out restarts and short network outages, and with botocore's longest backoff pause
#: (20 s) still ends a computation within a minute, well under a user's patience
OUTAGE_TIMEOUT = 30.0
#: the most ``remote.outage_timeout`` may be: a computation must end within minutes
MAX_OUTAGE_TIMEOUT = 600.0
#: pauses between connection attempts while the endpoint refuses them (the last one repeats)
RECONNECT_PAUSES = (0.25, 0.5, 1.0, 2.0)
#: an upload may take its body's size at this rate on top of the outage timeout (bytes/s)
MIN_UPLOAD_RATE = 1 << 20
#: where the time of an operation's first attempt is kept in botocore's request context
CONTEXT_KEY = "neuropixels_dask_deadline"

#: the deadline (``time.monotonic()``) of the read this code runs in, if any (see bounded())
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "neuropixels_dask_read_deadline", default=None)


def outage_timeout() -> float:
    """``neuropixels_dask.remote.outage_timeout`` in seconds, checked."""
    value = (config.get("remote") or {}).get("outage_timeout", OUTAGE_TIMEOUT)
    try:
        value = float(OUTAGE_TIMEOUT if value is None else value)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value <= MAX_OUTAGE_TIMEOUT:
        raise ValueError(f"neuropixels_dask.remote.outage_timeout={value!r} must be a number of "
                         f"seconds above 0 and at most {MAX_OUTAGE_TIMEOUT:.0f} (env "
                         "NEUROPIXELS_DASK__REMOTE__OUTAGE_TIMEOUT)")
    return value


@contextlib.contextmanager
def bounded() -> Iterator[None]:
    """Every S3 request made inside (in this thread, or in coroutines it starts) must be
    answered within ``outage_timeout`` of entering; an enclosing ``bounded()`` wins."""
    if _deadline.get() is not None:
        yield
        return
    token = _deadline.set(time.monotonic() + outage_timeout())
    try:
        yield
    finally:
        _deadline.reset(token)


def current() -> float | None:
    """The deadline of the :func:`bounded` read this code runs in (``None`` outside one)."""
    return _deadline.get()


def endpoint(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def unavailable(url: str, waited: float, why: str) -> StoreUnavailableError:
    """The error when the store at ``url`` (a request URL) was silent for ``waited`` s."""
    path = urllib.parse.urlsplit(url).path
    return StoreUnavailableError(
        f"The object store at {endpoint(url)} {why} for {waited:.0f} s "
        f"(neuropixels_dask.remote.outage_timeout = {outage_timeout():g} s) while reading "
        f"{path}: it is down or unreachable from here. Nothing was computed from missing "
        "data: run the same call again once the store is back (same results), or wait longer "
        "with NEUROPIXELS_DASK__REMOTE__OUTAGE_TIMEOUT.")
