"""What a user's notebook pod and Dask clusters get from the chart, checked on the pods the real
KubeSpawner and dask-gateway controller build (tests/plugins/chart.py) and, where a program reads
the setting, by that program:

* the home is seeded with the example notebooks by the pod's postStart hook, run here with sh;
* a LocalCluster's dashboard link goes through jupyter-server-proxy, as distributed formats it;
* Dask workers follow the notebook's image, as dask-gateway's client fills in the option;
* SCRATCH_BUCKET, per user, in the notebook and in that user's schedulers and workers;
* image pull secrets add to the subcharts' own lists; images pin by digest;
* Dask pods' limits equal their requests, whatever else configures limits;
* schedulers carry Prometheus' scrape annotations, workers do not.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from plugins.chart import DEFAULT_IMAGE

DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = DEFAULT_IMAGE


def env_of(pod: dict) -> dict[str, dict]:
    (container,) = pod["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


@contextlib.contextmanager
def inside(pod: dict, kit) -> Iterator[None]:
    """Dask's configuration as a process in the pod's notebook container sees it."""
    import dask

    try:
        with kit.process_environment(kit.env_values(pod["spec"]["containers"][0])):
            dask.config.refresh()
            yield
    finally:
        dask.config.refresh()


# ---- the home is seeded with the example notebooks --------------------------------------------

def _post_start(pod: dict) -> list[str]:
    (container,) = pod["spec"]["containers"]
    return container["lifecycle"]["postStart"]["exec"]["command"]


def _run_hook(command: list[str], home, src, image: str) -> None:
    """The hook as the kubelet runs it in the notebook container: the pod's environment (HOME,
    JUPYTER_IMAGE_SPEC) and the image's NEUROPIXELS_HUB_NOTEBOOKS."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "JUPYTER_IMAGE_SPEC": image,
           "NEUROPIXELS_HUB_NOTEBOOKS": str(src)}
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr  # a failing postStart hook kills the container


def test_post_start_hook_seeds_the_home_without_overwriting(real_subcharts, tmp_path):
    kit = real_subcharts
    pod = kit.release().user_pod()
    command = _post_start(pod)
    image = kit.env_values(pod["spec"]["containers"][0])["JUPYTER_IMAGE_SPEC"]
    assert image == IMAGE
    notebooks = kit.REPO / "analysis" / "notebooks"
    shipped = sorted(p.name for p in notebooks.glob("*.ipynb"))
    assert "quickstart.ipynb" in shipped
    src = tmp_path / "image-notebooks"
    shutil.copytree(notebooks, src)
    home = tmp_path / "home"
    home.mkdir()

    _run_hook(command, home, src, image)  # first start: every example arrives
    assert sorted(p.name for p in home.glob("*.ipynb")) == shipped
    (home / "quickstart.ipynb").write_text("my edits")
    (home / shipped[-1]).unlink()
    _run_hook(command, home, src, image)  # a restart: edits kept, a deletion respected
    assert (home / "quickstart.ipynb").read_text() == "my edits"
    assert not (home / shipped[-1]).exists()
    (src / "new-example.ipynb").write_text("{}")
    _run_hook(command, home, src, IMAGE + "-next")  # a new image: its examples, no overwrite
    assert (home / "new-example.ipynb").exists() and (home / shipped[-1]).exists()
    assert (home / "quickstart.ipynb").read_text() == "my edits"
    _run_hook(command, home, tmp_path / "missing", IMAGE)  # an image without examples: fine


