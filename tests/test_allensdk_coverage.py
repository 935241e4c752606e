"""Every public name of AllenSDK 2.16's ``EcephysProjectCache`` and ``EcephysSession``, taken from
the installed AllenSDK itself, exists on ours and is compared with AllenSDK by a test, or is a
deliberate difference with its reason (docs/allensdk-differences.md). A new name in AllenSDK, or a
name that loses its test, fails here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import neuropixels_dask as npd
from neuropixels_dask.session import EcephysSession

ROOT = Path(__file__).resolve().parent.parent

#: run in AllenSDK's environment: dir() of the classes, and the attributes an EcephysSession
#: sets on itself in __init__ (its LazyProperty data: probes, channels, running_speed, …)
NAMES_SCRIPT = """
import inspect, json, re, warnings
warnings.simplefilter("ignore")
from allensdk.brain_observatory.ecephys.ecephys_project_cache import EcephysProjectCache
from allensdk.brain_observatory.ecephys.ecephys_session import EcephysSession
init = inspect.getsource(EcephysSession.__init__)
print(json.dumps({
    "EcephysProjectCache": sorted(n for n in dir(EcephysProjectCache) if not n.startswith("_")),
    "EcephysSession": sorted({n for n in dir(EcephysSession) if not n.startswith("_")}
                             | {n for n in re.findall(r"self\\.(\\w+)\\s*=", init)
                                if not n.startswith("_")}),
}))
"""

PARITY = "tests/test_allensdk_api_parity.py"
EQUIVALENCE = "tests/test_allensdk_equivalence.py"
EXTRAS = "tests/test_allensdk_data_extras.py"

#: names the other half of issue 24 implements (waveforms, amplitudes, optotagging, eye
#: tracking, CSD, analysis metrics, templates), compared with AllenSDK in EXTRAS
DATA_EXTRAS = {
    "EcephysSession": {"mean_waveforms", "spike_amplitudes", "optogenetic_stimulation_epochs",
                       "get_current_source_density", "get_pupil_data",
                       "get_screen_gaze_data"},
    "EcephysProjectCache": {"get_unit_analysis_metrics_by_session_type",
                            "get_unit_analysis_metrics_for_session",
                            "get_natural_scene_template", "get_natural_movie_template"},
}

#: AllenSDK names we do not provide, and why (each is in docs/allensdk-differences.md)
NOT_PROVIDED = {
    "EcephysProjectCache": {
        **dict.fromkeys(
            ["add_manifest_paths", "build_manifest", "cache_csv", "cache_csv_dataframe",
             "cache_csv_json", "cache_json", "cache_json_dataframe", "cacher", "csv_writer",
             "get_cache_path", "json_remove_keys", "json_rename_columns", "load_csv",
             "load_json", "load_manifest", "manifest_dataframe", "nocache_dataframe",
             "nocache_json", "pathfinder", "remove_keys", "rename_columns", "wrap",
             "MANIFEST_VERSION", "SESSION_DIR_KEY", "SESSION_NWB_KEY", "PROBE_LFP_NWB_KEY",
             "NATURAL_MOVIE_DIR_KEY", "NATURAL_MOVIE_KEY", "NATURAL_SCENE_DIR_KEY",
             "NATURAL_SCENE_KEY", "SESSION_ANALYSIS_METRICS_KEY",
             "TYPEWISE_ANALYSIS_METRICS_KEY"],
            "the download cache's plumbing (allensdk.api.warehouse_cache.Cache): nothing is "
            "downloaded, the cache is read where it is"),
        **dict.fromkeys(
            ["fixed", "from_lims", "from_warehouse"],
            "constructors: npd.open_cache(url) is the one line a port changes"),
    },
    "EcephysSession": {
        "api": "AllenSDK's pynwb adaptor object; ours is session.reader (a storage backend)",
        "LazyProperty": "AllenSDK's lazy-attribute helper class, not data",
        "from_nwb_path": "a constructor for one local NWB file: open the cache and call "
                         "get_session_data",
    },
}

#: names compared with AllenSDK by the equivalence test rather than the parity test's recorded
#: calls
COMPARED_ELSEWHERE = {"presentationwise_spike_counts": EQUIVALENCE}


@pytest.fixture(scope="module")
def allensdk_names(allensdk_python) -> dict[str, list[str]]:
    out = subprocess.run([allensdk_python, "-c", NAMES_SCRIPT], check=True, capture_output=True,
                         text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _text(path: str) -> str:
    p = ROOT / path
    return p.read_text() if p.exists() else ""


@pytest.mark.parametrize("cls_name", ["EcephysProjectCache", "EcephysSession"])
def test_every_allensdk_name_is_covered(allensdk_names, cls_name):
    ours = {"EcephysProjectCache": npd.EcephysProjectCache, "EcephysSession": EcephysSession}
    reference = (_text("tests/allensdk/api_reference.py") + _text(PARITY)
                 + _text(EQUIVALENCE) + _text("tests/allensdk/reference.py"))
    extras = _text(EXTRAS)
    missing, untested = [], []
    for name in allensdk_names[cls_name]:
        if name in NOT_PROVIDED[cls_name]:
            continue
        if name in DATA_EXTRAS[cls_name]:
            if name not in extras:
                untested.append(f"{name} (expected in {EXTRAS})")
            if not hasattr(ours[cls_name], name) and name not in _instance_names():
                missing.append(name)
            continue
        if not hasattr(ours[cls_name], name) and name not in _instance_names():
            missing.append(name)
        if name not in reference and name not in COMPARED_ELSEWHERE:
            untested.append(name)
    assert not missing, f"AllenSDK's {cls_name} has {missing}, ours does not"
    assert not untested, f"no test compares {untested} with AllenSDK"


def _instance_names() -> set[str]:
    """Attributes our session sets per instance (none today: all are properties)."""
    return {"ecephys_session_id"}


def test_not_provided_names_are_documented():
    doc = _text("docs/allensdk-differences.md")
    for names in NOT_PROVIDED.values():
        for name in names:
            assert f"`{name}`" in doc, f"{name} is not in docs/allensdk-differences.md"
