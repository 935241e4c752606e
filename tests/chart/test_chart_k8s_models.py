"""Every object the chart renders (ours and the real subcharts', hooks included), and every pod the
hub and the gateway would create from our settings, validates strictly: built-in kinds against
the API models of the `kubernetes` Python client (generated from the Kubernetes OpenAPI spec),
custom resources (traefik's IngressRoute, Middleware; the DaskCluster) against the CRDs the
dask-gateway chart ships. Unknown fields, wrong types and missing required fields are errors, as
with `kubectl --validate=strict`, which would need a live API server; this needs none. The
validator itself lives in the chart kit (tests/plugins/chart.py).
"""

from __future__ import annotations


def validate(kit, obj: dict) -> list[str]:
    return kit.strict_problems(obj)


def test_validator_rejects_unknown_fields_and_wrong_types(kit):
    """The check is not vacuous."""
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "x"},
              "spec": {"podSelector": {"matchLabel": {"a": "b"}}, "policyTypes": "Ingress"}}
    assert validate(kit, policy) == [
        "NetworkPolicy/x.spec.podSelector.matchLabel: unknown field of V1LabelSelector",
        "NetworkPolicy/x.spec.policyTypes: expected a list",
    ]
    missing = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"image": "x"}]}}
    assert any("name" in p for p in validate(kit, missing))
    assert validate(kit, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"},
                     "automountServiceAccountToken": "no"}) == [
        "ServiceAccount/s.automountServiceAccountToken: 'no' is not bool"]


def test_validator_knows_the_subcharts_custom_resources(real_subcharts):
    """Custom resources are checked against their CRD, unknown fields included."""
    kit = real_subcharts
    route = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
             "metadata": {"name": "m"}, "spec": {"stripPrefix": {"prefixes": ["/x"]}}}
    assert validate(kit, route) == []
    route["spec"]["stripPrefix"]["prefixs"] = ["/x"]
    assert validate(kit, route) == [
        "Middleware/m.spec.stripPrefix: Additional properties are not allowed ('prefixs' was "
        "unexpected)"]
    assert validate(kit, dict(route, kind="Middlewar")) == [
        "Middlewar/m: no schema for traefik.io/v1alpha1 Middlewar"]


def test_rendered_objects_are_valid(kit, values_name):
    """All of them: ours, the subcharts' (with our values in them) and the hooks."""
    release = kit.release(values_name)
    assert release.ours
    if kit.real_subcharts:
        assert len(release.objects) > len(release.ours)
    problems = [p for obj in release.objects for p in validate(kit, obj)]
    assert problems == []


def test_generated_pods_are_valid(real_subcharts, values_name):
    """The notebook, scheduler and worker pods, and the DaskCluster object between the gateway
    and its controller."""
    kit = real_subcharts
    release = kit.release(values_name)
    for role, pod in release.pods().items():
        pod = dict(pod, metadata=dict(pod["metadata"], name=pod["metadata"].get("name", role)))
        assert validate(kit, pod) == [], role
    cluster = release.cluster_object()
    cluster["metadata"]["namespace"] = kit.NAMESPACE
    assert validate(kit, cluster) == []


def test_per_cluster_objects_of_the_controller_are_valid(real_subcharts):
    """What the controller creates beside the pods for each cluster: traefik routes (checked
    against traefik's CRDs), the credentials Secret, the scheduler's Service. dask-gateway
    2026.3.0 spells the Service's ports' `targetPort` as `target_port`: a strict API server
    refuses that, the default one (field validation "Warn") drops it, and targetPort then
    defaults to `port`, which equals the scheduler container's port numbers, so it still
    routes. Pinned here so that a change on either side is noticed."""
    kit = real_subcharts
    controller = kit.release().controller()
    for obj in (controller.make_ingressroute("abc", kit.NAMESPACE),
                controller.make_ingressroutetcp("abc", kit.NAMESPACE),
                dict(controller.make_secret("abc"), apiVersion="v1", kind="Secret")):
        assert validate(kit, obj) == [], obj["kind"]
    service = dict(controller.make_service("abc"), apiVersion="v1", kind="Service")
    ports = service["spec"]["ports"]
    assert validate(kit, service) == [
        f"Service/dask-abc.spec.ports[{i}].target_port: unknown field of V1ServicePort"
        for i in range(len(ports))]
    scheduler = kit.release().dask_pods()["scheduler"]["spec"]["containers"][0]
    by_name = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert all(by_name[p["target_port"]] == p["port"] for p in ports)
