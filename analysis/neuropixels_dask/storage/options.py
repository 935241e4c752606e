"""Storage options: the config defaults for a URL with the caller's options on top, resolved once.

Why resolved once: a Dask task carries its source's options; resolving (config lookup, deep
copies, retry settings) on every read would cost more than some reads. :func:`resolve` returns
:class:`StorageOptions`, a dict that remembers it is resolved and carries its cache key, so the
readers resolve at the boundary (opening a cache or a session) and everything below takes the
options as they are.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .. import config

#: s3fs options that carry credentials
CREDENTIAL_OPTIONS = ("key", "secret", "token", "profile")


class StorageOptions(dict):
    """fsspec ``storage_options`` after :func:`resolve`: config defaults applied, private copy.

    Treat it as read-only: :attr:`key` (the per-process cache key of these options) is computed
    once. botocore rewrites nested dicts it is given (``config_kwargs["retries"]``), so
    :func:`~neuropixels_dask.storage.filesystem` hands fsspec a deep copy, never this object.
    """

    __slots__ = ("_key",)

    @property
    def key(self) -> str:
        try:
            return self._key
        except AttributeError:
            self._key = options_key(self)
            return self._key

    def to_fsspec(self) -> dict[str, Any]:
        """A private deep copy to hand to fsspec/botocore (which rewrite nested dicts)."""
        return copy.deepcopy(dict(self))

    def __reduce__(self):  # pickles as a StorageOptions, so workers do not resolve again
        return (StorageOptions, (dict(self),))


def options_key(storage_options: dict | None) -> str:
    """A stable text key of ``storage_options`` (order-independent)."""
    return json.dumps(storage_options or {}, sort_keys=True, default=str)


def is_s3(url: str) -> bool:
    return str(url).startswith(("s3://", "s3a://"))


def check_url(url: str | None, what: str = "cache") -> str:
    """``url`` if it names something fsspec can open, else :class:`InvalidURLError` saying why.

    Why here, before anything is opened: an empty string would otherwise fall through to the
    configured default (the public bucket) and ``foo://`` reach fsspec's bare ``ValueError``.
    """
    import fsspec

    from ..errors import InvalidURLError

    text = "" if url is None else str(url)
    if not text.strip():
        default = ("; open_cache() with no argument opens the configured default"
                   if what == "cache" else "")
        raise InvalidURLError(f"The {what} URL is empty. Give the folder or bucket prefix "
                              "(e.g. s3://bucket/ecephys-cache or /data/ecephys-cache)"
                              f"{default}.")
    if "://" in text:
        protocol = text.split("://", 1)[0]
        if protocol not in fsspec.available_protocols():
            known = ", ".join(f"{p}://" for p in ("s3", "file", "http", "https", "gs", "memory"))
            raise InvalidURLError(f"{text!r}: unknown protocol {protocol!r}. Use a local path "
                                  f"or one of {known} (any fsspec protocol).")
    return text


def resolve(url: str, storage_options: dict | None = None) -> StorageOptions:
    """Config defaults for ``url`` overlaid with the caller's options (caller wins).

    Options that are already a :class:`StorageOptions` are returned as they are.
    """
    if isinstance(storage_options, StorageOptions):
        return storage_options
    opts = copy.deepcopy(config.storage_options_from_config(url))
    if storage_options:
        user = copy.deepcopy(dict(storage_options))
        if "anon" not in user and any(user.get(k) for k in CREDENTIAL_OPTIONS):
            # credentials given: sign with them (the config's anon=True is for the public bucket;
            # s3fs would otherwise ignore them without a word)
            user["anon"] = False
        if "client_kwargs" in user and "client_kwargs" in opts:
            user["client_kwargs"] = {**opts["client_kwargs"], **user["client_kwargs"]}
        opts.update(user)
    if is_s3(url):
        from .deadline import outage_timeout
        from .httpsession import DeadlineSession

        remote = config.get("remote") or {}
        ck = dict(opts.get("config_kwargs") or {})
        ck.setdefault("retries", {"max_attempts": int(remote.get("retries", 8)),
                                  "mode": "adaptive"})
        ck.setdefault("connect_timeout", remote.get("connect_timeout", 10))
        # a body that stops arriving is an outage too: no longer than outage_timeout between bytes
        ck.setdefault("read_timeout", min(float(remote.get("read_timeout", 60)),
                                          outage_timeout()))
        # every request answered within remote.outage_timeout (storage/deadline.py)
        ck.setdefault("http_session_cls", DeadlineSession)
        opts["config_kwargs"] = ck
    return StorageOptions(opts)


def with_defaults(storage_options: dict | None, url: str, **defaults: Any) -> StorageOptions:
    """``resolve(url, storage_options)`` plus ``defaults`` for keys the caller did not set."""
    opts = dict(resolve(url, storage_options))
    for k, v in defaults.items():
        opts.setdefault(k, v)
    return StorageOptions(opts)
