"""Fixtures for the chart tests: the real helm binary, the chart rendered under named value sets,
and helpers that turn the chart's Python snippets into real JupyterHub / dask-gateway config.

Why stub subcharts: the jupyterhub and dask-gateway charts cannot be downloaded here, and helm
refuses to render a chart whose dependencies are missing from charts/. The tests copy the chart to
a temporary directory with empty stand-ins of the two dependencies (same names and versions), which
renders exactly our own templates with our values.yaml, subchart keys included. With
`helm dependency update` the real charts take the stand-ins' place.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from neuropixels_dask.hublocal import merge_values  # Helm's rule for -f files, one copy

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "neuropixels-hub"
EXAMPLES = REPO / "helm" / "examples"
INSTALL_HELM = REPO / "scripts" / "install-helm.sh"
TOOLS_BIN = REPO / ".tools" / "bin"

RELEASE = "hub"
NAMESPACE = "neuro"

#: Named value sets rendered by the tests: example files applied over values.yaml.
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "secret-credentials": ("secret-credentials.yaml",),
    "iam-role": ("iam-role.yaml",),
    "custom-endpoint": ("custom-endpoint.yaml",),
    "profiles": ("profiles.yaml",),
    "spot-workers": ("spot-workers.yaml",),
}


def find_helm() -> str:
    """The helm binary: on PATH, else in .tools/bin, else installed there by the project script.

    Never skips: a missing helm is an error of the set-up, and the chart would go untested.
    """
    for candidate in (shutil.which("helm"), TOOLS_BIN / "helm"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    subprocess.run(["bash", str(INSTALL_HELM), str(TOOLS_BIN)], check=True, cwd=REPO)
    return str(TOOLS_BIN / "helm")


@pytest.fixture(scope="session")
def helm_bin() -> str:
    path = find_helm()
    out = subprocess.run([path, "version", "--short"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(("v3.", "v4.")), out.stdout
    return path


@pytest.fixture(scope="session")
def chart_dir(tmp_path_factory) -> Path:
    """A copy of the chart whose dependencies are empty stand-ins (see the module docstring)."""
    dst = tmp_path_factory.mktemp("chart") / CHART.name
    shutil.copytree(CHART, dst, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for dep in meta["dependencies"]:
        stub = dst / "charts" / dep["name"]
        stub.mkdir(parents=True)
        stub_meta = {"apiVersion": "v2", "name": dep["name"], "version": dep["version"]}
        (stub / "Chart.yaml").write_text(yaml.safe_dump(stub_meta))
    return dst


class Helm:
    """Runs helm against the staged chart."""

    def __init__(self, binary: str, chart: Path) -> None:
        self.binary = binary
        self.chart = chart

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, HELM_CACHE_HOME="/tmp/helm-cache", HELM_CONFIG_HOME="/tmp/helm-config")
        return subprocess.run([self.binary, *args], capture_output=True, text=True, env=env,
                              timeout=120)

    def template_args(self, files: Iterable[str] = (), sets: Iterable[str] = (),
                      release: str = RELEASE) -> list[str]:
        """``sets`` items go to --set, or to --set-json when prefixed with "json:" (helm's --set
        reads 0.5 as a string)."""
        args = ["template", release, str(self.chart), "--namespace", NAMESPACE]
        for name in files:
            args += ["--values", str(EXAMPLES / name) if "/" not in name else name]
        for item in sets:
            args += ["--set-json", item[5:]] if item.startswith("json:") else ["--set", item]
        return args

    def template(self, files: Iterable[str] = (), sets: Iterable[str] = (),
                 release: str = RELEASE) -> list[dict]:
        """Rendered objects of our templates; fails the test with helm's message on error."""
        out = self.run(*self.template_args(files, sets, release))
        if out.returncode != 0:
            pytest.fail(f"helm template failed:\n{out.stderr}")
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc]

    def template_error(self, files: Iterable[str] = (), sets: Iterable[str] = ()) -> str:
        """helm's error message for values that must be refused."""
        out = self.run(*self.template_args(files, sets))
        assert out.returncode != 0, f"helm accepted values it should refuse: {list(sets)}"
        return out.stderr


@pytest.fixture(scope="session")
def helm(helm_bin, chart_dir) -> Helm:
    return Helm(helm_bin, chart_dir)


@pytest.fixture(scope="session")
def render(helm) -> Callable[[str], list[dict]]:
    """``render(value_set_name)``: the rendered objects, cached for the session."""
    return functools.cache(lambda name: helm.template(VALUE_SETS[name]))




@functools.cache
def _values(name: str) -> str:
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    for file in VALUE_SETS[name]:
        merged = merge_values(merged, yaml.safe_load((EXAMPLES / file).read_text()))
    return json.dumps(merged)


def values_for(name: str) -> dict[str, Any]:
    """values.yaml with the value set's files applied (a fresh copy each call)."""
    return json.loads(_values(name))


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def settings_json(objects: list[dict]) -> str:
    """The settings document the chart renders for the hub and the gateway."""
    (cm,) = find(objects, "ConfigMap", "neuropixels-hub-settings")
    return cm["data"]["settings.json"]