def test_the_image_ships_the_notebooks_where_the_hook_looks(kit):
    """images/notebook/Dockerfile copies analysis/notebooks to $NEUROPIXELS_HUB_NOTEBOOKS, the
    path the hook falls back to, and the build context admits them."""
    import re

    dockerfile = (kit.REPO / "images" / "notebook" / "Dockerfile").read_text()
    (path,) = re.findall(r"^ENV NEUROPIXELS_HUB_NOTEBOOKS=(\S+)$", dockerfile, flags=re.M)
    assert re.search(r"^COPY (--\S+ )*analysis/notebooks \$\{NEUROPIXELS_HUB_NOTEBOOKS\}$",
                     dockerfile, flags=re.M)
    ignore = (kit.REPO / "images" / "notebook" / "Dockerfile.dockerignore").read_text()
    assert "!analysis/notebooks/" in ignore.splitlines()
    hook = "\n".join(kit.values_for("defaults")["jupyterhub"]["singleuser"]["lifecycleHooks"]
                     ["postStart"]["exec"]["command"])
    assert f"${{NEUROPIXELS_HUB_NOTEBOOKS:-{path}}}" in hook
    # the scheduler's /metrics and the notebook's dashboard proxy are checked at build time
    assert "import prometheus_client, jupyter_server_proxy" in dockerfile


# ---- dashboards and images follow the notebook ------------------------------------------------

def test_local_cluster_dashboard_link_goes_through_the_notebook_server(real_subcharts):
    """distributed formats the link from the pod's environment: /user/<name>/proxy/<port>/status
    is jupyter-server-proxy on the user's own server."""
    import dask
    import distributed.utils

    pod = real_subcharts.release().user_pod(user="alice")
    with inside(pod, real_subcharts):
        assert dask.config.get("distributed.dashboard.link") == (
            "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status")
        link = distributed.utils.format_dashboard_link("10.1.2.3", 8787)
    assert link == "/user/alice/proxy/8787/status"


def test_local_hub_gets_the_same_dashboard_link(kit):
    """Without KubeSpawner nothing fills in `{…}` before Dask: the braces stay single."""
    c = kit.release(values={"jupyterhub": {"hub": {"config": {"JupyterHub": {
        "spawner_class": "simple"}}}}}).hub_config()
    assert c.Spawner.environment["DASK_DISTRIBUTED__DASHBOARD__LINK"] == (
        "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status")
    assert "DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE" not in c.Spawner.environment


OTHER_IMAGE = "ghcr.io/neuropixels-hub/notebook:0.1.0-gpu"
#: A profile that runs another image, and one whose image the user may type in.
IMAGE_PROFILES = {"jupyterhub": {"singleuser": {"profileList": [
    {"display_name": "Default", "slug": "default", "default": True},
    {"display_name": "GPU", "slug": "gpu", "kubespawner_override": {"image": OTHER_IMAGE}},
    {"display_name": "Pick", "slug": "pick", "profile_options": {"image": {
        "display_name": "Image", "choices": {
            "b": {"display_name": "B", "kubespawner_override": {"image": "example.org/b:2"}},
            "a": {"display_name": "A", "kubespawner_override": {"image": "example.org/a:1"}}},
        "unlisted_choice": {"enabled": True, "display_name": "Other",
                            "kubespawner_override": {"image": "{value}"}}}}},
]}}}


def _client_options(pod: dict, kit, **kwargs) -> dict:
    """The cluster options dask-gateway's client sends from inside this pod (its configured
    defaults, filled in from the environment, and ``kwargs``), caught by a stand-in gateway API
    on localhost."""
    import asyncio

    from aiohttp import web
    from dask_gateway import Gateway

    sent: list[dict] = []

    async def create(request):
        sent.append((await request.json())["cluster_options"])
        return web.json_response({"name": "neuro.abc"}, status=201)

    async def scenario() -> None:
        api = web.Application()
        api.router.add_post("/api/v1/clusters/", create)
        runner = web.AppRunner(api)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with Gateway(address=f"http://127.0.0.1:{port}", auth="basic",
                               asynchronous=True) as gateway:
                await gateway.submit(**kwargs)
        finally:
            await runner.cleanup()

    with inside(pod, kit):
        asyncio.run(scenario())
    (options,) = sent
    return options


