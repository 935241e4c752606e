"""The production details an operator finds only on a real cluster (issue 22), each checked on
the objects the real subcharts render and the pods KubeSpawner and dask-gateway's controller
build from them:

* a private registry's pull secret reaches every pod that pulls our image, z2jh's image pullers
  (the pre-install hook) included;
* with our NetworkPolicies off, notebooks still reach the gateway's traefik (the jupyterhub
  chart's own policies stay on);
* Dask workers spill to a sized, disk-backed emptyDir with an ephemeral-storage request and
  limit; notebooks have a /dev/shm larger than the container runtime's 64 MiB;
* every container of the hub and the gateway requests CPU and memory (none is BestEffort).
"""

from __future__ import annotations

from kubernetes.utils.quantity import parse_quantity

REGCRED = "lab-registry"


def _workloads(release) -> list[tuple[str, dict]]:
    """(Kind/name, pod spec) of every workload rendered (hooks included)."""
    out = []
    for obj in release.objects:
        spec = release.kit.pod_spec_of(obj)
        if spec is not None:
            out.append((f"{obj['kind']}/{obj['metadata']['name']}", spec))
    return out


def test_pull_secrets_reach_every_pod_that_pulls_our_image(kit):
    """image.pullSecrets (the README's private-registry recipe): z2jh's hook-image-puller, which
    runs before every install and upgrade, must have it, or helm waits out its timeout."""
    release = kit.release(values={"image": {"pullSecrets": [REGCRED]}})
    release.require_subcharts()
    ours = release.settings["image"]["ref"]
    pulling = {}
    for where, spec in _workloads(release):
        if any(c.get("image") == ours for c in kit.all_containers(spec)):
            pulling[where] = [s["name"] for s in spec.get("imagePullSecrets") or []]
    assert {"DaemonSet/hook-image-puller", "DaemonSet/continuous-image-puller"} <= set(pulling)
    assert all(REGCRED in names for names in pulling.values()), pulling
    # The pods the hub and the gateway create: once each, not twice.
    for role, pod in release.pods().items():
        names = [s["name"] for s in pod["spec"].get("imagePullSecrets") or []]
        assert names.count(REGCRED) == 1, (role, names)


def test_without_our_policies_notebooks_still_reach_the_gateway(kit):
    """networkPolicy.enabled=false leaves the jupyterhub chart's singleuser and proxy policies
    on: the way to traefik must stay open beside them (creating a cluster goes through the hub;
    connecting to it goes to traefik)."""
    release = kit.release(sets=["networkPolicy.enabled=false"])
    release.require_subcharts()
    policies = release.find("NetworkPolicy")
    names = {p["metadata"]["name"] for p in policies}
    assert {"singleuser", "proxy"} <= names  # z2jh's own: still isolating
    assert not {n for n in names if n.endswith(("-dask-clusters", "-dask-scheduler-metrics"))}
    notebook = release.user_pod()["metadata"]["labels"]
    traefik = proxy = None
    for deployment in release.find("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") == "traefik":
            traefik = labels
        if deployment["metadata"]["name"] == "proxy":
            proxy = labels
    port = int(release.settings["gateway"]["proxyAddress"].rsplit(":", 1)[1])
    target = 8000  # traefik's container port behind the Service's `port`
    assert port == 80
    assert kit.allowed(policies, "Egress", notebook, kit.pod_peer(traefik), target)
    assert kit.allowed(policies, "Egress", proxy, kit.pod_peer(traefik), target)
    # Only widened: the rest of the notebook's egress is z2jh's.
    assert not kit.allowed(policies, "Egress", notebook, kit.pod_peer({"app": "x"}), target)

    # With the jupyterhub chart's policies off too, nothing of ours isolates notebooks or the
    # proxy (a policy alone would cut them off from the hub).
    off = kit.release(sets=["networkPolicy.enabled=false",
                            "jupyterhub.singleuser.networkPolicy.enabled=false",
                            "jupyterhub.proxy.chp.networkPolicy.enabled=false"])
    assert not [p for p in off.ours if p["kind"] == "NetworkPolicy"]
    policies = off.find("NetworkPolicy")
    assert kit.allowed(policies, "Egress", notebook, kit.pod_peer({"app": "x"}), 1234)


