"""What uv.lock installs on Linux for a given CPython: the versions the image must have and that
environment.yml pins (tests/image, tests/chart/test_chart_image_pins.py).

The lock is universal (several versions of a package under different markers): ``uv export``
writes them all with their markers, and this evaluates the markers as the image's pip would.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".tools" / "uv" / "bin" / "uv"
#: the lock's extras that the image installs (images/notebook/Dockerfile's `uv export`)
IMAGE_EXTRAS = ("notebook",)


@functools.cache
def locked(python: str, extras: tuple[str, ...] = IMAGE_EXTRAS) -> dict[str, str]:
    """``{canonical name: version}`` that uv.lock selects for Linux and CPython ``python``
    (``"3.11.7"``): the package's dependencies and ``extras``, not the package itself."""
    export = subprocess.run(
        [str(UV), "export", "--frozen", "--no-dev", *(f"--extra={e}" for e in extras),
         "--no-emit-project", "--format", "requirements-txt", "--no-hashes", "--no-header",
         "--no-annotate"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60).stdout
    env = {"python_full_version": python, "python_version": python.rsplit(".", 1)[0],
           "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
           "platform_machine": os.uname().machine, "implementation_name": "cpython",
           "platform_python_implementation": "CPython"}
    versions = {}
    for line in export.splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                (pin,) = req.specifier
                versions[canonicalize_name(req.name)] = pin.version
    return versions
