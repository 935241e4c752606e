"""The one image (images/notebook/Dockerfile), built from this checkout and run: what the hub runs
in notebook, scheduler and worker pods works there, with the locked versions, as the chart's uid.

Built once per run with scripts/image.sh (buildah; the base made by debootstrap where no registry
is reachable), run with podman and runc. Host networking: the containers reach the host's local S3
server and each other on 127.0.0.1, as pods reach services.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.utils import canonicalize_name
from plugins.lock import locked
from test_import import FORBIDDEN, PROBE, SCIENCE_STACK, top_level

# a cold build (debootstrap, then the locked environment from PyPI) takes minutes, and it runs
# in the setup of this module's first test: the suite's 300 s per test would cut it short
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
IMAGE_SH = REPO / "scripts" / "image.sh"
#: what podman needs here: runc (crun fails on our CI's cgroups) and limits it can set unprivileged
RUN = ("run", "--rm", "--runtime", "runc", "--network", "host",
       "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=2048:2048")


def image_sh(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(IMAGE_SH), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def image() -> str:
    """``name:tag`` of the image built from this checkout (layers cached in .cache/image)."""
    subprocess.run(["bash", str(REPO / "scripts" / "install-podman.sh")], check=True,
                   timeout=600)
    built = image_sh("build", timeout=1800)
    assert built.returncode == 0, built.stdout + built.stderr
    print("\n" + built.stdout)
    ref = f"{image_sh('name').stdout.strip()}:{image_sh('tag').stdout.strip()}"
    assert f"built {ref}" in built.stdout
    # what `./dev image` promises to print
    assert re.search(r"^size +\d+ MB", built.stdout, flags=re.M), built.stdout
    assert re.search(r"^digest sha256:[0-9a-f]{64}$", built.stdout, flags=re.M), built.stdout
    return ref


def run(image: str, *command: str, options: tuple[str, ...] = (),
        timeout: float = 300) -> subprocess.CompletedProcess:
    """``command`` in a fresh container of ``image``; its output, or a failure that shows it."""
    done = image_sh("podman", *RUN, *options, image, *command, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


INSPECT = """
import importlib.metadata as md, json, os, platform, subprocess
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "home": os.environ["HOME"],
    "python": platform.python_version(),
    "dists": {d.metadata["Name"]: d.version for d in md.distributions()},
    "singleuser": subprocess.run(["jupyterhub-singleuser", "--version"], capture_output=True,
                                 text=True, check=True).stdout.strip(),
    "notebooks": sorted(os.listdir(os.environ["NEUROPIXELS_HUB_NOTEBOOKS"])),
}))
"""


@pytest.fixture(scope="module")
def inside(image) -> dict:
    return json.loads(run(image, "python", "-c", INSPECT).stdout)


def test_runs_as_the_charts_user_not_root(inside):
    values = yaml.safe_load((REPO / "helm" / "neuropixels-hub" / "values.yaml").read_text())
    pod = values["securityContext"]["pod"]
    assert (inside["uid"], inside["gid"]) == (pod["runAsUser"], pod["runAsGroup"]) != (0, 0)
    assert inside["home"] == "/home/jovyan"


def test_has_exactly_the_locked_versions(inside):
    """Every distribution is the one uv.lock selects for the image's Python, nothing more: no
    compiler, no test extra, no build tool (pip, setuptools, uv stay in the build stage)."""
    assert inside["python"].startswith(
        ".".join(map(str, sys.version_info[:2])) + ".")  # the tests' Python
    if Path("/usr/bin/python3.11").exists() and "VERSION_CODENAME=bookworm" in Path(
            "/etc/os-release").read_text():
        # ./dev builds the test environment on bookworm's interpreter, the image's (CI's case)
        assert inside["python"] == platform.python_version(), "tests and image differ in Python"
    got = {canonicalize_name(name): version for name, version in inside["dists"].items()}
    expected = locked(inside["python"])
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(),
                        flags=re.M).group(1)
    expected["neuropixels-dask"] = version
    assert got == expected


def test_jupyterhub_singleuser_is_the_locked_one(inside):
    assert inside["singleuser"] == locked(inside["python"])["jupyterhub"]
    assert "quickstart.ipynb" in inside["notebooks"]  # for the chart's postStart hook


def test_import_is_lean(image):
    """tests/test_import.py's check, in the image: importing the package loads no science stack,
    local stack or plotting."""
    got = json.loads(run(image, "python", "-c", PROBE, "import neuropixels_dask", "").stdout)
    loaded = top_level(got["modules"])
    assert "neuropixels_dask.config" in got["modules"]
    assert not loaded & {f.split(".")[0] for f in FORBIDDEN}, sorted(loaded)
    assert not loaded & set(SCIENCE_STACK), sorted(loaded & set(SCIENCE_STACK))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_scheduler_and_worker_in_two_containers(image):
    """`dask scheduler` and `dask worker` as dask-gateway starts them, each in its own container;
    the worker finds the scheduler and computes what a client on the host sends."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    names = [f"npd-test-{kind}-{os.getpid()}" for kind in ("scheduler", "worker")]
    commands = [("dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--dashboard-address", "127.0.0.1:0"),
                ("dask", "worker", address, "--nthreads", "1", "--no-dashboard",
                 "--name", "in-a-container")]
    procs = [subprocess.Popen(["bash", str(IMAGE_SH), "podman", *RUN, "--name", name, image,
                               *command], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for name, command in zip(names, commands, strict=True)]
    try:
        with Client(address, timeout=120) as client:
            client.wait_for_workers(1, timeout=180)
            (worker,) = client.scheduler_info()["workers"].values()
            assert worker["name"] == "in-a-container"
            where = client.submit(lambda: (sys.executable, os.getuid()), pure=False)
            assert where.result(timeout=60) == ("/opt/venv/bin/python", 1000)
    finally:
        for name in reversed(names):
            image_sh("podman", "stop", "--time", "5", name, timeout=120)
        logs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert "Registered to" in logs[1], logs[1]


def test_quickstart_notebook_in_the_container(image, s3_server, s3_cache, tmp_path):
    """The quickstart notebook, executed by the image's own Jupyter against the host's S3 server:
    no error, and its figures in the output."""
    url, _ = s3_cache
    env = s3_server.env(cache_prefix=url.split("/", 3)[3])
    env["NEUROPIXELS_DASK__CLUSTER__N_WORKERS"] = "2"
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # written by the container's uid 1000
    options = (*(f"--env={key}={value}" for key, value in env.items()),
               "--volume", f"{out}:/out")
    started = time.monotonic()
    # run from a copy in a writable folder, as users run it from their home
    run(image, "sh", "-c", "cp $NEUROPIXELS_HUB_NOTEBOOKS/quickstart.ipynb /out/ && jupyter "
        "nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=240 "
        "/out/quickstart.ipynb", options=options, timeout=600)
    print(f"\nquickstart.ipynb in the container: {time.monotonic() - started:.0f} s")
    nb = nbformat.read(out / "quickstart.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= 2
