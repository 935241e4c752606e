"""The ``neuropixels-dask`` command line: generate, s3 serve, demo, convert, bench.

Each subcommand lives with the code it drives; this module only parses arguments and turns our
exceptions into one readable line (no traceback for mistakes a user can fix).
"""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import NeuropixelsDaskError


def _cmd_generate(args: argparse.Namespace) -> int:
    from .synth import generate_cache

    overrides = {k: getattr(args, k) for k in ("n_sessions", "n_probes", "units_per_probe",
                                               "seed")}
    res = generate_cache(args.url, args.preset, reuse=not args.force, jobs=args.jobs,
                         **overrides)
    verb = "reused" if res.reused else "wrote"
    print(f"{verb} {len(res.session_ids)} synthetic sessions at {res.url}: "
          f"{', '.join(map(str, res.session_ids))}")
    return 0


def _cmd_s3_serve(args: argparse.Namespace) -> int:
    from .s3server import serve_forever

    serve_forever(cache_dir=args.cache_dir, prefix=args.prefix, port=args.port,
                  bucket=args.bucket)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuropixels-dask", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log retries and requests")
    sub = p.add_subparsers(dest="command", required=True)

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
    g.set_defaults(func=_cmd_generate)

    s3 = sub.add_parser("s3", help="a local S3 server for tests, demos and benchmarks")
    s3sub = s3.add_subparsers(dest="s3_command", required=True)
    serve = s3sub.add_parser("serve", help="serve (and optionally upload) a cache on 127.0.0.1")
    serve.add_argument("--cache-dir", help="local cache folder to upload at start")
    serve.add_argument("--prefix", default="ecephys-cache", help="key prefix of the cache")
    serve.add_argument("--bucket", default="allen-brain-observatory")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.set_defaults(func=_cmd_s3_serve)

    for register in _plugins():
        register(sub)
    return p


def _plugins():
    """Subcommands that live with their features (demo, convert, bench, hub)."""
    import importlib

    for mod in ("demo", "convert", "bench", "hublocal"):
        try:
            m = importlib.import_module(f".{mod}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"neuropixels_dask.{mod}"):
                continue
            raise
        if hasattr(m, "register_cli"):
            yield m.register_cli


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("botocore.retryhandler").setLevel(logging.DEBUG)
    try:
        return int(args.func(args) or 0)
    except NeuropixelsDaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
