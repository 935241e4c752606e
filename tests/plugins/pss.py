"""The Pod Security Standards, "baseline" and "restricted", as the Kubernetes documentation defines
them (https://kubernetes.io/docs/concepts/security/pod-security-standards/, the policy of
Kubernetes 1.32+, which the chart requires), field by field, for a pod spec.

What the API server's Pod Security admission checks, without an API server: each rule below is
one row of the documentation's tables, with the fields it names and the values it allows. A
violation is a message naming the rule, the container and the field. "containers" means
containers, initContainers and ephemeralContainers, as in the documentation.

Used by tests/chart/test_chart_pod_security.py on every pod template the chart renders (ours and
the subcharts') and on the pods KubeSpawner and dask-gateway's controller build from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

BASELINE = "baseline"
RESTRICTED = "restricted"

#: Baseline "Capabilities": what containers may add.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                         "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                         "SYS_CHROOT"}
#: Baseline "Sysctls": the safe set.
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
#: Baseline "SELinux": allowed seLinuxOptions.type values ("" and undefined too).
SELINUX_TYPES = {"container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
#: Restricted "Volume Types": the only volume sources allowed.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret", "image"}


def containers(spec: Mapping) -> Iterator[dict]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def _sc(container: Mapping) -> dict:
    return container.get("securityContext") or {}


def baseline(spec: Mapping, annotations: Mapping | None = None) -> list[str]:
    """Violations of the baseline policy (it prevents known privilege escalations)."""
    out = []
    pod_sc = spec.get("securityContext") or {}
    annotations = annotations or {}

    # HostProcess
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("HostProcess: spec.securityContext.windowsOptions.hostProcess")
    for c in containers(spec):
        if (_sc(c).get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"HostProcess: {c['name']}.securityContext.windowsOptions.hostProcess")
    # Host Namespaces
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"Host Namespaces: spec.{field}")
    for c in containers(spec):
        sc = _sc(c)
        # Privileged Containers
        if sc.get("privileged"):
            out.append(f"Privileged Containers: {c['name']}.securityContext.privileged")
        # Capabilities
        added = set((sc.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            out.append(f"Capabilities: {c['name']} adds {sorted(added)}")
        # Host Ports
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"Host Ports: {c['name']} hostPort {port['hostPort']}")
        # AppArmor (field)
        profile = (sc.get("appArmorProfile") or {}).get("type")
        if profile not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"AppArmor: {c['name']}.securityContext.appArmorProfile.type {profile}")
        # SELinux
        out += _selinux(sc.get("seLinuxOptions") or {}, c["name"])
        # /proc Mount Type
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"/proc Mount Type: {c['name']}.securityContext.procMount")
        # Seccomp
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"Seccomp: {c['name']}.securityContext.seccompProfile.type Unconfined")
    # HostPath Volumes
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            out.append(f"HostPath Volumes: volume {volume['name']}")
    # AppArmor (pod field and annotations)
    profile = (pod_sc.get("appArmorProfile") or {}).get("type")
    if profile not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"AppArmor: spec.securityContext.appArmorProfile.type {profile}")
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"AppArmor: annotation {key}={value}")
    out += _selinux(pod_sc.get("seLinuxOptions") or {}, "spec")
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("Seccomp: spec.securityContext.seccompProfile.type Unconfined")
    # Sysctls
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"Sysctls: {sysctl.get('name')}")
    return out


def _selinux(options: Mapping, where: str) -> list[str]:
    out = []
    if options.get("type") not in (None, "", *SELINUX_TYPES):
        out.append(f"SELinux: {where} seLinuxOptions.type {options['type']}")
    for field in ("user", "role"):
        if options.get(field):
            out.append(f"SELinux: {where} seLinuxOptions.{field}")
    return out


def restricted(spec: Mapping, annotations: Mapping | None = None) -> list[str]:
    """Violations of the restricted policy (baseline, plus current pod-hardening practice)."""
    out = baseline(spec, annotations)
    pod_sc = spec.get("securityContext") or {}
    # Volume Types
    for volume in spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= RESTRICTED_VOLUMES:
            out.append(f"Volume Types: volume {volume['name']} is {sorted(sources)}")
    # Running as Non-root user: runAsUser must not be 0, pod or container.
    if pod_sc.get("runAsUser") == 0:
        out.append("Running as Non-root user: spec.securityContext.runAsUser 0")
    for c in containers(spec):
        sc = _sc(c)
        name = c["name"]
        # Privilege Escalation
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"Privilege Escalation: {name}.securityContext.allowPrivilegeEscalation "
                       "must be false")
        # Running as Non-root: the container's own setting, else the pod's, must be true.
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            out.append(f"Running as Non-root: {name} runAsNonRoot must be true "
                       "(container or pod)")
        if sc.get("runAsUser") == 0:
            out.append(f"Running as Non-root user: {name}.securityContext.runAsUser 0")
        # Seccomp: RuntimeDefault or Localhost, on the container or else on the pod.
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"Seccomp: {name} seccompProfile.type must be RuntimeDefault or "
                       "Localhost (container or pod)")
        # Capabilities: drop ALL, add only NET_BIND_SERVICE.
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"Capabilities: {name} must drop ALL")
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            out.append(f"Capabilities: {name} may add only NET_BIND_SERVICE, adds "
                       f"{sorted(added)}")
    return out


CHECKS = {BASELINE: baseline, RESTRICTED: restricted}


def violations(level: str, pod: Mapping[str, Any], spec: Mapping | None = None) -> list[str]:
    """Violations of ``level`` by a Pod (or, with ``spec``, a workload's pod template whose
    metadata is ``pod``)."""
    if spec is None:
        spec = pod.get("spec") or {}
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return CHECKS[level](spec, annotations)