def selector_matches(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def configurable_keys_problems(config, classes: Iterable[type]) -> list[str]:
    """Config keys that no configurable trait of the named class accepts (typos in snippets).

    traitlets only warns about unknown config, so a misspelt trait in a snippet would be ignored
    silently in production; this makes it an error.
    """
    by_name: dict[str, type] = {}
    for cls in classes:
        for base in cls.__mro__:
            if hasattr(base, "class_trait_names"):
                by_name.setdefault(base.__name__, base)
    problems: list[str] = []

    def check(prefix: str, section: str, entries) -> None:
        cls = by_name.get(section)
        if cls is None:
            problems.append(f"{prefix}{section}: no such configurable class")
            return
        known = set(cls.class_trait_names(config=True))
        for key, value in entries.items():
            if key[:1].isupper() and hasattr(value, "items"):
                # Nested section (c.DaskGateway.JupyterHubAuthenticator.x), as traitlets allows.
                check(f"{prefix}{section}.", key, value)
            elif key not in known:
                problems.append(f"{prefix}{section}.{key}: not a configurable trait")

    for section, entries in config.items():
        if hasattr(entries, "items"):
            check("c.", section, entries)
    return problems



# --- The hub: z2jh's config, our snippet, a real KubeSpawner ------------------------------------

def z2jh_config(values: dict, spawner_class: str = "kubespawner.KubeSpawner") -> Config:
    """What the jupyterhub chart's jupyterhub_config.py has set when hub.extraConfig runs."""
    jh = values["jupyterhub"]
    single = jh["singleuser"]
    c = Config()
    c.JupyterHub.spawner_class = spawner_class
    c.KubeSpawner.common_labels = {"app": "jupyterhub", "heritage": "jupyterhub", "release": RELEASE}
    c.KubeSpawner.namespace = NAMESPACE
    c.KubeSpawner.image = f"{single['image']['name']}:{single['image']['tag']}"
    c.KubeSpawner.uid = 1000
    c.KubeSpawner.fs_gid = 100
    c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-hub": "true"}
    c.KubeSpawner.environment = dict(single["extraEnv"])
    c.KubeSpawner.cpu_limit = float(single["cpu"]["limit"])
    c.KubeSpawner.cpu_guarantee = float(single["cpu"]["guarantee"])
    c.KubeSpawner.mem_limit = single["memory"]["limit"]
    c.KubeSpawner.mem_guarantee = single["memory"]["guarantee"]
    if "profileList" in single:
        c.KubeSpawner.profile_list = single["profileList"]
    c.Spawner.default_url = single["defaultUrl"]
    c.JupyterHub.services = []
    for key, service in jh["hub"]["services"].items():
        service = dict(service, name=key, api_token="0" * 64)  # the chart's generated token
        service.pop("apiToken", None)
        c.JupyterHub.services.append(service)
    c.JupyterHub.load_roles = []
    for key, role in (jh["hub"].get("loadRoles") or {}).items():  # a dict, mergeable by -f
        role = dict(role)
        role.setdefault("name", key)
        c.JupyterHub.load_roles.append(role)
    return c


def run_hub_snippets(c: Config, values: dict) -> None:
    """hub.extraConfig entries run in key order, each with `c` in scope, like the chart does."""
    for _key, code in sorted(values["jupyterhub"]["hub"]["extraConfig"].items()):
        exec(compile(code, "hub.extraConfig", "exec"), {"c": c})


@pytest.fixture
def no_kube_api(monkeypatch):
    """KubeSpawner connects to the Kubernetes API on creation; rendering a pod needs none."""
    import kubespawner.spawner

    monkeypatch.setattr(kubespawner.spawner, "load_config", lambda **kwargs: None)
    monkeypatch.setattr(kubespawner.spawner, "shared_client", lambda *args, **kwargs: None)


def user_pod(c: Config, user_options: dict | None = None) -> dict:
    """The pod manifest a real KubeSpawner makes from this config, as Kubernetes JSON."""
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner

    async def build() -> dict:
        spawner = KubeSpawner(config=c, _mock=True)
        if user_options is not None:
            spawner.user_options = user_options
            await spawner.load_user_options()
        pod = await spawner.get_pod_manifest()
        async with ApiClient() as api:
            return api.sanitize_for_serialization(pod)

    return asyncio.run(build())


@pytest.fixture
def hub_for(render, monkeypatch, no_kube_api):
    """``hub_for(value_set)``: (config after our snippet, rendered objects, settings dict)."""

    def make(name: str, spawner_class: str = "kubespawner.KubeSpawner"):
        objects = render(name)
        values = values_for(name)
        monkeypatch.setenv("NEUROPIXELS_HUB_SETTINGS", settings_json(objects))
        monkeypatch.delenv("PROXY_HTTP_SERVICE_HOST", raising=False)
        c = z2jh_config(values, spawner_class)
        run_hub_snippets(c, values)
        return c, objects, json.loads(settings_json(objects))

    return make


# --- The gateway: the chart's config file, our snippet, a real dask-gateway-server -------------

GATEWAY = f"{RELEASE}-dask-gateway"  # dask-gateway's fullname for this release
API_URL = f"http://api-{GATEWAY}.{NAMESPACE}:8000/api"
GIB = 2**30

#: What the dask-gateway chart's dask_gateway_config.py sets before gateway.extraConfig runs
#: (resources/helm/dask-gateway/templates/gateway/configmap.yaml), with its default values.
CHART_PREAMBLE = f"""
c.DaskGateway.log_level = "WARN"
c.DaskGateway.address = ":8000"
c.KubeBackend.api_url = "{API_URL}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.kubernetes.KubeBackend"
c.KubeBackend.gateway_instance = "{GATEWAY}"
c.KubeClusterConfig.image = "ghcr.io/dask/dask-gateway:2026.3.0"
c.KubeClusterConfig.image_pull_secrets = []
c.KubeClusterConfig.worker_threads = 1
c.KubeClusterConfig.environment = {{}}
c.KubeClusterConfig.scheduler_extra_pod_config = {{}}
c.KubeClusterConfig.scheduler_extra_container_config = {{}}
c.KubeClusterConfig.worker_extra_pod_config = {{"priorityClassName": "from-chart-values"}}
c.KubeClusterConfig.worker_extra_container_config = {{}}
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
c.DaskGateway.JupyterHubAuthenticator.jupyterhub_api_url = "http://hub:8081/hub/api"
"""

LOCAL_PREAMBLE = """
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
"""


def gateway_snippets(values: dict) -> str:
    extra = values["dask-gateway"]["gateway"]["extraConfig"]
    return "\n".join(f"# From gateway.extraConfig.{key}\n{extra[key]}" for key in sorted(extra))


@pytest.fixture
def gateway_for(render, tmp_path, monkeypatch):
    """``gateway_for(value_set, preamble)``: an initialized DaskGateway app and the settings."""
    from dask_gateway_server.app import DaskGateway

    def make(name: str, preamble: str = CHART_PREAMBLE, values: dict | None = None):
        objects = render(name)
        monkeypatch.setenv("NEUROPIXELS_HUB_SETTINGS", settings_json(objects))
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "0" * 64)  # from the hub's Secret, in the pod
        path = tmp_path / f"{name}-dask_gateway_config.py"
        path.write_text(preamble + "\n" + gateway_snippets(values or values_for(name)))
        app = DaskGateway()
        app.initialize([f"--config={path}"])
        return app, json.loads(settings_json(objects))

    return make


