"""The package as users install it: from its wheel, into a clean environment, outside the
checkout. A plain install is the runtime part only; ``[local]`` adds the local stack, and then
``neuropixels-dask demo`` runs with one command and finds everything it needs in the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
#: what a plain install (the image, a user's `pip install`) must not bring
LOCAL_ONLY = ("moto", "flask", "werkzeug", "jupyterhub", "dask_gateway_server", "pynwb")


def _uv() -> str:
    found = shutil.which("uv") or str(REPO / ".tools" / "uv" / "bin" / "uv")
    assert Path(found).is_file(), "uv not found: ./dev installs it into .tools/uv"
    return found


def _run(cmd: list[str], cwd: Path, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "NEUROPIXELS_", "UV_PROJECT"))}
    return subprocess.run(cmd, cwd=cwd, env={**env, **kw.pop("env", {})}, capture_output=True,
                          text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The wheel built from this checkout, the lock's versions as constraints, and a clean
    folder outside the checkout to run in."""
    work = tmp_path_factory.mktemp("wheel")
    out = _run([_uv(), "build", "--wheel", "--out-dir", str(work / "dist"), str(REPO)], REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (work / "dist").glob("neuropixels_dask-*.whl")
    constraints = work / "constraints.txt"
    out = _run([_uv(), "export", "--frozen", "--no-hashes", "--all-extras", "--no-emit-project",
                "--format", "requirements-txt", "-o", str(constraints)], REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"wheel": wheel, "constraints": constraints, "work": work}


def test_the_wheel_carries_the_chart_and_the_notebooks_and_keeps_extras_apart(built):
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = set(whl.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [Requirement(line.split(":", 1)[1].strip()) for line in
                    whl.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    data = "neuropixels_dask/local/_data"
    for needed in ("chart/Chart.yaml", "chart/values.yaml", "chart/values.schema.json",
                   "chart/templates/_helpers.tpl", "notebooks/quickstart.ipynb"):
        assert f"{data}/{needed}" in names, needed
    assert not any("/charts/" in n for n in names)  # never the downloaded subcharts
    plain = {r.name.lower().replace("-", "_") for r in requires if r.marker is None}
    assert not plain & set(LOCAL_ONLY), sorted(plain & set(LOCAL_ONLY))
    local = {r.name for r in requires if r.marker and r.marker.evaluate({"extra": "local"})}
    assert {"moto", "pynwb", "jupyterhub", "dask-gateway-server"} <= local


def test_installed_from_the_wheel_outside_the_checkout(built):
    """Plain install: no local stack, and the demo says how to get it; with [local], the demo
    runs to the end in a folder that is not the checkout."""
    work, uv = built["work"], _uv()
    venv = work / "venv"
    py = venv / "bin" / "python"
    assert _run([uv, "venv", "--python", sys.executable, str(venv)], work).returncode == 0
    install = [uv, "pip", "install", "--python", str(py), "-c", str(built["constraints"])]
    out = _run([*install, str(built["wheel"])], work)
    assert out.returncode == 0, out.stderr[-3000:]
    probe = ("import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) "
             f"is not None for m in {LOCAL_ONLY!r}}}))")
    found = _run([str(py), "-c", probe], work)
    assert found.stdout.strip() and "true" not in found.stdout, found.stdout + found.stderr
    demo = [str(venv / "bin" / "neuropixels-dask"), "demo", "--preset", "tiny",
            "--out", str(work / "report"), "--data-dir", str(work / "data")]
    refused = _run(demo, work)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "pip install 'neuropixels-dask[local]'" in refused.stderr

    out = _run([*install, f"{built['wheel']}[local]"], work)
    assert out.returncode == 0, out.stderr[-3000:]
    ran = _run(demo, work, timeout=900)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-4000:]
    assert (work / "report" / "report.md").is_file(), sorted(os.listdir(work / "report"))
    where = _run([str(py), "-c", "import neuropixels_dask.local.resources as r; "
                  "print(r.chart_dir()); print(r.notebooks_dir())"], work)
    assert str(REPO) not in where.stdout and "site-packages" in where.stdout, where.stdout
