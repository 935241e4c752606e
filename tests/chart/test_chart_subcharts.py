"""The chart together with the real jupyterhub and dask-gateway charts: what helm, the API server
and the kubelet would say about the release, for the default values and every helm/examples/*.yaml.

The kit (tests/plugins/chart.py) renders with the subcharts' real packages and runs the code they
render; the pods checked here are the ones KubeSpawner and dask-gateway's controller build, plus
every pod template the charts render themselves.
"""

from __future__ import annotations

import re

import pytest
import yaml

#: The chart's own kubeVersion must stay within this window of minor versions around the
#: subcharts' lower bounds for the test below to cover every boundary.
PROBED_MINORS = range(24, 40)


def test_the_real_subcharts_are_used_where_they_exist(kit):
    """Never a silent smoke run where the real charts are available (CI has ../shared)."""
    packages = kit.subchart_packages(kit.CHART)
    assert kit.real_subcharts is (packages is not None)
    if kit.SHARED_CHARTS.is_dir():
        assert packages is not None, f"{kit.SHARED_CHARTS} lacks the versions Chart.yaml pins"
    if kit.real_subcharts:
        meta = yaml.safe_load((kit.CHART / "Chart.yaml").read_text())
        for dep in meta["dependencies"]:
            staged = yaml.safe_load((kit.chart_dir / "charts" / dep["name"] / "Chart.yaml")
                                    .read_text())
            assert (staged["name"], staged["version"]) == (dep["name"], dep["version"])


def _lower_bound(constraint: str) -> int:
    """The minor version of a `>=1.N.0-0` kubeVersion (the form all three charts use)."""
    match = re.fullmatch(r">=\s*1\.(\d+)\.0(-0)?", constraint.strip())
    assert match, f"kubeVersion {constraint!r} is not of the form >=1.N.0-0: update this test"
    return int(match.group(1))


def test_kube_version_admits_no_cluster_a_subchart_refuses(real_subcharts):
    """helm checks the kubeVersion of the chart it installs, not of its subcharts: ours must
    refuse every Kubernetes version one of them refuses, or `helm install` succeeds on a cluster
    the jupyterhub chart does not support. Both sides are asked of helm itself (a subchart
    rendered on its own checks its own constraint)."""
    kit = real_subcharts
    ours = yaml.safe_load((kit.CHART / "Chart.yaml").read_text())["kubeVersion"]
    subcharts = sorted(p for p in (kit.chart_dir / "charts").iterdir() if p.is_dir())
    bounds = {_lower_bound(ours)}
    for sub in subcharts:
        bounds.add(_lower_bound(yaml.safe_load((sub / "Chart.yaml").read_text())["kubeVersion"]))
    assert min(bounds) - 1 in PROBED_MINORS and max(bounds) + 1 in PROBED_MINORS

    def accepts(chart, minor: int) -> bool:
        # Only helm's kubeVersion verdict matters here (other complaints, e.g. a subchart
        # rendered without the values our chart gives it, are not about the version).
        out = kit.helm.run("template", "x", str(chart), "--kube-version", f"1.{minor}.0")
        return "incompatible with Kubernetes" not in out.stderr

    probes = sorted({b + d for b in bounds for d in (-1, 0)})
    refused_by_a_subchart = {m for m in probes for sub in subcharts if not accepts(sub, m)}
    admitted_by_ours = {m for m in probes if accepts(kit.chart_dir, m)}
    assert admitted_by_ours & refused_by_a_subchart == set(), (
        f"kubeVersion {ours} admits Kubernetes 1.{min(admitted_by_ours & refused_by_a_subchart)}"
        " which a subchart refuses")
    assert max(probes) in admitted_by_ours  # and is not simply refusing everything
    readme = (kit.REPO / "helm" / "README.md").read_text()
    assert f"version 1.{_lower_bound(ours)} or newer" in readme


def _workloads(release) -> list[tuple[str, dict]]:
    """Every rendered object that makes pods, with its pod spec."""
    return [(f"{o['kind']}/{o['metadata']['name']}", spec) for o in release.objects
            if (spec := release.kit.pod_spec_of(o)) is not None]


def test_every_pod_would_start(real_subcharts, values_name):
    """Each container's effective security context (its own over the pod's) passes the kubelet's
    runAsNonRoot check and the API server's privilege rules; requests stay within limits; every
    Secret, ConfigMap and key the rendered pods refer to is rendered too. The notebook container
    itself runs as the image's non-root user."""
    kit = real_subcharts
    release = kit.release(values_name)
    users = kit.image_users(release)
    problems = []
    pods = release.pods()
    for role, pod in pods.items():
        problems += [f"{role}: {p}" for p in kit.start_problems(pod["spec"], users)]
        problems += [f"{role}: {p}" for p in kit.resource_problems(pod["spec"])]
    for name, spec in _workloads(release):
        problems += [f"{name}: {p}" for p in kit.start_problems(spec, users)]
        problems += [f"{name}: {p}" for p in kit.resource_problems(spec)]
        for container in kit.all_containers(spec):
            try:
                release.container_env(spec, container)
                release.mount_volumes(spec, container, release.kit.tmp / "mounts" / name)
            except kit.PodWouldNotStart as err:
                problems.append(f"{name}/{container['name']}: {err}")
    assert problems == []

    notebook = pods["notebook"]["spec"]
    (container,) = notebook["containers"]
    effective = kit.effective_security_context(notebook, container)
    assert effective["runAsNonRoot"] is True and effective["runAsUser"] == kit.IMAGE_UID
    assert notebook.get("initContainers") is None  # nothing runs before it as another user


