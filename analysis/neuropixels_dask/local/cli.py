"""The local stack's subcommands of ``neuropixels-dask``: generate, s3 serve, demo, hub local.

They are always listed (so ``--help`` shows them); run without the ``local`` extra, each one
stops with a one-line error naming the missing package and the install command.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

from . import require_extra

#: top-level modules of the ``local`` extra's packages
EXTRA_MODULES = frozenset({"moto", "flask", "werkzeug", "pynwb", "hdmf", "jupyterhub",
                           "dask_gateway_server"})


def needs_extra(what: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Turn a missing package of the extra into :class:`~.LocalStackMissing` for ``what``."""
    def wrap(func: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(func)
        def run(args: argparse.Namespace) -> int:
            try:
                return func(args)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] in EXTRA_MODULES:
                    raise require_extra(what, exc) from exc
                raise
        return run
    return wrap


@needs_extra("`neuropixels-dask generate`")
def _cmd_generate(args: argparse.Namespace) -> int:
    from .synth import generate_cache

    overrides = {k: getattr(args, k) for k in ("n_sessions", "n_probes", "units_per_probe",
                                               "seed")}
    overrides["release_catalog"] = args.release_catalog or None
    res = generate_cache(args.url, args.preset, reuse=not args.force, jobs=args.jobs,
                         **overrides)
    verb = "reused" if res.reused else "wrote"
    print(f"{verb} {len(res.session_ids)} synthetic sessions at {res.url}: "
          f"{', '.join(map(str, res.session_ids))}")
    return 0


@needs_extra("`neuropixels-dask s3 serve`")
def _cmd_s3_serve(args: argparse.Namespace) -> int:
    from .s3server import serve_forever

    serve_forever(cache_dir=args.cache_dir, prefix=args.prefix, port=args.port,
                  bucket=args.bucket)
    return 0


def register(sub: Any) -> None:
    """Add the local stack's subcommands to the ``neuropixels-dask`` parser."""
    g = sub.add_parser("generate", help="write a synthetic cache in the published Allen layout")
    g.add_argument("url", help="target folder or fsspec URL (e.g. s3://bucket/ecephys-cache/)")
    g.add_argument("--preset", default="tiny", choices=["tiny", "demo", "bench"])
    g.add_argument("--n-sessions", type=int)
    g.add_argument("--n-probes", type=int)
    g.add_argument("--units-per-probe", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--jobs", type=int, help="parallel processes (default: one per session, "
                   "at most the CPU count)")
    g.add_argument("--force", action="store_true", help="regenerate even if a complete cache "
                   "with the same parameters is there")
    g.add_argument("--release-catalog", action="store_true",
                   help="pad the cache's tables to the release's size (58 sessions, 332 probes, "
                        "~99k units; the NWB files stay the preset's): for catalog benchmarks")
    g.set_defaults(func=_cmd_generate)

    s3 = sub.add_parser("s3", help="a local S3 server for tests, demos and benchmarks")
    s3sub = s3.add_subparsers(dest="s3_command", required=True)
    serve = s3sub.add_parser("serve", help="serve (and optionally upload) a cache on 127.0.0.1")
    serve.add_argument("--cache-dir", help="local cache folder to upload at start")
    serve.add_argument("--prefix", default="ecephys-cache", help="key prefix of the cache")
    serve.add_argument("--bucket", default="allen-brain-observatory")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.set_defaults(func=_cmd_s3_serve)

    from . import demo
    from .hub import launcher

    demo.register_cli(sub)
    launcher.register_cli(sub)
