"""The gateway's extraConfig snippet, loaded by a real dask-gateway-server.

The dask-gateway chart renders dask_gateway_config.py (KubeBackend, JupyterHub auth, the backend
fields it forwards, then our extraConfig); `DaskGateway.initialize` loads it with the api pod's
arguments and environment, exactly as the gateway pod does. Then the real backend turns a user's
cluster options into a cluster config, and the real controller (initialized from its own rendered
config) turns that into the scheduler and worker pods that Kubernetes would receive. The local
backend (a hub without Kubernetes) is loaded the same way, selected by an earlier extraConfig.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from plugins.chart import DEFAULT_IMAGE

RELEASE = "hub"
NAMESPACE = "neuro"
GATEWAY = f"{RELEASE}-dask-gateway"  # dask-gateway's fullname for this release
GIB = 2**30


def env_of(pod: dict) -> dict[str, dict]:
    (container,) = pod["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize("value_set", ["defaults", "secret-credentials", "iam-role",
                                       "custom-endpoint", "spot-workers"])
def test_snippet_loads_into_real_gateway(kit, gateway_for, value_set):
    from dask_gateway_server.app import DaskGateway
    from dask_gateway_server.auth import JupyterHubAuthenticator
    from dask_gateway_server.backends.kubernetes.backend import KubeBackend, KubeClusterConfig

    app, _ = gateway_for(value_set)
    assert isinstance(app.backend, KubeBackend)
    assert type(app.backend).__name__ == "NeuropixelsBackend"
    assert kit.configurable_keys_problems(
        app.config, [DaskGateway, KubeBackend, KubeClusterConfig, JupyterHubAuthenticator]) == []


def test_typo_in_snippet_is_caught(kit, gateway_for):
    from dask_gateway_server.app import DaskGateway
    from dask_gateway_server.auth import JupyterHubAuthenticator
    from dask_gateway_server.backends.kubernetes.backend import KubeBackend, KubeClusterConfig

    values = kit.values_for("defaults")
    snippet = values["dask-gateway"]["gateway"]["extraConfig"]["10-neuropixels-hub"]
    assert "cluster.idle_timeout = " in snippet
    values["dask-gateway"]["gateway"]["extraConfig"]["10-neuropixels-hub"] = snippet.replace(
        "cluster.idle_timeout = ", "cluster.idle_timout = ")
    app, _ = gateway_for("defaults", values=values)
    classes = [DaskGateway, KubeBackend, KubeClusterConfig, JupyterHubAuthenticator]
    assert kit.configurable_keys_problems(app.config, classes) == [
        "c.KubeClusterConfig.idle_timout: not a configurable trait"]


def test_cluster_options_limits_and_commands(kit, gateway_for):
    app, settings = gateway_for("defaults")
    spec = {f["field"]: f for f in app.backend.cluster_options.get_specification()}
    image = DEFAULT_IMAGE
    assert spec == {
        "worker_cores": {"field": "worker_cores", "label": "Worker cores", "default": 1.0,
                         "spec": {"type": "float", "min": 0.5, "max": 4.0}},
        "worker_memory": {"field": "worker_memory", "label": "Worker memory (GiB)",
                          "default": 4.0, "spec": {"type": "float", "min": 1.0, "max": 32.0}},
        # the notebook's image (the client sends it), from the images the chart allows
        "image": {"field": "image", "label": "Image", "default": image,
                  "spec": {"type": "select", "options": [image]}},
    }
    _, config = kit.cluster_config(app, {"worker_cores": 2, "worker_memory": 8.5})
    assert config.worker_cores == 2.0 and config.worker_memory == int(8.5 * GIB)
    assert config.image == settings["image"]["ref"] == DEFAULT_IMAGE
    assert config.scheduler_cmd == ["dask", "scheduler"]
    assert config.worker_cmd == ["dask", "worker"]
    assert config.idle_timeout == 1800
    assert config.cluster_max_cores == 100 and config.cluster_max_memory == 400 * GIB
    assert config.cluster_max_workers == 50  # below what cores/memory would allow
    assert (config.scheduler_cores, config.scheduler_memory) == (1, 2 * GIB)

    _, config = kit.cluster_config(app, {})
    assert (config.worker_cores, config.worker_memory) == (1.0, 4 * GIB)
    assert config.worker_threads == 2  # dask.worker.threadsPerCore × cores


def test_threads_per_core_is_a_checked_setting(kit, gateway_for, helm):
    """``dask.worker.threadsPerCore`` sets the workers' threads (at least one per worker, for
    fractional cores too); the schema refuses what would give none or a runaway count."""
    app, _ = gateway_for("defaults", values={"dask": {"worker": {"threadsPerCore": 1}}})
    _, config = kit.cluster_config(app, {"worker_cores": 2, "worker_memory": 4})
    assert config.worker_threads == 2
    _, config = kit.cluster_config(app, {"worker_cores": 0.5, "worker_memory": 4})
    assert config.worker_threads == 1
    for bad in (0, 64, 1.5):
        assert "threadsPerCore" in helm.template_error(sets=[f"dask.worker.threadsPerCore={bad}"])


@pytest.mark.parametrize("options,message", [
    ({"worker_cores": 64}, "worker_cores must be <= 4"),
    ({"worker_memory": 0.25}, "worker_memory must be >= 1"),
    ({"worker_cores": "two"}, "worker_cores must be a float"),
    ({"image": "evil/image:latest"}, "image 'evil/image:latest' is not one of this hub's "
                                     f"images: {DEFAULT_IMAGE}"),
    ({"n_workers": 10}, "Unknown fields ['n_workers']"),
])
def test_requests_over_the_ceilings_are_refused_clearly(kit, gateway_for, options, message):
    from dask_gateway_server.backends.base import PublicException

    app, _ = gateway_for("defaults")
    with pytest.raises(PublicException) as err:
        kit.cluster_config(app, options)
    assert message in str(err.value)


def test_per_user_cluster_limit(kit, gateway_for, monkeypatch):
    from dask_gateway_server import models
    from dask_gateway_server.backends.base import PublicException
    from dask_gateway_server.backends.kubernetes.backend import KubeBackend

    app, _ = gateway_for("defaults")
    started = []

    async def start(self, user, options):
        started.append(user.name)
        return f"{NAMESPACE}.new"

    monkeypatch.setattr(KubeBackend, "start_cluster", start)
    running = SimpleNamespace(status=models.ClusterStatus.RUNNING)
    stopped = SimpleNamespace(status=models.ClusterStatus.STOPPED)
    app.backend.username_to_clusters = {"alice": {"a": running, "b": stopped}}
    assert asyncio.run(app.backend.start_cluster(kit.user("alice"), {})) == f"{NAMESPACE}.new"
    app.backend.username_to_clusters["alice"]["c"] = running
    with pytest.raises(PublicException, match=r"already has 2 running or pending clusters.*\(2\)"):
        asyncio.run(app.backend.start_cluster(kit.user("alice"), {}))
    assert asyncio.run(app.backend.start_cluster(kit.user("bob"), {})) == f"{NAMESPACE}.new"
    assert started == ["alice", "bob"]


#: An operator's extra pod config for workers (the dask-gateway chart's own value).
WORKER_PRIORITY = {"dask-gateway": {"gateway": {"backend": {"worker": {"extraPodConfig": {
    "priorityClassName": "from-chart-values"}}}}}}


def test_worker_and_scheduler_pods(kit, gateway_for):
    app, settings = gateway_for("secret-credentials", values=WORKER_PRIORITY)
    pods = kit.dask_pods(app, {"worker_cores": 2, "worker_memory": 8})
    for role, pod in pods.items():
        spec = pod["spec"]
        (container,) = spec["containers"]
        env = env_of(pod)
        assert container["image"] == settings["image"]["ref"], role
        assert container["args"][:2] == ["dask", role], role
        for key, value in settings["env"].items():
            assert env[key] == {"name": key, "value": value}, (role, key)
        assert env["NEUROPIXELS_DASK__CACHE__URL"]["value"] == "s3://my-lab-neuropixels/ecephys-cache/"
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[var]["valueFrom"] == {"secretKeyRef": {"name": "neuropixels-s3", "key": var}}
        assert spec["serviceAccountName"] == f"{RELEASE}-neuropixels-hub-user", role
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsUser"] == 1000
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                                "capabilities": {"drop": ["ALL"]}}
        assert "nodeSelector" not in spec and "tolerations" not in spec
    worker = pods["worker"]["spec"]
    assert worker["priorityClassName"] == "from-chart-values"  # merged, not replaced
    (container,) = worker["containers"]
    assert container["resources"]["limits"] == {"cpu": "2.000", "memory": str(8 * GIB),
                                                "ephemeral-storage": "11Gi"}  # spillDisk + 1
    # dask.worker.threadsPerCore (2): two threads per core, so that reads overlap compute
    # (dask-gateway's own default would be one per core)
    assert container["args"][container["args"].index("--nthreads") + 1] == "4"


def test_iam_role_pods_share_the_notebook_identity(kit, gateway_for, render):
    app, _ = gateway_for("iam-role")
    (sa,) = kit.find(render("iam-role"), "ServiceAccount")
    for pod in kit.dask_pods(app, {}).values():
        assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]
        assert not any(k.startswith("AWS_") for k in env_of(pod))
        assert env_of(pod)["NEUROPIXELS_DASK__S3__REQUESTER_PAYS"]["value"] == "true"


def test_spot_placement_is_for_workers_only(kit, gateway_for):
    app, _ = gateway_for("spot-workers")
    pods = kit.dask_pods(app, {"worker_cores": 8, "worker_memory": 60})
    worker, scheduler = pods["worker"]["spec"], pods["scheduler"]["spec"]
    assert worker["nodeSelector"] == {"eks.amazonaws.com/capacityType": "SPOT"}
    assert worker["tolerations"] == [{"key": "spot", "operator": "Equal", "value": "true",
                                      "effect": "NoSchedule"}]
    assert "nodeSelector" not in scheduler and "tolerations" not in scheduler


def test_custom_endpoint_reaches_workers(kit, gateway_for):
    app, _ = gateway_for("custom-endpoint")
    env = env_of(kit.dask_pods(app, {})["worker"])
    assert env["NEUROPIXELS_DASK__S3__ENDPOINT_URL"]["value"] == (
        "http://minio.minio.svc.cluster.local:9000")
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["key"] == "accesskey"


def test_dask_network_policy_selects_dask_pods_only(kit, gateway_for, render):
    app, _ = gateway_for("defaults")
    objects = render("defaults")
    (policy,) = kit.find(objects, "NetworkPolicy", f"{RELEASE}-neuropixels-hub-dask-clusters")
    selector = policy["spec"]["podSelector"]
    for pod in kit.dask_pods(app, {}).values():
        assert kit.selector_matches(selector, pod["metadata"]["labels"])
    # The gateway's own pods (labels from the dask-gateway chart) are not selected.
    for component in ("gateway", "controller", "traefik"):
        labels = {"app.kubernetes.io/name": "dask-gateway", "app.kubernetes.io/instance": RELEASE,
                  "gateway.dask.org/instance": GATEWAY, "app.kubernetes.io/component": component}
        assert not kit.selector_matches(selector, labels), component
    traefik = {"app.kubernetes.io/component": "traefik", "gateway.dask.org/instance": GATEWAY}
    (from_traefik,) = [r for r in policy["spec"]["ingress"]
                       if kit.selector_matches(r["from"][0]["podSelector"], traefik)
                       and "ports" in r]
    assert {p["port"] for p in from_traefik["ports"]} == {8786, 8787}


#: A gateway without Kubernetes (what `hub local` runs), chosen before our snippet runs.
LOCAL_BACKEND = {"dask-gateway": {"gateway": {"extraConfig": {"00-local": (
    'c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"\n')}}}}


def test_local_backend(kit, gateway_for):
    """The same snippet configures a gateway without Kubernetes (used by the local hub)."""
    from dask_gateway_server.backends.local import LocalClusterConfig, UnsafeLocalBackend

    app, settings = gateway_for("secret-credentials", values=LOCAL_BACKEND)
    assert isinstance(app.backend, UnsafeLocalBackend)
    _, config = kit.cluster_config(app, {"worker_cores": 1.5, "worker_memory": 2})
    assert isinstance(config, LocalClusterConfig)
    assert config.worker_cores == 2  # whole cores for processes
    assert config.worker_memory == 2 * GIB
    assert config.scheduler_cmd == ["dask", "scheduler"] and config.worker_cmd == ["dask", "worker"]
    assert config.idle_timeout == 1800 and config.cluster_max_workers == 50
    assert {k: v for k, v in config.environment.items() if k.startswith("NEUROPIXELS")} == \
        settings["env"]


def test_scheduler_and_worker_commands_exist():
    """`dask scheduler` / `dask worker` are real commands of the installed distributed (the
    image installs the same environment)."""
    dask = shutil.which("dask") or str(Path(__import__("sys").executable).with_name("dask"))
    for sub in ("scheduler", "worker"):
        out = subprocess.run([dask, sub, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "--dashboard-address" in out.stdout
