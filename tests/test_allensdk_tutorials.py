"""AllenSDK's own ecephys tutorials run on the synthetic cache, served from the local S3 server,
with only the cache construction changed (``npd.open_cache()``, configured by the environment as
on the hub).

The code cells are kept in ``tests/tutorials/`` (extracted from AllenSDK's repository, with their
source named); where a cell names data the synthetic cache does not have, or needs something this
environment lacks, the file says so next to it (README, "Porting an AllenSDK notebook"). Each
script runs in its own process, as a notebook kernel would, with matplotlib drawing off-screen.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tests" / "tutorials"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: the receptive-field tutorial is not run: the synthetic cache shows no Gabor stimulus, and the
#: tutorial's analysis is AllenSDK's own ReceptiveFieldMapping class (README says so); the session
#: tutorial was not in the AllenSDK snapshot available offline
NOT_RUN = {"ecephys_receptive_fields", "ecephys_session"}


def _env(s3_server, s3_cache) -> dict[str, str]:
    url, _ = s3_cache
    env = dict(os.environ)
    env.update(s3_server.env(cache_prefix=url.split("/", 3)[3]))
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.parametrize("name", ["ecephys_quickstart", "ecephys_data_access",
                                  "ecephys_lfp_analysis"])
def test_tutorial_runs_unchanged_but_for_the_cache(name, s3_server, s3_cache):
    script = TUTORIALS / f"{name}.py"
    text = script.read_text()
    assert not re.search(r"^\s*(from|import) allensdk", text, re.M)  # no AllenSDK import
    assert "npd.open_cache()" in text
    run = subprocess.run([sys.executable, str(script)], env=_env(s3_server, s3_cache),
                         capture_output=True, text=True, timeout=600, cwd=TUTORIALS)
    assert run.returncode == 0, run.stderr[-3000:]


def test_optotagging_tutorial_finds_the_tagged_units(s3_server, s3_cache, tiny_cache_dir):
    """The optotagging tutorial, run in a process of its own, finds the units the generator
    tagged (spikes 2-4 ms after each light pulse) among those it analyses."""
    probe = (
        "import json, runpy\n"
        f"ns = runpy.run_path({str(TUTORIALS / 'ecephys_optotagging.py')!r})\n"
        "print(json.dumps([int(u) for u in ns['TAGGED_UNITS']]))\n")
    run = subprocess.run([sys.executable, "-c", probe], env=_env(s3_server, s3_cache),
                         capture_output=True, text=True, timeout=600, cwd=TUTORIALS)
    assert run.returncode == 0, run.stderr[-3000:]
    found = set(json.loads(run.stdout.strip().splitlines()[-1]))
    truth = json.loads(Path(tiny_cache_dir, "synthetic_ground_truth.json").read_text())
    sessions = truth["sessions"]
    pvalb = [s for s in sessions.values() if any(u["optotagged"] for u in s["units"].values())]
    assert pvalb
    tagged = {int(u) for s in pvalb for u, v in s["units"].items()
              if v["optotagged"] and v["fails_filter"] is None and v["quality"] == "good"
              and v["area"].startswith("VIS")}
    assert tagged and tagged <= found


def test_every_extracted_tutorial_names_its_source():
    for script in TUTORIALS.glob("ecephys_*.py"):
        head = script.read_text().split('"""', 2)[1]
        assert "AllenInstitute/AllenSDK" in head and "commit" in head, script.name
        assert script.stem not in NOT_RUN
