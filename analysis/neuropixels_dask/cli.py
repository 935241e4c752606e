"""The ``neuropixels-dask`` command line: convert, and the local stack (generate, s3, demo, hub).

Each subcommand lives with the code it drives; this module only parses arguments and turns our
exceptions into one readable line (no traceback for mistakes a user can fix).
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import convert, verify
from .errors import NeuropixelsDaskError
from .local import cli as local_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuropixels-dask", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log retries and requests")
    sub = p.add_subparsers(dest="command", required=True)
    convert.register_cli(sub)
    verify.register_cli(sub)
    local_cli.register(sub)
    return p


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