def _container(pod: dict) -> dict:
    return pod["spec"]["containers"][0]


def test_workers_spill_to_a_sized_disk_volume(kit):
    release = kit.release()
    release.require_subcharts()
    size = kit.values_for("defaults")["dask"]["worker"]["spillDisk"]
    worker = release.dask_pods()["worker"]
    volumes = {v["name"]: v for v in worker["spec"]["volumes"]}
    assert volumes["dask-spill"]["emptyDir"] == {"sizeLimit": f"{size}Gi"}  # disk, not memory
    container = _container(worker)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = kit.env_values(container)
    assert env["DASK_TEMPORARY_DIRECTORY"] == mounts["dask-spill"]
    resources = container["resources"]
    request = parse_quantity(resources["requests"]["ephemeral-storage"])
    assert request == parse_quantity(resources["limits"]["ephemeral-storage"])
    # Room for the spill volume plus the container's logs and writable layer.
    assert request > size * kit.GIB
    # Cores and memory still come from the cluster options.
    assert resources["requests"]["cpu"] and resources["limits"]["memory"]
    assert kit.resource_problems(worker["spec"]) == []

    none = kit.release(values={"dask": {"worker": {"spillDisk": 0}}}).dask_pods()["worker"]
    assert "dask-spill" not in {v["name"] for v in none["spec"].get("volumes") or []}
    assert "ephemeral-storage" not in _container(none)["resources"].get("requests", {})


def test_notebooks_have_a_sized_dev_shm(kit):
    """Process-based LocalClusters and PyTorch DataLoaders share memory through /dev/shm, which
    the container runtime makes 64 MiB."""
    release = kit.release()
    release.require_subcharts()
    size = kit.values_for("defaults")["notebook"]["sharedMemory"]
    pod = release.user_pod()
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["dev-shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{size}Gi"}
    mounts = {m["mountPath"]: m["name"] for m in _container(pod)["volumeMounts"]}
    assert mounts["/dev/shm"] == "dev-shm"
    # Memory-backed: it counts against the notebook's memory limit, which must hold it.
    limit = parse_quantity(_container(pod)["resources"]["limits"]["memory"])
    assert limit > size * kit.GIB
    none = kit.release(values={"notebook": {"sharedMemory": 0}}).user_pod()
    assert "/dev/shm" not in {m["mountPath"] for m in _container(none)["volumeMounts"]}


def test_core_pods_request_cpu_and_memory(kit):
    """None of the hub's or the gateway's own pods is BestEffort (evicted first, refused by a
    namespace with a ResourceQuota)."""
    release = kit.release()
    release.require_subcharts()
    missing = []
    for where, spec in _workloads(release):
        for container in kit.all_containers(spec):
            requests = (container.get("resources") or {}).get("requests") or {}
            if not {"cpu", "memory"} <= set(requests):
                missing.append(f"{where}: {container['name']}")
        assert kit.resource_problems(spec) == [], where
    assert missing == []


# ---- the 2i2c items: notebooks ------------------------------------------------------------

def _jupyter_files(release, pod: dict, root) -> None:
    """The notebook container's mounted ConfigMap files, where the image would see them."""
    (container,) = pod["spec"]["containers"]
    mounts = [m for m in container["volumeMounts"] if m["name"] == "jupyter-config"]
    release.mount_volumes(pod["spec"], dict(container, volumeMounts=mounts), root)


