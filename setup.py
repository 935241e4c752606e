"""Package data from outside the package: the Helm chart and the example notebooks.

``neuropixels-dask hub local`` configures itself from the chart's own values, templates and
snippets, and seeds home folders with the example notebooks, exactly as the image does. Those
files live where their users look for them (``helm/neuropixels-hub``, ``analysis/notebooks``);
this build step puts them into the package as ``neuropixels_dask/local/_data/{chart,notebooks}``:
copied into wheels, symlinked for editable installs (so an edit of the chart is seen at once).
Everything else about the project is in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: (source in the repository, name under neuropixels_dask/local/_data, files to leave out)
DATA = (
    ("helm/neuropixels-hub", "chart", ("charts", "Chart.lock", ".helmignore")),
    ("analysis/notebooks", "notebooks", (".ipynb_checkpoints",)),
)
PACKAGE_DATA = Path("neuropixels_dask", "local", "_data")


class BuildPyWithData(build_py):
    """``build_py`` that also lays out ``neuropixels_dask/local/_data``."""

    def run(self) -> None:
        super().run()
        editable = getattr(self, "editable_mode", False)
        base = ROOT / "analysis" if editable else Path(self.build_lib)
        for src, name, skip in DATA:
            dest = base / PACKAGE_DATA / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink() or dest.is_file():
                dest.unlink()
            elif dest.exists():
                shutil.rmtree(dest)
            if editable:
                os.symlink(os.path.relpath(ROOT / src, dest.parent), dest)
            else:
                shutil.copytree(ROOT / src, dest, ignore=shutil.ignore_patterns(*skip))


setup(cmdclass={"build_py": BuildPyWithData})
