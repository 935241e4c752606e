"""Errors of botocore, aiohttp and the OS about a URL, in the user's words (``errors.py``)."""

from __future__ import annotations

import copy

from ..errors import (
    AccessDeniedError,
    CacheNotFoundError,
    EndpointUnreachableError,
    NeuropixelsDaskError,
    StoreUnavailableError,
)

#: what a transient failure looks like once botocore and s3fs have given up retrying it
TRANSIENT_SIGNS = ("slowdown", "reduce your request rate", "internalerror",
                   "serviceunavailable", "internal error", "payload is not completed",
                   "clientpayloaderror", "incompleteread", "responsestreamingerror",
                   "connectionreseterror", "connection reset", "serverdisconnectederror")


def translate_error(exc: BaseException, url: str) -> BaseException:
    """Turn a botocore/aiohttp/OS error about ``url`` into one of our errors, in the user's words.

    One of ours (raised further down, e.g. ``StoreUnavailableError`` by the HTTP session) comes
    back as a fresh copy: callers ``raise translate_error(exc, url) from exc``, and an exception
    that is its own ``__cause__`` sends tblib, which distributed uses to send a task's error to
    the client, into an endless loop (the worker hangs)."""
    if isinstance(exc, NeuropixelsDaskError):
        return copy.copy(exc)
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if isinstance(exc, PermissionError) or "accessdenied" in low or "forbidden" in low or \
            "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low:
        return AccessDeniedError(
            f"Access to {url} was denied ({text}). Check your credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an IAM role), or set "
            "NEUROPIXELS_DASK__S3__ANON=true for a public bucket.")
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return CacheNotFoundError(
            f"The bucket of {url} does not exist ({text}). Check the cache URL "
            "(NEUROPIXELS_DASK__CACHE__URL or open_cache(url=...)).")
    if isinstance(exc, FileNotFoundError) or "nosuchkey" in low or "not found" in low:
        return CacheNotFoundError(f"Nothing found at {url}. Check the cache URL and that the "
                                  "cache holds this file.")
    if any(sign in low for sign in TRANSIENT_SIGNS):
        return StoreUnavailableError(
            f"The object store kept failing for {url} after every retry ({text}). It is "
            "overloaded or unstable: try again later, or with fewer Dask workers.")
    if isinstance(exc, ConnectionError | TimeoutError) or "could not connect" in low or \
            "connect timeout" in low or "endpointconnectionerror" in low or \
            "cannot connect" in low or "connection refused" in low:
        return EndpointUnreachableError(
            f"Could not reach the object store for {url} ({text}). Check the endpoint "
            "(NEUROPIXELS_DASK__S3__ENDPOINT_URL) and your network.")
    return _fresh(exc)


def _fresh(exc: BaseException) -> BaseException:
    """An error we do not translate, as a new object of its type with its message and
    traceback: the caller's ``raise … from exc`` then chains it to the original instead of
    making the original its own cause (distributed's ``error_message`` never returns on such an
    exception, so the task's worker would hang). Where the type cannot be rebuilt from its
    arguments, an ``OSError`` naming it stands in."""
    try:
        new = copy.copy(exc)
    except Exception:  # noqa: BLE001 - e.g. __init__ takes other arguments than .args
        new = None
    if new is None or new is exc or type(new) is not type(exc):
        new = OSError(f"{type(exc).__name__}: {exc}")
    return new.with_traceback(exc.__traceback__)
