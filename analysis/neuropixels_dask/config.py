"""Package configuration through Dask's config system.

Why Dask config: it is what dask-gateway uses, so the hub can configure every notebook *and* every
worker with environment variables (``NEUROPIXELS_DASK__CACHE__URL`` …) and users never pass options
through five layers of keyword arguments.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml

_FN = os.path.join(os.path.dirname(__file__), "neuropixels_dask.yaml")

with open(_FN) as _f:
    _defaults = yaml.safe_load(_f)

ENV_PREFIX = "NEUROPIXELS_DASK__"


def env_config(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``NEUROPIXELS_DASK__A__B=v`` → ``{"neuropixels_dask": {"a": {"b": v}}}``.

    Dask itself only collects ``DASK_*`` variables; ours are named after the config namespace
    (``NEUROPIXELS_DASK__CACHE__URL``) like dask-gateway's ``DASK_GATEWAY__ADDRESS``, so they are
    collected here, with Dask's own value parsing (``true`` → True, ``null`` → None, numbers).
    """
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        node = out.setdefault("neuropixels_dask", {})
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = dask.config.interpret_value(value)
    return out


#: our layer in ``dask.config.defaults``: the YAML defaults with the environment on top. Dask's
#: ``refresh()`` re-applies it, and ``dask.config.set`` in user code still wins over it.
_layer: dict[str, Any] = {}


def refresh() -> None:
    """Re-read ``NEUROPIXELS_DASK__*`` variables (call after changing them in-process)."""
    _layer.clear()
    _layer.update(dask.config.merge(_defaults, env_config()))
    dask.config.refresh()


_layer.update(dask.config.merge(_defaults, env_config()))
dask.config.update_defaults(_layer)


def get(key: str, default: Any = None) -> Any:
    """Return ``neuropixels_dask.<key>`` from Dask config."""
    return dask.config.get(f"neuropixels_dask.{key}", default=default)


def storage_options_from_config(url: str) -> dict[str, Any]:
    """Default fsspec ``storage_options`` for ``url`` from config (S3 settings only apply to s3://)."""
    if not str(url).startswith(("s3://", "s3a://")):
        return {}
    s3 = get("s3") or {}
    opts: dict[str, Any] = {}
    anon = s3.get("anon")
    if isinstance(anon, str):
        anon = anon.lower() in ("1", "true", "yes")
    opts["anon"] = bool(anon)
    client_kwargs: dict[str, Any] = {}
    if s3.get("endpoint_url"):
        client_kwargs["endpoint_url"] = s3["endpoint_url"]
    if s3.get("region"):
        client_kwargs["region_name"] = s3["region"]
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    rp = s3.get("requester_pays")
    if isinstance(rp, str):
        rp = rp.lower() in ("1", "true", "yes")
    if rp:
        opts["requester_pays"] = True
    return opts
