"""values.schema.json: typos and wrong types fail at `helm install` with the key named, every key
of values.yaml is typed and commented, and helm lint is clean."""

from __future__ import annotations

import json
import re

import pytest
import yaml

SUBCHARTS = ("jupyterhub", "dask-gateway")


@pytest.mark.parametrize("setting,message", [
    # typos, at several depths
    ("imgae.tag=1", "at '': additional properties 'imgae' not allowed"),
    ("cache.ulr=s3://x/", "at '/cache': additional properties 'ulr' not allowed"),
    ("s3.endpoint=http://x", "at '/s3': additional properties 'endpoint' not allowed"),
    ("dask.worker.cores.maximum=8", "at '/dask/worker/cores': additional properties 'maximum'"),
    ("dask.limits.maxWorkers=3", "at '/dask/limits': additional properties 'maxWorkers'"),
    ("credentials.secretName=x", "at '/credentials': additional properties 'secretName'"),
    ("networkPolicy.enable=false", "at '/networkPolicy': additional properties 'enable'"),
    ("securityContext.pod.runAsUsr=1", "at '/securityContext/pod': additional properties"),
    # wrong types and values
    ("s3.anon=maybe", "at '/s3/anon': got string, want boolean"),
    ("dask.limits.maxWorkersPerCluster=1.5", "at '/dask/limits/maxWorkersPerCluster'"),
    ("dask.idleTimeout=-1", "at '/dask/idleTimeout'"),
    ("dask.worker.memory.max=0", "at '/dask/worker/memory/max'"),
    ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
    ("image.tag=", "at '/image/tag'"),
    ("cache.url=allen-brain-observatory/ecephys-cache", "at '/cache/url'"),
    ("s3.endpointUrl=minio:9000", "at '/s3/endpointUrl'"),
    ("credentials.existingSecret=Not_A_Name", "at '/credentials/existingSecret'"),
    ("dask.worker.tolerations[0].operator=Sometimes", "at '/dask/worker/tolerations/0/operator'"),
    ("networkPolicy.s3Egress.ports[0].protocol=HTTP",
     "at '/networkPolicy/s3Egress/ports/0/protocol'"),
])
def test_schema_rejects_with_the_key_named(helm, setting, message):
    stderr = helm.template_error(sets=[setting])
    assert "values don't meet the specifications of the schema" in stderr
    assert message in stderr, stderr


@pytest.mark.parametrize("settings,message", [
    (["credentials.existingSecret=s3-keys"],
     "credentials.existingSecret is set but s3.anon is true"),
    (["dask.worker.cores.default=8"],
     "dask.worker.cores.default (8) must lie between dask.worker.cores.min (0.5) and "
     "dask.worker.cores.max (4)"),
    (["json:dask.worker.memory.default=0.5"], "dask.worker.memory.default (0.5) must lie between"),
    (["dask.worker.cores.max=200", "dask.worker.cores.default=1"],
     "dask.worker.cores.max (200) exceeds dask.limits.maxCoresPerCluster (100)"),
    (["dask.worker.memory.max=500"], "dask.worker.memory.max (500) exceeds"),
    (["dask.scheduler.cores=100"], "dask.scheduler.cores plus one smallest worker exceed"),
    (["json:dask.scheduler.memory=399.5"], "dask.scheduler.memory plus one smallest worker exceed"),
    (["jupyterhub.fullnameOverride=myhub"], "jupyterhub.fullnameOverride must stay empty"),
    (["dask-gateway.gateway.prefix=/gateway"],
     "dask-gateway.gateway.prefix must be /services/dask-gateway"),
])
def test_combinations_the_schema_cannot_express_fail_clearly(helm, settings, message):
    assert message in helm.template_error(sets=settings)


def test_install_dry_run_fails_on_a_typo(helm):
    """The operator's path: `helm install --dry-run` (no cluster needed) names the key."""
    out = helm.run("install", "hub", str(helm.chart), "--dry-run=client",
                   "--set", "dask.limts.maxClustersPerUser=1")
    assert out.returncode != 0
    assert "at '/dask': additional properties 'limts' not allowed" in out.stderr


def test_subchart_keys_pass_through(helm):
    """Our schema leaves jupyterhub/dask-gateway keys to the subcharts' own schemas."""
    helm.template(sets=["jupyterhub.hub.config.JupyterHub.admin_access=true",
                        "dask-gateway.gateway.loglevel=DEBUG"])


def test_helm_lint_strict(helm, kit):
    for files in ([kit.LOGIN], *[kit.with_login([f]) for f in sorted(
            {f for fs in kit.VALUE_SETS.values() for f in fs})]):
        args = ["lint", "--strict", str(helm.chart)]
        for file in files:
            args += ["--values", str(kit.EXAMPLES / file)]
        out = helm.run(*args)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "0 chart(s) failed" in out.stdout


def _leaf_paths(values: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}/{key}"
        if isinstance(value, dict) and value:
            paths += _leaf_paths(value, path)
        else:
            paths.append(path)
    return paths


def _schema_at(schema: dict, path: str, root: dict) -> dict | None:
    node = schema
    for part in path.strip("/").split("/"):
        if "$ref" in node:
            node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            # A map's entry (a label, whose key may hold "/"): the rest of the path is its key.
            return node["additionalProperties"]
        else:
            return None
    return node


def test_every_value_is_typed_and_every_schema_key_has_a_default(kit):
    schema = json.loads((kit.CHART / "values.schema.json").read_text())
    values = yaml.safe_load((kit.CHART / "values.yaml").read_text())
    ours = {k: v for k, v in values.items() if k not in SUBCHARTS}
    missing = [p for p in _leaf_paths(ours) if _schema_at(schema, p, schema) is None]
    assert missing == []
    # The reverse: each of our typed keys has a documented default in values.yaml.
    assert set(schema["required"]) <= set(ours)
    for key in ours:
        assert key in schema["properties"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["jupyterhub"] == {"type": "object", "description": schema[
        "properties"]["jupyterhub"]["description"]}


def test_every_key_in_values_yaml_is_commented(kit):
    """A key needs a comment on the line(s) just above it (list items and literal blocks are
    part of their commented parent)."""
    lines = (kit.CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    block_indent = None  # inside a `|` literal block
    list_indent = None  # inside a list item
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if block_indent is not None:
            if stripped and indent <= block_indent:
                block_indent = None
            else:
                continue
        if list_indent is not None:
            if stripped and indent <= list_indent and not stripped.startswith("- "):
                list_indent = None
            else:
                continue
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("- "):
            list_indent = indent
            continue
        match = re.match(r"([\w./-]+):", stripped)
        if not match:
            continue
        if stripped.rstrip().endswith("|"):
            block_indent = indent
        previous = lines[i - 1].strip() if i else ""
        if not previous.startswith("#") and "#" not in stripped:
            uncommented.append(f"line {i + 1}: {stripped}")
    assert uncommented == []
