"""Fast failure for an object store that cannot be reached at all.

botocore retries connection errors like any transient error (``remote.retries`` attempts, with
backoff of up to 20 s each), so a mistyped endpoint or a missing network would otherwise surface
only after a minute or more. The first contact of a process with an endpoint is therefore a plain
TCP connect, three tries within about a second; once it has succeeded, later connection errors
are transient ones and botocore's retries handle them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.parse

from ..errors import EndpointUnreachableError

#: pauses before each TCP connect attempt of the first contact (seconds)
CONNECT_PAUSES = (0.0, 0.25, 0.75)
#: longest single connect attempt (seconds; lower if ``connect_timeout`` is lower)
CONNECT_TIMEOUT = 5.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")

#: (host, port) of object-store endpoints this process has connected to once
_reachable: set[tuple[str, int]] = set()
_lock = threading.Lock()


def endpoint_of(opts: dict) -> str:
    """The endpoint botocore will use for these s3fs options (an explicit one, else AWS's)."""
    ck = opts.get("client_kwargs") or {}
    explicit = ck.get("endpoint_url") or opts.get("endpoint_url") or \
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if explicit:
        return str(explicit)
    region = ck.get("region_name") or os.environ.get("AWS_REGION") or \
        os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return f"https://s3.{region}.amazonaws.com"


def check_reachable(url: str, opts: dict) -> None:
    """Raise ``EndpointUnreachableError`` at once if the S3 endpoint refuses connections or its
    name does not resolve. Skipped when an HTTP(S) proxy is configured (the endpoint is then
    reached through the proxy)."""
    ck = opts.get("config_kwargs") or {}
    if ck.get("proxies") or any(os.environ.get(v) for v in PROXY_VARIABLES):
        return
    endpoint = endpoint_of(opts)
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    host = parts.hostname
    if not host:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return  # botocore reports a malformed endpoint itself
    if (host, port) in _reachable:
        return
    timeout = min(CONNECT_TIMEOUT, float(ck.get("connect_timeout") or CONNECT_TIMEOUT))
    last: OSError | None = None
    for pause in CONNECT_PAUSES:
        time.sleep(pause)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except TimeoutError as exc:  # waited long enough already
            last = exc
            break
        except OSError as exc:  # refused, unresolvable, unreachable network
            last = exc
            continue
        with _lock:
            _reachable.add((host, port))
        return
    raise EndpointUnreachableError(
        f"Could not reach the object store at {endpoint} for {url} "
        f"({type(last).__name__}: {last}). Check the endpoint "
        "(NEUROPIXELS_DASK__S3__ENDPOINT_URL or client_kwargs={'endpoint_url': ...}) and your "
        "network.")


def forget_reachable() -> None:
    """Forget which endpoints answered (the next contact probes again)."""
    with _lock:
        _reachable.clear()
