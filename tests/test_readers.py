"""Formats are registered, not branched: the registry finds a format's module by name, a cache's
manifest names its format, and an unknown format is an error, never a silent guess."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import neuropixels_dask as npd
from neuropixels_dask import readers
from neuropixels_dask.errors import InvalidFileError
from neuropixels_dask.readers import LFPSource
from neuropixels_dask.tasks.lfp import lfp_dask_array

MANIFEST = {"manifest": [{"type": "manifest_version", "value": "0.3.0"},
                         {"key": "session_data", "type": "dir", "spec": "session_%d"},
                         {"key": "session_nwb", "type": "file", "spec": "session_%d.nwb"}]}


def test_the_two_formats_are_registered():
    assert list(readers.BACKENDS) == ["zarr", "nwb"]
    assert readers.backend("nwb").__name__ == "neuropixels_dask.readers.nwb"
    assert readers.backend("zarr").__name__ == "neuropixels_dask.readers.zarr"


def test_the_manifest_names_the_format():
    assert readers.format_of_manifest(MANIFEST, "s3://b/c") == "nwb"
    converted = {"manifest": [*MANIFEST["manifest"], {"key": "session_zarr", "type": "dir"}]}
    assert readers.format_of_manifest(converted, "s3://b/c") == "zarr"
    with pytest.raises(InvalidFileError, match="lists no session files.*session_nwb"):
        readers.format_of_manifest({"manifest": [{"key": "sessions"}]}, "s3://b/c")


def test_an_unknown_format_is_an_error_not_nwb():
    src = LFPSource("hdf6", "s3://b/x", {}, "d", "t", (10, 2), (10, 2), "<f4")
    with pytest.raises(InvalidFileError, match="Unknown storage format 'hdf6'.*nwb"):
        readers.read_lfp_block(src, 0, 10, np.arange(2))


def test_a_cache_with_a_foreign_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"manifest": [{"key": "sessions"}]}')
    with pytest.raises(InvalidFileError, match="lists no session files"):
        npd.open_cache(str(tmp_path)).format  # noqa: B018


def test_a_registered_format_serves_the_task_layer(tmp_path, monkeypatch):
    """Adding a format touches nothing else: register a module, and LFP graphs read through it."""
    (tmp_path / "toy_format.py").write_text(textwrap.dedent("""
        import numpy as np

        def read_lfp_block(src, i0, i1, cols):
            return (np.arange(i0, i1)[:, None] * 10 + np.asarray(cols)[None, :]).astype("f4")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(readers.BACKENDS, "toy", readers.Backend("toy", "toy_format", "session_toy"))
    src = LFPSource("toy", "mem://toy", {}, "d", "t", (25, 3), (10, 3), "<f4")
    got = lfp_dask_array(src, 3, 22, np.array([2, 0])).compute(scheduler="sync")
    expected = (np.arange(3, 22)[:, None] * 10 + np.array([2, 0])[None, :]).astype("f4")
    np.testing.assert_array_equal(got, expected)
    sys.modules.pop("toy_format", None)
