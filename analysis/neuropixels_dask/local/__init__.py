"""The local stack: the whole platform on one machine, and the real parts tests run against.

Behind the ``local`` extra (``pip install 'neuropixels-dask[local]'``); nothing here is imported
by ``import neuropixels_dask`` or needed on the hub's notebooks and workers.

- :mod:`.s3server`: a real S3 server (moto) on 127.0.0.1 in its own process;
  :mod:`.s3proxy`: the counting, latency and fault-injecting proxy in front of it;
  :mod:`.counting`: requests and bytes a reader costs.
- :mod:`.synth`: synthetic sessions in the published Allen layout, with ground truth.
- :mod:`.hub`: ``neuropixels-dask hub local``, the Helm chart's hub on localhost.
- :mod:`.demo`: ``neuropixels-dask demo``.
- :mod:`.resources`: the chart and notebooks shipped as package data (or an explicit path).

Importing a submodule loads only what it needs: the S3 server's and the proxy's own processes
start with ``python -m neuropixels_dask.local.<module>`` and import neither numpy nor dask's
arrays.
"""

from __future__ import annotations

from ..errors import NeuropixelsDaskError


class LocalStackMissing(NeuropixelsDaskError, ModuleNotFoundError):
    """A command of the local stack was run without the ``local`` extra installed."""


def require_extra(what: str, exc: ModuleNotFoundError) -> LocalStackMissing:
    """The error for ``what`` (a command) when one of the extra's packages is missing."""
    return LocalStackMissing(
        f"{what} needs the local stack, which is not installed here (no module "
        f"{exc.name!r}). Install it with: pip install 'neuropixels-dask[local]'")
