"""What ``import neuropixels_dask`` costs and loads: the runtime part stays the data path.

Notebooks and every Dask worker import the package; an import that dragged in an S3 server, a
web framework, JupyterHub or a plotting library would cost every worker start and ship the
local stack's dependencies in the image. Measured in a fresh interpreter each time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: never loaded by the runtime part (the local stack's and the notebook's packages)
FORBIDDEN = ("moto", "flask", "werkzeug", "jupyterhub", "dask_gateway_server", "matplotlib",
             "pynwb", "hdmf", "tornado.web")
#: loaded only when a public name is first used (the public API is lazy, PEP 562)
SCIENCE_STACK = ("numpy", "pandas", "xarray", "h5py", "zarr", "scipy", "s3fs")

PROBE = """
import atexit, json, logging, sys, time
exec(sys.argv[2])
before = set(sys.modules)
callbacks = atexit._ncallbacks()
t0 = time.perf_counter()
exec(sys.argv[1])
seconds = time.perf_counter() - t0
import fsspec.caching
print(json.dumps({
    "seconds": seconds,
    "modules": sorted(set(sys.modules) - before),
    "atexit": atexit._ncallbacks() - callbacks,
    "fsspec_caches": sorted(str(k) for k in fsspec.caching.caches),
    "botocore_levels": {n: logging.getLogger(n).level for n in
                        ("botocore.retries.standard", "botocore.retryhandler", "s3fs")},
}))
"""


def probe(statement: str, before: str = "") -> dict:
    """What ``statement`` imports and changes in a fresh interpreter (after ``before``)."""
    out = subprocess.run([sys.executable, "-c", PROBE, statement, before], capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def top_level(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_import_loads_only_config(record_property):
    got = probe("import neuropixels_dask")
    loaded = top_level(got["modules"])
    record_property("import_seconds", round(got["seconds"], 3))
    record_property("import_modules", len(got["modules"]))
    print(f"\nimport neuropixels_dask: {got['seconds']:.3f} s, {len(got['modules'])} modules: "
          f"{sorted(loaded)}")
    assert not loaded & {f.split(".")[0] for f in FORBIDDEN}, sorted(loaded)
    assert not loaded & set(SCIENCE_STACK), sorted(loaded & set(SCIENCE_STACK))
    assert "neuropixels_dask.config" in got["modules"]  # the Dask config defaults are there


def test_import_has_no_side_effects():
    """No atexit hook, no fsspec cache registered, no logger levels changed by importing the
    data path; those happen on first use, as the modules declare."""
    # the libraries underneath register their own exit hooks when imported: import them first
    libraries = "import dask.array, distributed, fsspec, h5py, numpy, pandas, s3fs, xarray, zarr"
    got = probe("import neuropixels_dask, neuropixels_dask.storage, neuropixels_dask.readers.nwb,"
                " neuropixels_dask.readers.zarr, neuropixels_dask.session", before=libraries)
    assert got["atexit"] == 0
    assert "hdf5blocks" not in got["fsspec_caches"]
    assert set(got["botocore_levels"].values()) == {0}


@pytest.mark.parametrize("statement", [
    "import neuropixels_dask as npd; npd.open_cache; npd.get_client; npd.EcephysSession",
    "import neuropixels_dask.analyses, neuropixels_dask.convert, neuropixels_dask.cli",
])
def test_the_api_loads_no_local_stack_nor_plotting(statement):
    loaded = top_level(probe(statement)["modules"])
    assert not loaded & {f.split(".")[0] for f in FORBIDDEN}, sorted(loaded)


def test_server_processes_do_not_load_the_science_stack():
    """The proxy's own process imports its module only (``python -m ...local.child``)."""
    loaded = top_level(probe("import neuropixels_dask.local.s3proxy, "
                             "neuropixels_dask.local.hub.serverconfig")["modules"])
    assert not loaded & set(SCIENCE_STACK), sorted(loaded & set(SCIENCE_STACK))
