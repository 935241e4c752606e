"""Kubernetes security scan (checkov) of what the chart puts on a cluster: our rendered objects
under every value set, and the notebook, scheduler and worker pods that the hub and the gateway
create from our settings (with our NetworkPolicies beside them, for the graph checks).

checkov is installed once into .tools/checkov (git-ignored; its pinned dependencies would clash
with the project's, so it gets its own virtual environment). Our own templates pass every check.
The generated pods fail only the checks listed in ACCEPTED, each with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CHECKOV_VERSION = "3.3.30"
ALL_SETS = ["defaults", "secret-credentials", "iam-role", "custom-endpoint", "profiles",
            "spot-workers", "github-oauth", "https"]
POD_SETS = ["secret-credentials", "spot-workers"]

#: Checks the generated pods do not pass, and why that is the right trade-off here.
ACCEPTED = {
    "CKV_K8S_8": "Liveness probes: JupyterHub polls notebook servers itself and culls dead ones; "
                 "a worker's nanny restarts a dead worker process, and the scheduler watches "
                 "workers. A probe that restarts a busy worker would lose its in-memory results.",
    "CKV_K8S_9": "Readiness probes: notebooks and workers receive no Service traffic (the "
                 "scheduler, which does, has one from dask-gateway).",
    "CKV_K8S_15": "imagePullPolicy IfNotPresent: image tags are immutable releases; pulling on "
                  "every start of hundreds of workers would only add registry load and latency.",
    "CKV_K8S_22": "Writable root filesystem: notebooks install packages and write caches "
                  "(pip --user, matplotlib, dask config); workers spill to local disk.",
    "CKV_K8S_35": "Secrets as environment variables: AWS SDKs and s3fs read AWS_ACCESS_KEY_ID/"
                  "AWS_SECRET_ACCESS_KEY from the environment, on notebooks and workers alike; "
                  "they come by secretKeyRef and never appear in values or ConfigMaps.",
    "CKV_K8S_40": "UID 1000: the Jupyter convention (jupyterhub chart's singleuser.uid, docker-"
                  "stacks' jovyan) that home volumes are owned by; it is non-root all the same.",
    "CKV_K8S_43": "Tags by default: the chart's one `image` value is name + tag so that "
                  "notebooks and workers are upgraded together; operators pin the build with "
                  "`tag: <tag>@sha256:<digest>` (the schema accepts it).",
}

#: Checks that must have run and passed on every generated pod (the scan is not vacuous).
REQUIRED_PASSES = {
    "CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13",  # cpu/memory requests and limits
    "CKV_K8S_16",  # not privileged
    "CKV_K8S_20",  # allowPrivilegeEscalation false
    "CKV_K8S_23",  # not root
    "CKV_K8S_28", "CKV_K8S_37",  # capabilities dropped
    "CKV_K8S_29",  # securityContext set
    "CKV_K8S_31",  # seccomp RuntimeDefault
    "CKV_K8S_38",  # no service account token
    "CKV2_K8S_6",  # selected by a NetworkPolicy
}


def checkov_bin(repo: Path) -> str:
    """checkov on PATH, else in .tools/checkov, else installed there now (~30 s, once)."""
    found = shutil.which("checkov")
    if found:
        return found
    venv = repo / ".tools" / "checkov"
    binary = venv / "bin" / "checkov"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                        f"checkov=={CHECKOV_VERSION}"], check=True, timeout=600)
    return str(binary)


@pytest.fixture(scope="module")
def checkov(kit) -> str:
    return checkov_bin(kit.REPO)


def run_checkov(binary: str, directory: Path) -> dict:
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
    out = subprocess.run([binary, "--directory", str(directory), "--framework", "kubernetes",
                          "--output", "json", "--compact", "--skip-download"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.strip(), out.stderr
    report = json.loads(out.stdout)
    return report if isinstance(report, dict) else {"results": {"failed_checks": [],
                                                                 "passed_checks": []}}


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkov")


def test_checkov(kit, render, checkov, scan_dir):
    ours = set()
    for value_set in ALL_SETS:
        objects = render(value_set)
        (scan_dir / f"{value_set}.yaml").write_text(yaml.safe_dump_all(objects))
        ours |= {(o["kind"], o["metadata"]["name"]) for o in objects}
    generated = []
    for value_set in POD_SETS:
        for role, pod in kit.generated_pods(value_set).items():
            pod = json.loads(json.dumps(pod))
            pod["metadata"]["namespace"] = kit.NAMESPACE  # set by the API call that creates it
            pod["metadata"]["name"] = f"{value_set}-{role}"
            generated.append(pod)
    (scan_dir / "generated-pods.yaml").write_text(yaml.safe_dump_all(generated))

    report = run_checkov(checkov, scan_dir)
    failed = report["results"]["failed_checks"]
    passed = report["results"]["passed_checks"]
    assert passed, "checkov ran no check"

    def kind_name(check):  # checkov resource ids look like Kind.namespace.name
        kind, _, rest = check["resource"].partition(".")
        return kind, rest.partition(".")[2]

    ours_failed = [f"{c['check_id']} {c['resource']}" for c in failed if kind_name(c) in ours]
    assert ours_failed == [], "our templates must pass every check"
    unexplained = [f"{c['check_id']} ({c['check_name']}) {c['resource']}" for c in failed
                   if kind_name(c) not in ours and c["check_id"] not in ACCEPTED]
    assert unexplained == []

    for pod in generated:
        name = pod["metadata"]["name"]
        ran = {c["check_id"] for c in passed if kind_name(c) == ("Pod", name)}
        assert ran >= REQUIRED_PASSES, (name, sorted(REQUIRED_PASSES - ran))


def test_no_secret_values_anywhere(kit, render):
    """Credentials can only be referenced: the schema has no field for key material, the chart
    renders no Secret, and the settings ConfigMap holds Secret names and keys only."""
    schema = json.loads((kit.CHART / "values.schema.json").read_text())
    credentials = schema["properties"]["credentials"]
    assert set(credentials["properties"]) == {"existingSecret", "keys"}
    assert credentials["additionalProperties"] is False
    for value_set in ALL_SETS:
        objects = render(value_set)
        assert not kit.find(objects, "Secret")
        settings = json.loads(kit.settings_json(objects))
        for ref in settings["secretEnv"].values():
            assert set(ref) == {"name", "key"}
