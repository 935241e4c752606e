"""Every object our templates render, and every pod the hub and the gateway would create from our
settings, validates strictly against the Kubernetes API models of the `kubernetes` Python client
(generated from the Kubernetes OpenAPI spec): unknown fields, wrong types and missing required
fields are errors. `kubectl --validate=strict` would need a live API server; this needs none.
"""

from __future__ import annotations

import re

import kubernetes.client
import pytest
from kubernetes.client import ApiClient

ALL_SETS = ["defaults", "secret-credentials", "iam-role", "custom-endpoint", "profiles",
            "spot-workers"]
PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool}


def model_for(api_version: str, kind: str) -> str:
    """`networking.k8s.io/v1` + `NetworkPolicy` -> `V1NetworkPolicy`."""
    version = api_version.rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + kind


def strict_problems(value, type_name: str, path: str) -> list[str]:
    """Unknown fields and wrong types, recursively, by the client's openapi_types."""
    if type_name == "object":  # IntOrString, Quantity, RawExtension: any JSON value
        return []
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and not (
            type_name in ("int", "float") and isinstance(value, bool))
        return [] if ok else [f"{path}: {value!r} is not {type_name}"]
    if type_name == "datetime":
        return [] if isinstance(value, str) else [f"{path}: not a timestamp"]
    if m := re.fullmatch(r"[Ll]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value)
                for p in strict_problems(item, m.group(1), f"{path}[{i}]")]
    if m := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        inner = m.group(1) or m.group(2)
        if path.endswith((".limits", ".requests")):
            # resource.Quantity: the client types it str, the API also takes JSON numbers.
            inner = "object" if all(
                isinstance(v, (str, int, float)) and not isinstance(v, bool)
                for v in value.values()) else inner
        return [p for k, item in value.items()
                for p in strict_problems(item, inner, f"{path}.{k}")]
    model = getattr(kubernetes.client, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} object"]
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in by_json:
            problems.append(f"{path}.{key}: unknown field of {type_name}")
        elif item is not None:
            problems += strict_problems(item, model.openapi_types[by_json[key]], f"{path}.{key}")
    return problems


def quantities_as_strings(value):
    """JSON numbers in resources.limits/requests as the strings the client's models expect."""
    if isinstance(value, list):
        return [quantities_as_strings(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: quantities_as_strings(v) for k, v in value.items()}
    for key in ("limits", "requests"):
        if isinstance(out.get(key), dict):
            out[key] = {k: v if isinstance(v, str) else str(v) for k, v in out[key].items()}
    return out


def validate(obj: dict) -> list[str]:
    """Strict walk, then the client's own deserialization (required fields, enums it checks)."""
    name = model_for(obj["apiVersion"], obj["kind"])
    problems = strict_problems(obj, name, f"{obj['kind']}/{obj['metadata'].get('name', '?')}")
    if not problems:
        try:
            ApiClient()._ApiClient__deserialize(quantities_as_strings(obj), name)
        except (ValueError, TypeError) as err:
            problems.append(f"{obj['kind']}: {err}")
    return problems


def test_validator_rejects_unknown_fields_and_wrong_types():
    """The check is not vacuous."""
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "x"},
              "spec": {"podSelector": {"matchLabel": {"a": "b"}}, "policyTypes": "Ingress"}}
    assert validate(policy) == [
        "NetworkPolicy/x.spec.podSelector.matchLabel: unknown field of V1LabelSelector",
        "NetworkPolicy/x.spec.policyTypes: expected a list",
    ]
    missing = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"image": "x"}]}}
    assert any("name" in p for p in validate(missing))
    assert validate({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"},
                     "automountServiceAccountToken": "no"}) == [
        "ServiceAccount/s.automountServiceAccountToken: 'no' is not bool"]


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_rendered_objects_are_valid(render, value_set):
    objects = render(value_set)
    assert objects
    for obj in objects:
        assert validate(obj) == [], obj["metadata"]["name"]


@pytest.mark.parametrize("value_set", ["defaults", "secret-credentials", "iam-role",
                                       "spot-workers"])
def test_generated_pods_are_valid(kit, hub_for, gateway_for, value_set):
    for role, pod in kit.generated_pods(hub_for, gateway_for, value_set).items():
        pod = dict(pod, metadata=dict(pod["metadata"], name=pod["metadata"].get("name", role)))
        assert validate(pod) == [], role