def test_idle_kernels_are_culled_and_the_news_prompt_is_off(kit, tmp_path, monkeypatch):
    """The files the notebook pod mounts, read by the real jupyter_server and JupyterLab config
    loaders from Jupyter's system-wide directory."""
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.serverapp import ServerApp
    from jupyterlab_server.config import get_page_config

    release = kit.release()
    release.require_subcharts()
    culling = kit.values_for("defaults")["notebook"]["kernelCulling"]
    _jupyter_files(release, release.user_pod(), tmp_path)
    etc = tmp_path / "usr/local/etc/jupyter"
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(etc))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "home-config"))
    assert str(etc) in jupyter_config_path()
    app = ServerApp()
    app.load_config_file()
    kernels = app.config.MappingKernelManager
    assert kernels.cull_idle_timeout == culling["idleTimeout"] == 3600
    assert kernels.cull_interval == culling["interval"]
    assert kernels.cull_connected is culling["connected"]
    page = get_page_config([], logger=None)
    assert "@jupyterlab/apputils-extension:announcements" in page["disabledExtensions"]

    # Turned off: nothing culled, the news plugin left alone.
    off = kit.release(values={"notebook": {"kernelCulling": {"idleTimeout": 0},
                                           "jupyterNews": True}})
    (cm,) = [o for o in off.ours if o["metadata"]["name"] == "neuropixels-hub-jupyter"]
    assert cm["data"] == {"jupyter_server_config.json": "{}", "page_config.json": "{}"}


def test_shared_data_is_read_only_except_for_admins(kit):
    claim = "lab-shared"
    release = kit.release(values={"notebook": {"sharedData": {"existingClaim": claim}}})
    release.require_subcharts()
    path = kit.values_for("defaults")["notebook"]["sharedData"]["mountPath"]

    def mount(pod):
        (container,) = pod["spec"]["containers"]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        (m,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
        assert volumes[m["name"]]["persistentVolumeClaim"] == {"claimName": claim}
        return m

    assert mount(release.user_pod(user="alice"))["readOnly"] is True
    assert mount(release.user_pod(user="boss", admin=True)).get("readOnly") is False
    # The home volume is still there, and the shared one sits inside it.
    home = kit.values_for("defaults")["jupyterhub"].get("singleuser", {}).get(
        "storage", {}).get("homeMountPath", "/home/jovyan")
    mounts = {m["mountPath"] for m in release.user_pod()["spec"]["containers"][0]["volumeMounts"]}
    assert home in mounts and path.startswith(home + "/")
    # Without a claim, nothing is mounted.
    pod = kit.release().user_pod()
    assert path not in {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}


# ---- metrics --------------------------------------------------------------------------------

def test_metrics_monitors_find_their_targets_with_a_read_only_token(kit):
    """metrics.enabled: a PodMonitor whose selector and port match the scheduler pods the
    controller builds, a ServiceMonitor whose selector and port match the hub's Service, with a
    hub token that exists in the rendered Secret and may read metrics only."""
    assert not kit.find(kit.release().ours, "ServiceMonitor")  # off by default
    release = kit.release(values={"metrics": {"enabled": True,
                                              "labels": {"release": "monitoring"}}})
    release.require_subcharts()
    (pod_monitor,) = release.find("PodMonitor")
    (service_monitor,) = release.find("ServiceMonitor")
    for monitor in (pod_monitor, service_monitor):
        assert monitor["metadata"]["labels"]["release"] == "monitoring"

    scheduler = release.dask_pods()["scheduler"]
    worker = release.dask_pods()["worker"]
    selector = pod_monitor["spec"]["selector"]
    assert kit.selector_matches(selector, scheduler["metadata"]["labels"])
    assert not kit.selector_matches(selector, worker["metadata"]["labels"])
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in _container(scheduler)["ports"]}
    assert ports[endpoint["port"]] == 8787 and endpoint["path"] == "/metrics"

    (hub_service,) = release.find("Service", "hub")
    assert kit.selector_matches(service_monitor["spec"]["selector"],
                                hub_service["metadata"]["labels"])
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in hub_service["spec"]["ports"]}
    assert endpoint["path"] == "/hub/metrics"
    ref = endpoint["authorization"]["credentials"]
    token = release._key("Secret", ref)  # the kubelet's view of the Secret: it must exist
    assert len(token) >= 32

    # The token is the hub service `prometheus`'s, and its role reads metrics, nothing else.
    config = release.hub_config()
    (service,) = [s for s in config.JupyterHub.services if s["name"] == "prometheus"]
    assert service["api_token"] == token
    roles = [r for r in config.JupyterHub.load_roles if "prometheus" in r.get("services", [])]
    assert [r["scopes"] for r in roles] == [["read:metrics"]]
