"""Where the local stack finds the Helm chart and the example notebooks.

They ship inside the package (``_data/chart``, ``_data/notebooks``; see ``setup.py``), so an
installed wheel has them; an explicit path (an argument, or ``NEUROPIXELS_HUB_CHART`` /
``NEUROPIXELS_HUB_NOTEBOOKS``) overrides them, for instance to run ``hub local`` with an
operator's modified chart. Nothing here looks at a source checkout's layout.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..errors import NeuropixelsDaskError

CHART_ENV = "NEUROPIXELS_HUB_CHART"
NOTEBOOKS_ENV = "NEUROPIXELS_HUB_NOTEBOOKS"


class ResourceMissing(NeuropixelsDaskError, FileNotFoundError):
    """The chart or the notebooks are neither at the given path nor in the package."""


def _packaged(name: str) -> Path:
    return Path(str(resources.files("neuropixels_dask.local") / "_data" / name))


def chart_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The Helm chart: ``explicit``, else ``$NEUROPIXELS_HUB_CHART``, else the packaged copy."""
    chart = Path(explicit or os.environ.get(CHART_ENV) or _packaged("chart"))
    if not (chart / "values.yaml").is_file() or not (chart / "Chart.yaml").is_file():
        raise ResourceMissing(
            f"No Helm chart at {chart} (no values.yaml / Chart.yaml). Pass the chart's folder "
            f"(--chart PATH or {CHART_ENV}=PATH, e.g. helm/neuropixels-hub of the repository), "
            "or reinstall neuropixels-dask: its wheel carries the chart.")
    return chart


def notebooks_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The example notebooks: ``explicit``, else ``$NEUROPIXELS_HUB_NOTEBOOKS``, else the
    packaged copy."""
    path = Path(explicit or os.environ.get(NOTEBOOKS_ENV) or _packaged("notebooks"))
    if not path.is_dir() or not any(path.glob("*.ipynb")):
        raise ResourceMissing(
            f"No example notebooks (*.ipynb) in {path}. Pass their folder ({NOTEBOOKS_ENV}=PATH, "
            "e.g. analysis/notebooks of the repository), or reinstall neuropixels-dask: its "
            "wheel carries them.")
    return path
