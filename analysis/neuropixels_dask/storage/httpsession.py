"""The HTTP session of every S3 client this package creates: aiobotocore's, with a time bound.

``storage.options`` puts :class:`DeadlineSession` in every S3 client's config
(``config_kwargs["http_session_cls"]``), so s3fs' clients, zarr's own store and h5py's reads all
go through it. The rules (how long, what counts) are in :mod:`.deadline`; kept apart because
this module imports aiobotocore, which only S3 URLs need.
"""

from __future__ import annotations

import asyncio
import math
import time

from aiobotocore.httpsession import AIOHTTPSession
from aiohttp import ClientConnectorError
from botocore.exceptions import EndpointConnectionError

from . import deadline, retries


def _refused(exc: EndpointConnectionError) -> bool:
    """Whether botocore's error means "no connection could be made" (not a reset mid-way)."""
    return isinstance(exc.kwargs.get("error"), ClientConnectorError)


class DeadlineSession(AIOHTTPSession):
    """An attempt is answered by the deadline or fails with ``StoreUnavailableError``; while
    the endpoint refuses connections it reconnects until then (see :mod:`.deadline`)."""

    async def send(self, request):
        start = time.monotonic()
        timeout = deadline.outage_timeout()
        context = getattr(request, "context", None)  # shared by the attempts of one operation
        if isinstance(context, dict):
            first = context.setdefault(deadline.CONTEXT_KEY, start)
        else:
            first = start
        until = min(first + timeout, deadline.current() or math.inf)
        body = request.body
        extra = len(body) / deadline.MIN_UPLOAD_RATE if isinstance(body, bytes | bytearray) \
            else 0.0
        pauses = iter(deadline.RECONNECT_PAUSES)
        pause = deadline.RECONNECT_PAUSES[0]
        while True:
            left = until - time.monotonic()
            if left <= 0:
                raise deadline.unavailable(request.url, time.monotonic() - first,
                                           "did not answer")
            try:
                return await asyncio.wait_for(super().send(request), left + extra)
            except TimeoutError:
                raise deadline.unavailable(request.url, time.monotonic() - first,
                                           "did not answer") from None
            except EndpointConnectionError as exc:
                if not _refused(exc):
                    raise
                pause = next(pauses, pause)
                if time.monotonic() + pause >= until:
                    raise deadline.unavailable(request.url, time.monotonic() - first,
                                               "refused every connection") from exc
                retries.note_reconnect(deadline.endpoint(request.url),
                                       time.monotonic() - first)
                await asyncio.sleep(pause)
