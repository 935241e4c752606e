"""The example notebooks run top to bottom against the local S3 server (outputs not committed)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "analysis" / "notebooks"


@pytest.mark.parametrize("name", ["quickstart.ipynb", "scale_out.ipynb"])
def test_notebook_runs(name, s3_server, s3_cache, monkeypatch, tmp_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit notebooks without outputs"
    url, _ = s3_cache
    env = s3_server.env(cache_prefix=url.split("/", 3)[3])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NEUROPIXELS_DASK__CLUSTER__N_WORKERS", "2")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows figures
    client = NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the figures were drawn
    assert os.environ["NEUROPIXELS_DASK__CACHE__URL"].startswith("s3://")