@pytest.mark.parametrize("profile", ["small", "large"])
def test_profile_pods_would_start(real_subcharts, profile):
    kit = real_subcharts
    release = kit.release("profiles")
    pod = release.user_pod({"profile": profile})
    assert kit.start_problems(pod["spec"], kit.image_users(release)) == []
    assert kit.resource_problems(pod["spec"]) == []


def test_the_pod_checks_see_what_the_kubelet_refuses(kit):
    """Not vacuous: z2jh's iptables init container (root, privileged) under the chart's pod
    security context, and a request above its limit, are reported."""
    spec = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        "initContainers": [{"name": "block-cloud-metadata", "image": "networktools:4",
                            "securityContext": {"privileged": True, "runAsUser": 0}}],
        "containers": [{"name": "notebook", "image": "notebook:1",
                        "resources": {"requests": {"cpu": "4", "memory": "8Gi"},
                                      "limits": {"cpu": "2.000", "memory": str(8 * 2**30)}}}],
    }
    assert kit.start_problems(spec, {}) == [
        "block-cloud-metadata: runAsNonRoot with runAsUser 0 (CreateContainerConfigError: "
        "container would run as root)",
        "block-cloud-metadata: privileged under runAsNonRoot",
    ]
    assert kit.resource_problems(spec) == ["notebook: cpu request 4 > limit 2.000"]
    del spec["securityContext"]["runAsUser"]
    assert kit.start_problems({**spec, "initContainers": []}, {}) == [
        "notebook: runAsNonRoot, but no runAsUser and an image whose user is not known to be "
        "numeric and non-root"]
    assert kit.start_problems({**spec, "initContainers": []}, {"notebook:1": 1000}) == []


def test_iptables_metadata_block_is_refused(helm):
    """z2jh's iptables init container would make every user pod fail under runAsNonRoot; the
    template refuses it, saying what blocks the metadata server instead."""
    stderr = helm.template_error(sets=["jupyterhub.singleuser.cloudMetadata.blockWithIptables=true"])
    assert "jupyterhub.singleuser.cloudMetadata.blockWithIptables must stay false" in stderr
    assert "the NetworkPolicies block the cloud metadata server instead" in stderr


@pytest.mark.parametrize("half", ["jupyterhub", "dask-gateway"])
def test_half_a_hub_is_refused(helm, half):
    """Without the hub, the gateway has no Secret `hub` to read its token from; without the
    gateway, notebooks get addresses, a service and policies for nothing. Refused, saying why."""
    stderr = helm.template_error(sets=[f"{half}.enabled=false"])
    assert "jupyterhub.enabled and dask-gateway.enabled must both stay true" in stderr
    assert "install its official chart directly" in stderr


def test_the_gateway_service_of_the_hub_is_required(helm):
    stderr = helm.template_error(sets=["jupyterhub.hub.services.dask-gateway=null"])
    assert "jupyterhub.hub.services.dask-gateway must stay" in stderr


SETTINGS_KEY = "checksum/neuropixels-hub-settings"


def _checksums(objects: list[dict]) -> dict[str, str | None]:
    """The settings checksum on the pod templates of the hub and the gateway api."""
    out = {}
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] in ("hub",
                                                                       "api-hub-dask-gateway"):
            annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
            out[obj["metadata"]["name"]] = annotations.get(SETTINGS_KEY)
    return out


def test_settings_changes_roll_the_hub_and_the_gateway(real_subcharts):
    """The hub and the gateway read the settings ConfigMap at start-up: its checksum sits in
    both pod templates, so that `helm upgrade` with other settings restarts them, and a render
    with the same values leaves it alone (no restarts for nothing)."""
    kit = real_subcharts
    helm = kit.helm
    checksums = _checksums(helm.template_all()[0])
    assert set(checksums) == {"hub", "api-hub-dask-gateway"}
    assert len(set(checksums.values())) == 1, checksums
    assert re.fullmatch(r"[0-9a-f]{64}", checksums["hub"] or ""), checksums
    assert _checksums(helm.template_all()[0]) == checksums  # stable: nothing changed
    for change in (["dask.idleTimeout=60"], ["image.tag=0.1.1"], ["scratch.url=s3://scratch"]):
        changed = _checksums(helm.template_all(sets=change)[0])
        assert set(changed.values()) != set(checksums.values()), change
        assert len(set(changed.values())) == 1, change
    # an operator's own annotations stay beside it
    objects = helm.template_all(sets=["jupyterhub.hub.annotations.team=neuro"])[0]
    assert _checksums(objects) == checksums
    (hub,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "hub"]
    assert hub["spec"]["template"]["metadata"]["annotations"]["team"] == "neuro"
    # profiles with choices render their images in one order every time
    profiles = kit.VALUE_SETS["profiles"]
    assert _checksums(helm.template_all(profiles)[0]) == _checksums(helm.template_all(profiles)[0])