@pytest.mark.parametrize("profile,image", [("default", IMAGE), ("gpu", OTHER_IMAGE)])
def test_workers_follow_the_notebooks_image(real_subcharts, profile, image):
    """The notebook's own image (KubeSpawner's JUPYTER_IMAGE_SPEC) reaches the gateway as the
    `image` option, and the controller runs the scheduler and workers with it."""
    kit = real_subcharts
    release = kit.release(values=IMAGE_PROFILES)
    pod = release.user_pod({"profile": profile})
    (container,) = pod["spec"]["containers"]
    assert container["image"] == image
    options = _client_options(pod, kit, worker_cores=2)
    assert options == {"image": image, "worker_cores": 2}
    for role, dask_pod in release.dask_pods(options).items():
        assert dask_pod["spec"]["containers"][0]["image"] == image, role
    assert release.settings["image"]["allowed"] == [
        IMAGE, OTHER_IMAGE, "example.org/a:1", "example.org/b:2"]


def test_a_typed_in_image_gets_no_cluster_silently(real_subcharts):
    """An image the operator did not list (an unlisted profile choice) is refused with the list
    of valid ones, not run, and not quietly replaced by another version."""
    from dask_gateway_server.backends.base import PublicException

    release = real_subcharts.release(values=IMAGE_PROFILES)
    with pytest.raises(PublicException, match="is not one of this hub's images: " + IMAGE):
        release.cluster_config({"image": "docker.io/someone/else:latest"})


# ---- per-user scratch space ---------------------------------------------------------------------

SCRATCH = {"scratch": {"url": "s3://lab-scratch/hub/"}}


@pytest.mark.parametrize("user", ["alice", "bob@lab.org"])
def test_scratch_bucket_per_user_in_notebook_and_workers(real_subcharts, user):
    kit = real_subcharts
    release = kit.release("secret-credentials", values=SCRATCH)
    notebook = kit.env_values(release.user_pod(user=user)["spec"]["containers"][0])
    assert notebook["SCRATCH_BUCKET"] == f"s3://lab-scratch/hub/{user}"
    for role, pod in release.dask_pods(user=user).items():
        assert env_of(pod)["SCRATCH_BUCKET"] == {"name": "SCRATCH_BUCKET",
                                                 "value": notebook["SCRATCH_BUCKET"]}, role
        assert "AWS_ACCESS_KEY_ID" in env_of(pod)  # and the same credentials to write it
    assert "SCRATCH_BUCKET" not in kit.env_values(
        kit.release("secret-credentials").user_pod()["spec"]["containers"][0])


def test_scratch_bucket_on_the_local_hub(kit):
    """The local spawner evaluates the same per-user value (a callable there)."""
    from types import SimpleNamespace

    c = kit.release(values={**SCRATCH, "jupyterhub": {"hub": {"config": {"JupyterHub": {
        "spawner_class": "simple"}}}}}).hub_config()
    value = c.Spawner.environment["SCRATCH_BUCKET"]
    assert value(SimpleNamespace(user=SimpleNamespace(name="carol"))) == "s3://lab-scratch/hub/carol"


def test_scratch_url_is_checked(helm):
    stderr = helm.template_error(sets=["scratch.url=lab-scratch"])
    assert "at '/scratch/url'" in stderr


# ---- images: pull secrets, digests -------------------------------------------------------------

def test_pull_secrets_add_to_the_subcharts_lists(real_subcharts):
    """The jupyterhub chart combines imagePullSecrets and singleuser.image.pullSecrets, the
    dask-gateway chart has gateway.backend.imagePullSecrets: ours come on top, never instead."""
    release = real_subcharts.release(sets=[
        "image.pullSecrets[0]=ours", "jupyterhub.imagePullSecrets[0]=hub-wide",
        "jupyterhub.singleuser.image.pullSecrets[0]=notebooks-only",
        "dask-gateway.gateway.backend.imagePullSecrets[0].name=dask-wide"])
    pod = release.user_pod()
    assert [s["name"] for s in pod["spec"]["imagePullSecrets"]] == [
        "hub-wide", "notebooks-only", "ours"]
    for role, dask_pod in release.dask_pods().items():
        assert dask_pod["spec"]["imagePullSecrets"] == [{"name": "dask-wide"},
                                                        {"name": "ours"}], role
    alone = real_subcharts.release(sets=["image.pullSecrets[0]=ours"])
    assert alone.user_pod()["spec"]["imagePullSecrets"] == [{"name": "ours"}]