def user(name: str = "alice"):
    from dask_gateway_server.models import User

    return User(name, groups=[], admin=False)


def cluster_config(app, options: dict):
    return asyncio.run(app.backend.process_cluster_options(user(), options))


def dask_pods(app, options: dict) -> dict[str, dict]:
    """Scheduler and worker pods as the chart's controller would create them for this request.

    Goes through the DaskCluster object (JSON) the backend stores, like the real hand-over."""
    from dask_gateway_server.backends.kubernetes.controller import KubeController
    from dask_gateway_server.utils import FrozenAttrDict

    requested, config = cluster_config(app, options)
    obj = json.loads(json.dumps(app.backend.make_cluster_object("alice", requested, config)))
    controller = KubeController(gateway_instance=GATEWAY, api_url=API_URL)
    frozen = FrozenAttrDict(obj["spec"]["config"])
    name = obj["metadata"]["name"]
    return {
        "scheduler": controller.make_pod(NAMESPACE, name, frozen, is_worker=False),
        "worker": controller.make_pod(NAMESPACE, name, frozen, is_worker=True),
    }


def generated_pods(hub_for, gateway_for, value_set: str) -> dict[str, dict]:
    """The pods Kubernetes would run for a value set: a notebook, a scheduler, a worker."""
    c, _, _ = hub_for(value_set)
    app, _ = gateway_for(value_set)
    pods = dask_pods(app, {})
    return {"notebook": user_pod(c), "dask-scheduler": pods["scheduler"],
            "dask-worker": pods["worker"]}


class Kit:
    """Helpers and constants for the chart tests, handed out by the ``kit`` fixture (test modules
    cannot import this conftest by name: tests/conftest.py is also called conftest)."""

    RELEASE = RELEASE
    NAMESPACE = NAMESPACE
    GATEWAY = GATEWAY
    GIB = GIB
    REPO = REPO
    CHART = CHART
    EXAMPLES = EXAMPLES
    VALUE_SETS = VALUE_SETS
    CHART_PREAMBLE = CHART_PREAMBLE
    LOCAL_PREAMBLE = LOCAL_PREAMBLE
    values_for = staticmethod(values_for)
    merge_values = staticmethod(merge_values)
    find = staticmethod(find)
    settings_json = staticmethod(settings_json)
    selector_matches = staticmethod(selector_matches)
    configurable_keys_problems = staticmethod(configurable_keys_problems)
    z2jh_config = staticmethod(z2jh_config)
    run_hub_snippets = staticmethod(run_hub_snippets)
    user_pod = staticmethod(user_pod)
    user = staticmethod(user)
    cluster_config = staticmethod(cluster_config)
    dask_pods = staticmethod(dask_pods)
    generated_pods = staticmethod(generated_pods)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
