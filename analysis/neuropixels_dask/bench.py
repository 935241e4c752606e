"""``neuropixels-dask bench``: the side-by-side benchmarks of ``benchmarks/`` (issue 8).

The runner lives in the repository's ``benchmarks/`` folder, not in the package (it compares the
package with pynwb, remfile and the AllenSDK way, and writes ``benchmarks/results/``), so this
command needs a source checkout; it is the same as ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

#: the checkout this (editable) package was installed from
REPO = Path(__file__).resolve().parents[2]


def _runner():
    if not (REPO / "benchmarks" / "runner.py").exists():
        from .errors import NeuropixelsDaskError

        raise NeuropixelsDaskError(
            f"`neuropixels-dask bench` needs the repository's benchmarks/ folder (looked in "
            f"{REPO}); install the package from a source checkout (pip install -e .) or run "
            "`python -m benchmarks` there.")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from benchmarks import runner

    return runner


def _cmd_bench(args: argparse.Namespace) -> int:
    runner = _runner()
    args.argv = list(getattr(args, "_argv", []) or sys.argv[2:])
    try:
        runner.run(args)
    except runner.RowsFailed as e:  # the results file was written; the exit status says so
        print(e, file=sys.stderr)
        return 1
    return 0


def register_cli(subparsers: Any) -> None:
    """``neuropixels-dask bench [--preset bench] [--latency 0.02,0.05] [--workers 1,2,4] …``."""
    p = subparsers.add_parser(
        "bench", help="side-by-side benchmarks against pynwb, remfile and the AllenSDK way",
        description="Run the benchmark rows of issue 8 on a synthetic cache served by a local "
                    "S3 server, both sides in the same run; write a Markdown table of medians "
                    "and ratios to benchmarks/results/.")
    if (REPO / "benchmarks" / "runner.py").exists():
        _runner().add_arguments(p)
    # without a checkout the command still exists and says what it needs (``_runner``)
    p.set_defaults(func=_cmd_bench)
