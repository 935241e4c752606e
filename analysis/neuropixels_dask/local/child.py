"""``python -m neuropixels_dask.local.child MODULE ENTRY CONFIG``: the body of a server process.

The S3 server and the proxy run in processes of their own (their request handling never competes
with the code under test for the GIL, and a crash or hang of either side is contained). This
entry point imports just ``MODULE`` and calls ``ENTRY(CONFIG)``; see ``s3proxy._spawn_child``.
"""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str]) -> None:
    module, entry, cfg = argv
    if not module.startswith("neuropixels_dask.local."):
        raise SystemExit(f"not a module of the local stack: {module}")
    getattr(importlib.import_module(module), entry)(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
