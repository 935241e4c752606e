"""Pod Security Standards (issue 22), checked by an implementation of the standard's rules
(tests/plugins/pss.py), not by a hand list of fields:

* every pod the chart's own configuration makes (notebooks from KubeSpawner, Dask schedulers and
  workers from dask-gateway's controller) passes "restricted", under every value set;
* every pod template of the whole install (ours, the jupyterhub and dask-gateway charts', hooks
  included) passes "baseline", and those that miss "restricted" are exactly the documented
  exceptions (helm/README.md, "Pod Security"), each with its reason.
"""

from __future__ import annotations

import copy
import re

import pytest
from plugins import pss

#: Pod templates of the default install that are not "restricted", and why. The same list, with
#: the release name as <release>, is in helm/README.md ("Pod Security").
EXCEPTIONS = {
    "Deployment/api-{release}-dask-gateway":
        "the dask-gateway chart (2026.3.0) sets no securityContext on the gateway API and has "
        "no value for one",
    "Deployment/controller-{release}-dask-gateway":
        "the same for the controller",
    "Deployment/traefik-{release}-dask-gateway":
        "the dask-gateway chart sets only runAsUser/runAsGroup 1000 on traefik, and has no "
        "value for the rest",
}

GOOD = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "image": "x", "securityContext": {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "v", "emptyDir": {}}],
}


def _with(change) -> dict:
    spec = copy.deepcopy(GOOD)
    change(spec)
    return spec


#: (a change to a compliant pod, the level it breaks, the rule the message names)
VIOLATIONS = [
    (lambda s: s.update(hostNetwork=True), "baseline", "Host Namespaces"),
    (lambda s: s.update(hostPID=True), "baseline", "Host Namespaces"),
    (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "baseline",
     "Privileged Containers"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
     "baseline", "Capabilities"),
    (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "baseline",
     "HostPath Volumes"),
    (lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
     "baseline", "Host Ports"),
    (lambda s: s["securityContext"].update(appArmorProfile={"type": "Unconfined"}), "baseline",
     "AppArmor"),
    (lambda s: s["containers"][0]["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
     "baseline", "SELinux"),
    (lambda s: s["containers"][0]["securityContext"].update(procMount="Unmasked"), "baseline",
     "/proc Mount Type"),
    (lambda s: s["securityContext"].update(seccompProfile={"type": "Unconfined"}), "baseline",
     "Seccomp"),
    (lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
     "baseline", "Sysctls"),
    (lambda s: s["securityContext"].update(windowsOptions={"hostProcess": True}), "baseline",
     "HostProcess"),
    (lambda s: s["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}),
     "restricted", "Volume Types"),
    (lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
     "restricted", "Privilege Escalation"),
    (lambda s: s["securityContext"].pop("runAsNonRoot"), "restricted", "Running as Non-root"),
    (lambda s: s["containers"][0]["securityContext"].update(runAsUser=0), "restricted",
     "Running as Non-root user"),
    (lambda s: s["securityContext"].pop("seccompProfile"), "restricted", "Seccomp"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
     "restricted", "Capabilities"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["CHOWN"]),
     "restricted", "Capabilities"),
    (lambda s: s.setdefault("initContainers", []).append({"name": "i", "image": "x"}),
     "restricted", "Privilege Escalation"),
]


@pytest.mark.parametrize("change,level,rule", VIOLATIONS)
def test_the_checker_applies_each_rule(change, level, rule):
    """Not vacuous: each rule of the standard, broken on its own, is reported, by the level
    that defines it (a baseline rule is in restricted too), and the compliant pod passes."""
    assert pss.violations("restricted", {}, GOOD) == []
    spec = _with(change)
    found = pss.violations(level, {}, spec)
    assert found and found[0].startswith(rule), found
    if level == "baseline":
        assert pss.violations("restricted", {}, spec)
    else:
        assert pss.violations("baseline", {}, spec) == []
    # Restricted allows what a container sets for itself instead of the pod.
    moved = copy.deepcopy(GOOD)
    moved["containers"][0]["securityContext"].update(moved.pop("securityContext"))
    assert pss.violations("restricted", {}, moved) == []
    # AppArmor by annotation (the pre-1.30 way).
    bad = {"metadata": {"annotations": {
        "container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}}
    assert pss.violations("baseline", bad, GOOD)[0].startswith("AppArmor")


def test_pods_of_the_chart_are_restricted(real_subcharts, values_name):
    """Notebooks, schedulers and workers: built by KubeSpawner and the gateway's controller
    from the chart's settings, under every value set."""
    release = real_subcharts.release(values_name)
    for role, pod in release.pods().items():
        assert pss.violations("restricted", pod) == [], role
    # Our own templates render no pod of their own (only configuration, policies, a
    # ServiceAccount): every pod of ours is one of the above.
    assert not [o for o in release.ours if real_subcharts.pod_spec_of(o) is not None]


def _templates(release) -> dict[str, tuple[dict, dict]]:
    out = {}
    for obj in release.objects:
        spec = release.kit.pod_spec_of(obj)
        if spec is None:
            continue
        template = obj if obj["kind"] == "Pod" else obj["spec"].get("template") or \
            obj["spec"]["jobTemplate"]["spec"]["template"]
        out[f"{obj['kind']}/{obj['metadata']['name']}"] = (template, spec)
    return out


@pytest.mark.parametrize("value_set", ["defaults", "https", "profiles"])
def test_the_whole_install_is_baseline_with_documented_exceptions(kit, value_set):
    release = kit.release(value_set)
    release.require_subcharts()
    templates = _templates(release)
    assert {"Deployment/hub", "Deployment/proxy", "DaemonSet/hook-image-puller",
            "Job/hook-image-awaiter"} <= set(templates)
    not_restricted = {}
    for where, (template, spec) in templates.items():
        assert pss.violations("baseline", template, spec) == [], where
        if found := pss.violations("restricted", template, spec):
            not_restricted[where] = found
    expected = {k.format(release=kit.RELEASE) for k in EXCEPTIONS}
    assert set(not_restricted) == expected, not_restricted


def test_the_exceptions_are_documented(kit):
    readme = (kit.REPO / "helm" / "README.md").read_text()
    section = re.search(r"^### Pod Security$(.*?)^##", readme, flags=re.M | re.S)
    assert section, "helm/README.md has no 'Pod Security' section"
    for where in EXCEPTIONS:
        name = where.split("/", 1)[1].format(release="<release>")
        assert f"`{name}`" in section.group(1), name
