"""The AllenSDK 2.16.2 reference environment (``scripts/install-allensdk.sh``), for the tests
that compare ``neuropixels_dask`` with AllenSDK itself on the same files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = ROOT / ".tools" / "allensdk"


@pytest.fixture(scope="session")
def allensdk_python() -> str:
    """Path of the reference environment's python; installed here if missing (never skipped)."""
    if not (ENV / "bin" / "python").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install-allensdk.sh"), str(ENV)],
                       check=True)
    return str(ENV / "bin" / "python")
