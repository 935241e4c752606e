"""The benchmark runner cannot rot: run it on the tiny preset, once, and check its table.

Not a benchmark (one repetition, a tiny cache, a loaded CI machine): only that every row runs,
both sides of every comparison are measured, and the results file says so with finite ratios.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROWS = range(1, 9)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, tiny_cache_dir) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "results.md"
    cmd = [sys.executable, "-m", "benchmarks", "--preset", "tiny", "--cache-dir", tiny_cache_dir,
           "--data-dir", str(out.parent), "--reps", "1", "--latency", "0.002,0.004",
           "--workers", "1,2", "--profiles", "latency only,laptop", "--out", str(out),
           "--quiet"]  # two of row 3's link profiles: the link model runs, the test stays short
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out.read_text(), json.loads(out.with_suffix(".json").read_text())


def _ratios(text: str) -> list[str]:
    """Every table cell that is a ratio (``12×``, ``0.34×``, ``n/a×`` would be a failure)."""
    return re.findall(r"\| ([^|×]*×) (?=\|)", text)


@pytest.mark.slow
def test_every_row_is_in_the_table(bench_run):
    text, raw = bench_run
    for row in ROWS:
        assert f"## Row {row}:" in text
        assert f"(row {row}) |" in text, f"no headline for row {row}"
    assert [r["row"] for r in raw["rows"]] == list(ROWS)
    assert "## Targets" in text and "## Setup" in text and "usable cores" in text


@pytest.mark.slow
def test_both_sides_measured_with_finite_numbers(bench_run):
    text, raw = bench_run
    for row in raw["rows"]:
        sides = {r["side"] for r in row["results"]}
        assert len(sides) >= 2, f"row {row['row']} measured one side only: {sides}"
        for r in row["results"]:
            seconds = r["median"]["seconds"]
            assert seconds is not None and math.isfinite(seconds) and seconds > 0, r
    ratios = _ratios(text)
    assert len(ratios) > 20
    for cell in ratios:
        value = float(cell.rstrip("×").replace(",", ""))
        assert math.isfinite(value), cell
    assert "nan" not in text.lower().split("## setup")[0]


@pytest.mark.slow
def test_values_agree_between_sides(bench_run):
    text, _ = bench_run
    assert "Values identical on every side: yes" in text  # row 2: LFP, all four readers
    assert "Counts identical on every side: yes" in text  # row 6: vs AllenSDK's algorithm
    assert "Spectra identical to row 3's: yes" in text  # row 7: the same call from memory
    assert "laptop (25 MB/s in total)" in text  # row 3 ran under the link model too
    if (REPO / ".tools" / "allensdk" / "bin" / "python").exists():  # ./dev test installs it
        assert "AllenSDK 2.16.2 ran itself" in text  # the tiny cache is AllenSDK-readable


def test_runner_arguments():
    """``python -m benchmarks`` parses worker counts and latency ranges, and refuses a range
    that runs backwards."""
    sys.path.insert(0, str(REPO))  # the benchmarks package lives in the checkout, not the wheel
    try:
        from benchmarks.runner import build_parser
    finally:
        sys.path.remove(str(REPO))

    args = build_parser().parse_args(["--preset", "tiny", "--workers", "1,2,4,8,16",
                                      "--latency", "0.02,0.05"])
    assert args.workers == [1, 2, 4, 8, 16] and args.latency == (0.02, 0.05)
    assert args.profiles == ["latency only", "compute next to S3", "laptop"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--latency", "0.05,0.02"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--profiles", "cafe wifi"])
