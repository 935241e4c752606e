"""Retries made visible: every retry botocore and s3fs make is counted and logged at INFO.

botocore and s3fs only announce retries at DEBUG, among every other request they log, so by
default a run that survived a hundred 503s looks like one that saw none. :class:`RetryLog` sits
on their retry loggers and reports each retry on ``neuropixels_dask.storage``:
``retrying an S3 request (retry N in this process, botocore, after 0.83 s)``. The package's own
reconnections to an endpoint that refuses connections (``storage.httpsession``) are counted and
logged the same way (``reconnect``).

It is installed by :func:`install` when this package creates its first filesystem (not at
import): that is the declared side effect of reading through ``neuropixels_dask.storage``.
"""

from __future__ import annotations

import collections
import logging
import threading

log = logging.getLogger("neuropixels_dask.storage")

#: loggers on which botocore (standard/adaptive and legacy modes) and s3fs announce a retry
RETRY_LOGGERS = ("botocore.retries.standard", "botocore.retryhandler", "s3fs")
#: a level below DEBUG that marks "set by this module, not by the user" (see RetryLog.filter)
OUR_LEVEL = logging.DEBUG - 1
#: s3fs retries a ClientError only when its text matches one of these (s3fs/core.py)
S3FS_RETRIED_CLIENT_ERRORS = ("SlowDown", "reduce your request rate",
                              "XAmzContentSHA256Mismatch")


class RetryLog(logging.Filter):
    """Counts retries per source and logs each one (see the module docstring).

    To see botocore's and s3fs' DEBUG records, a retry logger nobody configured is set to a
    level just below DEBUG; records the user's configuration would not have shown are then
    dropped here, so their output is unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def _retry_kind(self, record: logging.LogRecord) -> tuple[str, str] | None:
        msg = record.getMessage()
        if record.name.startswith("botocore"):
            if msg.startswith("Retry needed, retrying request after delay of"):
                return "botocore", f"after {float(msg.rsplit(' ', 1)[1]):.2f} s"
            if msg.startswith("Retry needed, action of"):
                return "botocore", msg.rsplit(" ", 1)[1]
            return None
        if msg.startswith("Retryable error"):
            return "s3fs", msg.split(": ", 1)[-1][:200]
        if msg.startswith("Client error (maybe retryable)") and any(
                sign in msg for sign in S3FS_RETRIED_CLIENT_ERRORS):
            return "s3fs", msg.split(": ", 1)[-1][:200]
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        kind = self._retry_kind(record)
        if kind is not None:
            with self._lock:
                self._counts[kind[0]] += 1
                n = sum(self._counts.values())
            log.info("retrying an S3 request (retry %d in this process, %s, %s)", n, *kind)
        logger = logging.getLogger(record.name)
        if logger.level == OUR_LEVEL and logger.parent is not None:
            return record.levelno >= logger.parent.getEffectiveLevel()
        return True

    def note(self, kind: str, detail: str) -> None:
        """Count and log a retry made by this package itself (see :func:`note_reconnect`)."""
        with self._lock:
            self._counts[kind] += 1
            n = sum(self._counts.values())
        log.info("retrying an S3 request (retry %d in this process, %s, %s)", n, kind, detail)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"total": sum(self._counts.values()), **self._counts}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


retry_log = RetryLog()


def install() -> None:
    """Attach :data:`retry_log` to botocore's and s3fs' retry loggers (idempotent)."""
    for name in RETRY_LOGGERS:
        logger = logging.getLogger(name)
        if retry_log not in logger.filters:
            logger.addFilter(retry_log)
        if logger.level == logging.NOTSET:
            logger.setLevel(OUR_LEVEL)


def note_reconnect(endpoint: str, waited: float) -> None:
    """One more connection attempt to an endpoint that refuses them (``storage.httpsession``
    waits for it up to ``remote.outage_timeout``): counted and logged like botocore's retries."""
    retry_log.note("reconnect", f"{endpoint} refused connections for {waited:.1f} s")


def retry_counts() -> dict[str, int]:
    """Retries made in this process so far: ``{"total": n, "botocore": b, "s3fs": s}``
    (on a cluster: ``client.run(storage.retry_counts)``)."""
    return retry_log.counts()