def test_images_pin_by_digest(real_subcharts):
    """`tag: <tag>@sha256:<digest>` (and the same for the pre-puller): notebook, scheduler and
    worker all run exactly that build, and NOTES sees no mismatch."""
    kit = real_subcharts
    tag = f"0.1.0@{DIGEST}"
    release = kit.release(sets=[f"image.tag={tag}", f"jupyterhub.singleuser.image.tag={tag}"])
    pinned = f"ghcr.io/neuropixels-hub/notebook:{tag}"
    assert release.user_pod()["spec"]["containers"][0]["image"] == pinned
    for role, pod in release.dask_pods().items():
        assert pod["spec"]["containers"][0]["image"] == pinned, role
    out = kit.helm.run("install", "hub", str(kit.chart_dir), "--dry-run=client",
                       "--values", str(kit.EXAMPLES / kit.LOGIN), "--set", f"image.tag={tag}", "--set", f"jupyterhub.singleuser.image.tag={tag}")
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "differs from image" not in notes  # (the trial login's own warning may be there)


@pytest.mark.parametrize("tag", ["0.1.0@sha256:abc", f"0.1.0@md5:{DIGEST[7:]}", f"@{DIGEST}"])
def test_malformed_digests_are_refused(helm, tag):
    assert "at '/image/tag'" in helm.template_error(sets=[f"image.tag={tag}"])


# ---- Dask pods' resources -----------------------------------------------------------------------

@pytest.mark.parametrize("setting", [
    "dask-gateway.gateway.backend.worker.cores.limit=2",
    "dask-gateway.gateway.backend.worker.memory.limit=4G",
    "dask-gateway.gateway.backend.scheduler.cores.request=2",
])
def test_backend_sizes_of_the_gateway_chart_are_refused(helm, setting):
    """The dask-gateway chart's own size values would set limits below what a user may request
    (the API server refuses the pod); dask.* sizes Dask pods here."""
    key = setting.split("=")[0]
    stderr = helm.template_error(sets=[setting])
    assert f"{key} is set: Dask pod sizes come from dask." in stderr


def test_limits_follow_requests_whatever_else_sets_them(real_subcharts):
    """Limits set by another extraConfig (or a future chart default) cannot fall below what a
    user asks for: the snippet makes limits equal to requests."""
    kit = real_subcharts
    release = kit.release(values={"dask-gateway": {"gateway": {"extraConfig": {"00-limits": (
        "c.KubeClusterConfig.worker_cores_limit = 1\n"
        "c.KubeClusterConfig.worker_memory_limit = '2G'\n"
        "c.KubeClusterConfig.scheduler_cores_limit = 0.5\n")}}}})
    pods = release.dask_pods({"worker_cores": 4, "worker_memory": 16})
    for role, pod in pods.items():
        assert kit.resource_problems(pod["spec"]) == [], role
        resources = pod["spec"]["containers"][0]["resources"]
        assert resources["limits"] == resources["requests"], role
    assert pods["worker"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "4.000", "memory": str(16 * kit.GIB),
        "ephemeral-storage": "11Gi"}  # dask.worker.spillDisk + 1 GiB


# ---- Prometheus ---------------------------------------------------------------------------------

def test_schedulers_are_annotated_for_prometheus(real_subcharts):
    """Annotation-based discovery, for a Prometheus that uses it (off by default: the Prometheus
    Operator ignores annotations; metrics.enabled renders its monitors)."""
    kit = real_subcharts
    pods = kit.release(sets=["dask.scheduler.prometheusAnnotations=true"]).dask_pods()
    annotations = pods["scheduler"]["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8787",
        "prometheus.io/path": "/metrics"}
    assert 8787 in [p["containerPort"] for p in pods["scheduler"]["spec"]["containers"][0]["ports"]]
    assert not any(k.startswith("prometheus.io/") for k in pods["worker"]["metadata"]["annotations"])
    off = kit.release().dask_pods()
    assert not any(k.startswith("prometheus.io/")
                   for k in off["scheduler"]["metadata"]["annotations"])
