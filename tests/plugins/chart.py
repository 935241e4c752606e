"""The chart kit: the real helm, the chart rendered with the real subcharts, and what the real
JupyterHub/KubeSpawner and dask-gateway code makes of what they render.

A pytest plugin (``pytest_plugins`` in tests/conftest.py), so that tests/chart and
tests/reliability share it without importing each other's conftest.py. Test modules use its
fixtures; ``kit`` hands out the helpers.

**Subcharts.** ``helm/neuropixels-hub`` depends on the official jupyterhub and dask-gateway charts.
Their packages sit beside the repository in ``../shared/charts`` (in CI too), or in the chart's
``charts/`` after ``helm dependency update``; the kit unpacks them into a temporary copy of the
chart, never into the repository. Without them (a clone without ``../shared``), the chart renders
with empty stand-ins of the same names and versions: **smoke mode**, in which our own templates
and values are still tested, and whatever needs the subcharts' code skips, saying why.

**Running what the subcharts render.** Nothing of theirs is emulated. For the hub, the kit plays
the kubelet for the rendered ``hub`` Deployment: its ConfigMap and Secret volumes become files
under a temporary root, its environment is resolved from the rendered objects (plus the
``*_SERVICE_HOST/PORT`` variables Kubernetes derives from the rendered Services), and z2jh's own
``jupyterhub_config.py`` (with ``z2jh.py``, reading the Secret's ``values.yaml``) runs in that
environment, with only its mount paths pointed at the root. A real ``KubeSpawner`` builds the
user pod from the resulting config. For the gateway, dask-gateway's rendered
``dask_gateway_config.py`` is loaded by a real ``DaskGateway`` with the api Deployment's
arguments and environment; the controller's rendered config by a real ``KubeController``; the
backend turns a user's cluster options into the DaskCluster object, and the controller turns that
into the scheduler and worker pods. No API server is involved: the pods are built by the
projects' own functions (``get_pod_manifest``, ``make_pod``).

**What the API server and the kubelet would say** is checked here too: strict schemas (every
field known: the kubernetes client's models, the CRDs the subcharts ship), each container's
effective security context, requests within limits, and NetworkPolicy semantics.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import hashlib
import inspect
import ipaddress
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from neuropixels_dask.local.hub.launcher import merge_values  # Helm's rule for -f files, one copy

REPO = Path(__file__).resolve().parents[2]
#: The chart under test; NEUROPIXELS_HUB_CHART (as for `hub local`) points at another copy, e.g.
#: an older revision to show that a test fails there.
CHART = Path(os.environ.get("NEUROPIXELS_HUB_CHART", REPO / "helm" / "neuropixels-hub"))
EXAMPLES = CHART.parent / "examples"
#: Where CI and this workplace keep the real subchart packages (beside the repository);
#: NEUROPIXELS_HUB_SUBCHARTS names another directory (a missing one: smoke mode).
SHARED_CHARTS = Path(os.environ.get("NEUROPIXELS_HUB_SUBCHARTS", REPO.parent / "shared" / "charts"))
INSTALL_HELM = REPO / "scripts" / "install-helm.sh"
TOOLS_BIN = REPO / ".tools" / "bin"

RELEASE = "hub"
NAMESPACE = "neuro"
GATEWAY = f"{RELEASE}-dask-gateway"  # dask-gateway's fullname for this release
GIB = 2**30
#: The image's numeric user (images/notebook/Dockerfile's last USER; tests/chart checks it): the
#: kubelet verifies runAsNonRoot against it when a container sets no runAsUser.
IMAGE_UID = 1000
#: The chart's default image reference (values.yaml image.name:image.tag; `./dev image pin`
#: writes the tag, tests/chart/test_chart_image_pins.py checks it against the Dockerfile + lock).
DEFAULT_IMAGE = "{name}:{tag}".format(
    **yaml.safe_load((CHART / "values.yaml").read_text())["image"])

#: The least an operator must add to values.yaml: who may log in (the chart refuses to render
#: without it). The trial mode's example, under every value set that sets no login of its own.
LOGIN = "trial.yaml"
#: Where values name the authenticator (z2jh's hub.config).
AUTHENTICATOR_KEY = "jupyterhub.hub.config.JupyterHub.authenticator_class"

#: Named value sets: values.yaml with the login, and each example file over it (every
#: helm/examples/*.yaml, so a new example is covered without touching the tests; the login's own
#: file is "defaults").
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    **{path.stem: (path.name,) for path in sorted(EXAMPLES.glob("*.yaml"))
       if path.name != LOGIN},
}


def sets_login(values: Mapping) -> bool:
    """Whether a values mapping names an authenticator (then no login is added under it)."""
    node: Any = values
    for key in AUTHENTICATOR_KEY.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def with_login(files: Iterable[str]) -> tuple[str, ...]:
    """``files`` with the trial login first, unless one of them names its own authenticator."""
    files = tuple(files)
    for name in files:
        path = EXAMPLES / name if "/" not in str(name) else Path(name)
        if name == LOGIN or sets_login(yaml.safe_load(path.read_text()) or {}):
            return files
    return (LOGIN, *files)

SMOKE_REASON = ("smoke mode: the real jupyterhub and dask-gateway charts are not here "
                f"({SHARED_CHARTS} or `helm dependency update`), so their code cannot run")


def skip_smoke() -> None:
    """Skip a test that needs the subcharts' code, except in CI, where smoke mode would hide
    every such test behind a skip: there the missing charts are a failure of the set-up."""
    if os.environ.get("CI"):
        pytest.fail(f"{SMOKE_REASON}; CI tests the real subcharts: put shared/charts beside "
                    "the checkout or set NEUROPIXELS_HUB_SUBCHARTS")
    pytest.skip(SMOKE_REASON)


class PodWouldNotStart(Exception):  # noqa: N818 - the kubelet's verdict, not a program error
    """What the kubelet would refuse: a missing Secret/ConfigMap key (CreateContainerConfigError)."""


# ---- helm ------------------------------------------------------------------------------------

def find_helm() -> str:
    """The helm binary: on PATH, else in .tools/bin, else installed there by the project script.

    Never skips: a missing helm is an error of the set-up, and the chart would go untested.
    """
    for candidate in (shutil.which("helm"), TOOLS_BIN / "helm"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    subprocess.run(["bash", str(INSTALL_HELM), str(TOOLS_BIN)], check=True, cwd=REPO)
    return str(TOOLS_BIN / "helm")


def subchart_packages(chart: Path = CHART) -> dict[str, Path] | None:
    """The real subcharts' packages, exactly the versions Chart.yaml pins, or None."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    for directory in (SHARED_CHARTS, chart / "charts"):
        found = {dep["name"]: directory / f"{dep['name']}-{dep['version']}.tgz"
                 for dep in meta["dependencies"]}
        if all(path.is_file() for path in found.values()):
            return found
    return None


def stage_chart(dest: Path, chart: Path = CHART) -> tuple[Path, bool]:
    """A copy of the chart with its dependencies in charts/: the real ones unpacked, or empty
    stand-ins of the same names and versions (helm refuses to render a chart whose dependencies
    are missing). Returns the copy and whether the subcharts are real."""
    staged = dest / chart.name
    shutil.copytree(chart, staged, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    (staged / "charts").mkdir()
    packages = subchart_packages(chart)
    if packages:
        for package in packages.values():
            with tarfile.open(package) as tar:
                tar.extractall(staged / "charts", filter="data")
        return staged, True
    for dep in yaml.safe_load((chart / "Chart.yaml").read_text())["dependencies"]:
        stub = staged / "charts" / dep["name"]
        stub.mkdir()
        meta = {"apiVersion": "v2", "name": dep["name"], "version": dep["version"]}
        (stub / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return staged, False


def parse_manifests(text: str) -> tuple[list[dict], list[str]]:
    """helm's output as objects, and for each the template it came from (``# Source:``)."""
    objects, sources = [], []
    for chunk in re.split(r"^---[ \t]*$", text, flags=re.M):
        doc = yaml.safe_load(chunk)
        if not doc:
            continue
        source = re.search(r"^# Source: (\S+)", chunk, flags=re.M)
        objects.append(doc)
        sources.append(source.group(1) if source else "")
    return objects, sources


class Helm:
    """Runs helm against the staged chart (its own cache and config, in the session's tmp)."""

    def __init__(self, binary: str, chart: Path, home: Path) -> None:
        self.binary = binary
        self.chart = chart
        self.env = dict(os.environ, HELM_CACHE_HOME=str(home / "cache"),
                        HELM_CONFIG_HOME=str(home / "config"), HELM_DATA_HOME=str(home / "data"))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env,
                              timeout=120)

    def template_args(self, files: Iterable[str] = (), sets: Iterable[str] = (),
                      release: str = RELEASE, login: bool = True) -> list[str]:
        """``sets`` items go to --set, or to --set-json when prefixed with "json:" (helm's --set
        reads 0.5 as a string). ``files``: example names, or paths. ``login``: add the trial
        login (:data:`LOGIN`) unless the files or sets name an authenticator."""
        args = ["template", release, str(self.chart), "--namespace", NAMESPACE]
        sets = list(sets)
        if login and not any(AUTHENTICATOR_KEY in item for item in sets):
            files = with_login(files)
        for name in files:
            args += ["--values", str(EXAMPLES / name) if "/" not in str(name) else str(name)]
        for item in sets:
            args += ["--set-json", item[5:]] if item.startswith("json:") else ["--set", item]
        return args

    def template_all(self, files: Iterable[str] = (), sets: Iterable[str] = (),
                     release: str = RELEASE) -> tuple[list[dict], list[str]]:
        """Every rendered object (subcharts' and hooks included) and its source template."""
        out = self.run(*self.template_args(files, sets, release))
        if out.returncode != 0:
            pytest.fail(f"helm template failed:\n{out.stderr}")
        return parse_manifests(out.stdout)

    def template(self, files: Iterable[str] = (), sets: Iterable[str] = (),
                 release: str = RELEASE) -> list[dict]:
        """The objects of our own templates; fails the test with helm's message on error."""
        objects, sources = self.template_all(files, sets, release)
        return [o for o, s in zip(objects, sources, strict=True) if is_ours(s)]

    def template_error(self, files: Iterable[str] = (), sets: Iterable[str] = (),
                       login: bool = True) -> str:
        """helm's error message for values that must be refused."""
        out = self.run(*self.template_args(files, sets, login=login))
        assert out.returncode != 0, f"helm accepted values it should refuse: {list(sets)}"
        return out.stderr


def is_ours(source: str) -> bool:
    return source.startswith(f"{CHART.name}/templates/")


# ---- values and objects ----------------------------------------------------------------------

@functools.cache
def _values(name: str) -> str:
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    for file in with_login(VALUE_SETS[name]):
        merged = merge_values(merged, yaml.safe_load((EXAMPLES / file).read_text()))
    return json.dumps(merged)


def values_for(name: str) -> dict[str, Any]:
    """values.yaml with the value set's files applied (a fresh copy each call)."""
    return json.loads(_values(name))


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects
            if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


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


def pod_spec_of(obj: dict) -> dict | None:
    """The pod spec of a Pod or of a workload's pod template (Deployment, Job, CronJob, …)."""
    if obj.get("kind") == "Pod":
        return obj["spec"]
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template")
    return template.get("spec") if isinstance(template, dict) else None


# ---- the kubelet's side: environment, volumes ------------------------------------------------

def image_env() -> dict[str, str]:
    """What an image's ENV contributes to each container: this process's PATH, HOME and LANG
    stand in for the images' (nothing the charts' code reads depends on them)."""
    return {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}


@contextlib.contextmanager
def process_environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ is exactly ``env`` inside (a pod's environment), and as before afterwards."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def expand_references(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of env values ($$ escapes, unknown names stay)."""
    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, value)


class Release:
    """One ``helm template`` of the chart under some values, and what the real subcharts' code
    makes of it. Built once per distinct values (the kit caches them for the session)."""

    def __init__(self, kit: Kit, files: tuple[str, ...], sets: tuple[str, ...]) -> None:
        self.kit = kit
        self.files = files
        self.sets = sets
        self.objects, self.sources = kit.helm.template_all(files, sets)
        self.ours = [o for o, s in zip(self.objects, self.sources, strict=True) if is_ours(s)]
        self._workdir = kit.tmp / f"release-{len(kit.releases)}"
        self._hub_config = None
        self._gateway = None
        self._controller = None

    # -- objects --
    def find(self, kind: str, name: str | None = None) -> list[dict]:
        return find(self.objects, kind, name)

    def get(self, kind: str, name: str) -> dict:
        found = self.find(kind, name)
        if not found:
            raise PodWouldNotStart(f"{kind} {name!r} not rendered")
        return found[0]

    @property
    def settings(self) -> dict:
        return json.loads(settings_json(self.ours))

    def require_subcharts(self) -> None:
        if not self.kit.real_subcharts:
            skip_smoke()

    # -- what the kubelet gives a container --
    def service_env(self) -> dict[str, str]:
        """{SVC}_SERVICE_HOST/PORT[_NAME] for the rendered Services (and `kubernetes`)."""
        env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
               "KUBERNETES_SERVICE_PORT_HTTPS": "443"}
        services = sorted(self.find("Service"), key=lambda s: s["metadata"]["name"])
        for i, service in enumerate(services):
            spec = service.get("spec") or {}
            ports = spec.get("ports") or []
            if spec.get("clusterIP") == "None" or not ports:
                continue
            prefix = service["metadata"]["name"].upper().replace("-", "_")
            env[f"{prefix}_SERVICE_HOST"] = f"10.96.{1 + i // 200}.{10 + i % 200}"
            env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
            for port in ports:
                if port.get("name"):
                    env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = \
                        str(port["port"])
        return env

    def _key(self, kind: str, ref: dict) -> str | None:
        obj = self.find(kind, ref["name"])
        if not obj:
            if ref.get("optional"):
                return None
            raise PodWouldNotStart(f"{kind.lower()} {ref['name']!r} not found")
        data = self._data(obj[0])
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise PodWouldNotStart(f"couldn't find key {ref['key']} in {kind} {ref['name']}")
        return data[ref["key"]].decode()

    @staticmethod
    def _data(obj: dict) -> dict[str, bytes]:
        if obj["kind"] == "Secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
            return data
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def container_env(self, pod_spec: dict, container: dict,
                      pod_name: str = "pod-0") -> dict[str, str]:
        """The container's environment as the kubelet resolves it."""
        env = image_env()
        if pod_spec.get("enableServiceLinks", True):
            env.update(self.service_env())
        for source in container.get("envFrom") or []:
            kind, ref = (("ConfigMap", source["configMapRef"]) if "configMapRef" in source
                         else ("Secret", source["secretRef"]))
            if obj := self.find(kind, ref["name"]):
                env.update({source.get("prefix", "") + k: v.decode()
                            for k, v in self._data(obj[0]).items()})
            elif not ref.get("optional"):
                raise PodWouldNotStart(f"{kind.lower()} {ref['name']!r} not found")
        fields = {"metadata.namespace": NAMESPACE, "metadata.name": pod_name,
                  "spec.nodeName": "node-0", "status.podIP": "10.244.0.10",
                  "spec.serviceAccountName": pod_spec.get("serviceAccountName", "default")}
        for item in container.get("env") or []:
            source = item.get("valueFrom")
            if source is None:
                value = expand_references(item.get("value", ""), env)
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                value = fields.get(path, f"<{path}>")
            elif "secretKeyRef" in source:
                value = self._key("Secret", source["secretKeyRef"])
            elif "configMapKeyRef" in source:
                value = self._key("ConfigMap", source["configMapKeyRef"])
            else:
                continue  # resourceFieldRef: nothing here reads it
            if value is not None:
                env[item["name"]] = value
        return env

    def _volume_files(self, volume: dict) -> dict[str, bytes]:
        for kind, key, name_key in (("ConfigMap", "configMap", "name"),
                                    ("Secret", "secret", "secretName")):
            if key in volume:
                source = volume[key]
                obj = self.find(kind, source[name_key])
                if not obj:
                    if source.get("optional"):
                        return {}
                    raise PodWouldNotStart(f"{kind.lower()} {source[name_key]!r} not found")
                data = self._data(obj[0])
                if "items" in source:
                    return {item["path"]: data[item["key"]] for item in source["items"]}
                return data
        return {}  # persistentVolumeClaim, emptyDir: empty directories here

    def mount_volumes(self, pod_spec: dict, container: dict, root: Path) -> None:
        """The container's volumeMounts as files under ``root`` (subPath mounts included)."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            files = self._volume_files(volumes[mount["name"]])
            target = root / mount["mountPath"].lstrip("/")
            if mount.get("subPath") and mount["subPath"] in files:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(files[mount["subPath"]])
                continue
            target.mkdir(parents=True, exist_ok=True)
            if not mount.get("subPath"):
                for path, data in files.items():
                    (target / path).parent.mkdir(parents=True, exist_ok=True)
                    (target / path).write_bytes(data)

    # -- the hub --
    def hub_config(self):
        """The traitlets Config after z2jh's jupyterhub_config.py (our extraConfig included) ran
        in the hub pod's files and environment. A fresh copy each call."""
        self.require_subcharts()
        if self._hub_config is None:
            self._hub_config, self.hub_http_client = self._run_hub_config()
        return copy.deepcopy(self._hub_config)

    def _run_hub_config(self):
        # Imported before the environment is replaced (their import needs none).
        import jupyterhub.utils  # noqa: F401
        import kubernetes_asyncio.client  # noqa: F401
        from tornado.httpclient import AsyncHTTPClient
        from traitlets.config.loader import PyFileConfigLoader

        deployment = self.get("Deployment", "hub")
        spec = deployment["spec"]["template"]["spec"]
        (container,) = [c for c in spec["containers"] if c["name"] == "hub"]
        root = self._workdir / "hub"
        self.mount_volumes(spec, container, root)
        args = container["args"]
        config_file = args[args.index("--config") + 1]
        confdir = posixpath.dirname(config_file) + "/"
        local_dir = root / confdir.lstrip("/")
        # z2jh.py and jupyterhub_config.py name their mount points literally; point those at
        # the copies (nothing else of the files changes).
        for py in sorted(local_dir.glob("*.py")):
            text = py.read_text()
            py.write_text(text.replace(confdir, f"{root}{confdir}"))
        assert str(root) in (local_dir / "z2jh.py").read_text(), "z2jh.py reads no mounted file?"
        env = self.container_env(spec, container, "hub-0")

        calls: list[str] = []
        saved_path = list(sys.path)
        sys.modules.pop("z2jh", None)
        try:
            # The config picks tornado's curl HTTP client for the hub process (the hub image has
            # pycurl); recorded rather than applied, as it would change this test process.
            with process_environment(env), mock.patch.object(
                    AsyncHTTPClient, "configure", lambda impl, **kw: calls.append(impl)):
                loader = PyFileConfigLoader(posixpath.basename(config_file), str(local_dir))
                config = loader.load_config()
        finally:
            sys.path[:] = saved_path
            sys.modules.pop("z2jh", None)
        return config, calls

    def user_pod(self, user_options: dict | None = None, user: str = "alice",
                 config=None, admin: bool = False) -> dict:
        """The notebook pod a real KubeSpawner makes for ``user`` from the hub's config."""
        return user_pod(config if config is not None else self.hub_config(), user_options, user,
                        admin)

    # -- the gateway --
    def _gateway_container(self, controller: bool) -> tuple[dict, dict]:
        for deployment in self.find("Deployment"):
            spec = deployment["spec"]["template"]["spec"]
            for container in spec["containers"]:
                args = container.get("args") or []
                if args[:1] == ["dask-gateway-server"] and ("kube-controller" in args) == controller:
                    return spec, container
        raise PodWouldNotStart("no dask-gateway Deployment rendered")

    def _dask_gateway_app(self, controller: bool):
        from dask_gateway_server.app import DaskGateway

        spec, container = self._gateway_container(controller)
        root = self._workdir / ("controller" if controller else "gateway")
        if not root.exists():
            self.mount_volumes(spec, container, root)
        mounts = [m["mountPath"] for m in container.get("volumeMounts") or []]
        args = [str(root / a.lstrip("/")) if any(a.startswith(m) for m in mounts) else a
                for a in container["args"][1:]]
        env = self.container_env(spec, container, "controller-0" if controller else "api-0")
        with process_environment(env):
            app = DaskGateway()
            app.initialize(args)
        return app.subapp if controller else app

    def gateway(self):
        """A fresh, initialized DaskGateway of the api pod (its backend is ours)."""
        self.require_subcharts()
        app = self._dask_gateway_app(controller=False)
        self.kit.release_of_app[app] = self
        return app

    def controller(self):
        """The KubeController of the controller pod (cached: building pods does not change it)."""
        self.require_subcharts()
        if self._controller is None:
            self._controller = self._dask_gateway_app(controller=True)
        return self._controller

    def cluster_config(self, options: dict, user: str = "alice", app=None):
        """(requested options, cluster config) as the gateway's backend makes them."""
        app = app or self._cached_gateway()
        return asyncio.run(app.backend.process_cluster_options(hub_user(user), options))

    def _cached_gateway(self):
        if self._gateway is None:
            self._gateway = self.gateway()
        return self._gateway

    def cluster_object(self, options: dict | None = None, user: str = "alice",
                       app=None) -> dict:
        """The DaskCluster object the backend hands to the controller (as JSON, like the real
        hand-over through the API server)."""
        app = app or self._cached_gateway()
        requested, config = self.cluster_config(options or {}, user, app)
        return json.loads(json.dumps(app.backend.make_cluster_object(user, requested, config)))

    def dask_pods(self, options: dict | None = None, user: str = "alice",
                  app=None) -> dict[str, dict]:
        """Scheduler and worker pods as the real controller makes them for this request."""
        from dask_gateway_server.utils import FrozenAttrDict

        obj = self.cluster_object(options, user, app)
        config = FrozenAttrDict(obj["spec"]["config"])
        name = obj["metadata"]["name"]
        controller = self.controller()
        return {"scheduler": controller.make_pod(NAMESPACE, name, config, is_worker=False),
                "worker": controller.make_pod(NAMESPACE, name, config, is_worker=True)}

    def pods(self, user_options: dict | None = None,
             cluster_options: dict | None = None) -> dict[str, dict]:
        """The pods Kubernetes would run for this release: a notebook, a scheduler, a worker."""
        dask = self.dask_pods(cluster_options)
        return {"notebook": self.user_pod(user_options), "dask-scheduler": dask["scheduler"],
                "dask-worker": dask["worker"]}


# ---- KubeSpawner without a cluster -----------------------------------------------------------

def hub_user(name: str = "alice"):
    """A gateway user, as the JupyterHub authenticator makes it."""
    from dask_gateway_server.models import User

    return User(name, groups=[], admin=False)


@contextlib.contextmanager
def no_kube_api() -> Iterator[None]:
    """KubeSpawner connects to the Kubernetes API on creation; building a pod needs none."""
    import kubespawner.spawner

    with mock.patch.object(kubespawner.spawner, "load_config", lambda **kwargs: None), \
            mock.patch.object(kubespawner.spawner, "shared_client", lambda *a, **kw: None):
        yield


def user_pod(c, user_options: dict | None = None, user: str = "alice",
             admin: bool = False) -> dict:
    """The pod manifest a real KubeSpawner makes from config ``c``, as Kubernetes JSON: for a
    user named ``user`` (a hub admin or not) whose server lives at /user/<user>/
    (JUPYTERHUB_SERVICE_PREFIX), after the pre-spawn hook that JupyterHub runs before start."""
    from jupyterhub.objects import Server
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner

    owner = types.SimpleNamespace(name=user, id=1, url=f"/user/{user}/", escaped_name=user,
                                  admin=admin)

    async def build() -> dict:
        spawner = KubeSpawner(config=c, _mock=True, user=owner)
        spawner.server = Server(base_url=f"/user/{user}/")
        if user_options is not None:
            spawner.user_options = user_options
            await spawner.load_user_options()
        result = spawner.run_pre_spawn_hook()
        if inspect.isawaitable(result):
            await result
        pod = await spawner.get_pod_manifest()
        async with ApiClient() as api:
            return api.sanitize_for_serialization(pod)

    with no_kube_api():
        return asyncio.run(build())


def env_values(container: dict) -> dict[str, str]:
    """A container's literal env values (no valueFrom)."""
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


# ---- what the API server checks: strict schemas ----------------------------------------------

#: bytes: a Secret's data, base64 text in JSON.
PRIMITIVES = {"str": str, "bytes": str, "int": int, "float": (int, float), "bool": bool}


def model_for(api_version: str, kind: str) -> str:
    """`networking.k8s.io/v1` + `NetworkPolicy` -> `V1NetworkPolicy`."""
    version = api_version.rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + kind


def model_problems(value, type_name: str, path: str) -> list[str]:
    """Unknown fields and wrong types, recursively, by the kubernetes client's openapi_types."""
    import kubernetes.client

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
                for p in model_problems(item, m.group(1), f"{path}[{i}]")]
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
                for p in model_problems(item, inner, f"{path}.{k}")]
    model = getattr(kubernetes.client, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} object"]
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in by_json:
            problems.append(f"{path}.{key}: unknown field of {type_name}")
        elif item is not None:
            problems += model_problems(item, model.openapi_types[by_json[key]], f"{path}.{key}")
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


def _strict_crd_schema(schema: dict) -> dict:
    """A CRD's openAPIV3Schema with unknown fields as errors (kubectl --validate=strict):
    ``additionalProperties: false`` wherever it lists properties and preserves nothing."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: _strict_crd_schema(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
                "x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _strict_crd_schema(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [_strict_crd_schema(s) for s in schema[key]]
    return schema


def load_crds(chart_dir: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict schema, from every crds/ directory of the staged chart."""
    crds = {}
    for path in sorted(chart_dir.glob("**/crds/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema", {})
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                crds[key] = _strict_crd_schema(schema)
    return crds


def strict_problems(obj: dict, crds: Mapping[tuple[str, str], dict] | None = None) -> list[str]:
    """What a strict API server would refuse in ``obj``: unknown fields, wrong types, missing
    required fields; built-in kinds by the kubernetes client's models, custom resources by the
    schema of their CRD (metadata by ObjectMeta)."""
    import jsonschema
    from kubernetes.client import ApiClient

    where = f"{obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"
    key = (obj["apiVersion"], obj["kind"])
    if crds and key in crds:
        problems = model_problems(obj.get("metadata", {}), "V1ObjectMeta", f"{where}.metadata")
        body = {k: v for k, v in obj.items() if k != "metadata"}
        schema = dict(crds[key], properties={
            k: v for k, v in crds[key].get("properties", {}).items() if k != "metadata"},
            required=[k for k in crds[key].get("required", []) if k != "metadata"])
        validator = jsonschema.Draft7Validator(schema)
        problems += [f"{where}.{'.'.join(map(str, e.absolute_path))}: {e.message}"
                     for e in validator.iter_errors(body)]
        return problems
    name = model_for(obj["apiVersion"], obj["kind"])
    import kubernetes.client

    if not hasattr(kubernetes.client, name):
        return [f"{where}: no schema for {obj['apiVersion']} {obj['kind']}"]
    problems = model_problems(obj, name, where)
    if not problems:
        try:
            ApiClient()._ApiClient__deserialize(quantities_as_strings(obj), name)
        except (ValueError, TypeError) as err:
            problems.append(f"{where}: {err}")
    return problems


# ---- what the kubelet checks: security contexts and resources --------------------------------

#: PodSecurityContext fields that a container's SecurityContext overrides.
SHARED_SECURITY_FIELDS = ("runAsUser", "runAsGroup", "runAsNonRoot", "seLinuxOptions",
                          "seccompProfile", "windowsOptions", "appArmorProfile")


def effective_security_context(pod_spec: dict, container: dict) -> dict:
    """The container's own securityContext merged over the pod's (Kubernetes' rule)."""
    pod = pod_spec.get("securityContext") or {}
    effective = {k: pod[k] for k in SHARED_SECURITY_FIELDS if k in pod}
    effective.update(container.get("securityContext") or {})
    return effective


def all_containers(pod_spec: dict) -> list[dict]:
    return [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]


def start_problems(pod_spec: dict, image_users: Mapping[str, int]) -> list[str]:
    """Why the kubelet or the API server would refuse a container of this pod spec.

    ``image_users``: the numeric USER of images we know (the kubelet checks runAsNonRoot
    against it when no runAsUser is set)."""
    problems = []
    for container in all_containers(pod_spec):
        sc = effective_security_context(pod_spec, container)
        name = container["name"]
        uid = sc.get("runAsUser", image_users.get(container.get("image", "")))
        if sc.get("runAsNonRoot"):
            if uid == 0:
                problems.append(f"{name}: runAsNonRoot with runAsUser 0 "
                                "(CreateContainerConfigError: container would run as root)")
            elif uid is None:
                problems.append(f"{name}: runAsNonRoot, but no runAsUser and an image whose "
                                "user is not known to be numeric and non-root")
            if sc.get("privileged"):
                problems.append(f"{name}: privileged under runAsNonRoot")
        if sc.get("privileged") and sc.get("allowPrivilegeEscalation") is False:
            problems.append(f"{name}: privileged with allowPrivilegeEscalation false "
                            "(refused by the API server)")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if sc.get("allowPrivilegeEscalation") is False and added & {"SYS_ADMIN", "CAP_SYS_ADMIN"}:
            problems.append(f"{name}: CAP_SYS_ADMIN with allowPrivilegeEscalation false "
                            "(refused by the API server)")
    return problems


def resource_problems(pod_spec: dict) -> list[str]:
    """Requests above limits, which the API server refuses."""
    from kubernetes.utils.quantity import parse_quantity

    problems = []
    for container in all_containers(pod_spec):
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for resource, limit in limits.items():
            request = requests.get(resource)
            if request is not None and parse_quantity(request) > parse_quantity(limit):
                problems.append(f"{container['name']}: {resource} request {request} > "
                                f"limit {limit}")
    return problems


# ---- NetworkPolicy semantics -----------------------------------------------------------------

def peer_matches(peer: dict, target: tuple, policy_namespace: str = NAMESPACE) -> bool:
    """``target``: ("pod", labels, namespace labels) or ("ip", address)."""
    if "ipBlock" in peer:
        if target[0] != "ip":
            return False
        ip = ipaddress.ip_address(target[1])
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if target[0] != "pod":
        return False
    _, labels, ns_labels = target
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif ns_labels.get("kubernetes.io/metadata.name") != policy_namespace:
        return False  # a bare podSelector means pods of the policy's namespace
    return "podSelector" not in peer or selector_matches(peer["podSelector"], labels)


def port_matches(rule: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and (
        "port" not in p or p["port"] == port or
        (isinstance(p["port"], int) and p["port"] <= port <= p.get("endPort", p["port"])))
        for p in ports)


def allowed(policies: list[dict], direction: str, pod_labels: dict, peer: tuple, port: int,
            protocol: str = "TCP") -> bool:
    """Kubernetes semantics: a pod selected by a policy of this direction is isolated, and then
    only what some rule of some selecting policy allows gets through (policies add up)."""
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if selector_matches(p["spec"]["podSelector"], pod_labels)
                 and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            if (peers not in rule or any(peer_matches(x, peer) for x in rule[peers])) \
                    and port_matches(rule, port, protocol):
                return True
    return False


def pod_peer(labels: dict, namespace: str = NAMESPACE) -> tuple:
    return ("pod", labels, {"kubernetes.io/metadata.name": namespace})


# ---- the kit ---------------------------------------------------------------------------------

class Kit:
    """Helpers and constants for the chart tests, handed out by the ``kit`` fixture, plus the
    session's releases (one per distinct values)."""

    RELEASE = RELEASE
    NAMESPACE = NAMESPACE
    GATEWAY = GATEWAY
    GIB = GIB
    IMAGE_UID = IMAGE_UID
    REPO = REPO
    CHART = CHART
    EXAMPLES = EXAMPLES
    VALUE_SETS = VALUE_SETS
    LOGIN = LOGIN
    with_login = staticmethod(with_login)
    SHARED_CHARTS = SHARED_CHARTS
    SMOKE_REASON = SMOKE_REASON
    subchart_packages = staticmethod(subchart_packages)
    PodWouldNotStart = PodWouldNotStart
    values_for = staticmethod(values_for)
    merge_values = staticmethod(merge_values)
    find = staticmethod(find)
    settings_json = staticmethod(settings_json)
    selector_matches = staticmethod(selector_matches)
    configurable_keys_problems = staticmethod(configurable_keys_problems)
    pod_spec_of = staticmethod(pod_spec_of)
    all_containers = staticmethod(all_containers)
    effective_security_context = staticmethod(effective_security_context)
    start_problems = staticmethod(start_problems)
    resource_problems = staticmethod(resource_problems)
    model_problems = staticmethod(model_problems)
    allowed = staticmethod(allowed)
    pod_peer = staticmethod(pod_peer)
    env_values = staticmethod(env_values)
    user = staticmethod(hub_user)
    process_environment = staticmethod(process_environment)

    def __init__(self, helm: Helm, chart_dir: Path, real_subcharts: bool, tmp: Path) -> None:
        self.helm = helm
        self.chart_dir = chart_dir
        self.real_subcharts = real_subcharts
        self.tmp = tmp
        self.releases: dict[tuple, Release] = {}
        self.release_of_app: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.crds = load_crds(chart_dir)

    def release(self, value_set: str | None = "defaults", files: Iterable[str] = (),
                sets: Iterable[str] = (), values: Mapping | None = None) -> Release:
        """The chart rendered with a value set's files, then ``files``, a values mapping
        (written to a file) and ``sets``; cached for the session."""
        files = (*(VALUE_SETS[value_set] if value_set else ()), *files)
        if values is not None:
            text = yaml.safe_dump(json.loads(json.dumps(values)), sort_keys=True)
            path = self.tmp / f"values-{hashlib.sha1(text.encode()).hexdigest()[:12]}.yaml"
            path.write_text(text)
            files = (*files, str(path))
        key = (tuple(files), tuple(sets))
        if key not in self.releases:
            self.releases[key] = Release(self, *key)
        return self.releases[key]

    def strict_problems(self, obj: dict) -> list[str]:
        return strict_problems(obj, self.crds)

    def image_users(self, release: Release) -> dict[str, int]:
        """Our images (the chart's and the profiles') run as the Dockerfile's numeric user."""
        return dict.fromkeys(release.settings["image"].get("allowed")
                             or [release.settings["image"]["ref"]], IMAGE_UID)

    # Compatibility with the fixtures' (config, app) style.
    @staticmethod
    def user_pod(c, user_options: dict | None = None, user: str = "alice") -> dict:
        return user_pod(c, user_options, user)

    def _release_of(self, app) -> Release:
        return self.release_of_app[app]

    def cluster_config(self, app, options: dict):
        return self._release_of(app).cluster_config(options, app=app)

    def dask_pods(self, app, options: dict | None = None) -> dict[str, dict]:
        return self._release_of(app).dask_pods(options, app=app)

    def generated_pods(self, value_set: str, user_options: dict | None = None,
                       cluster_options: dict | None = None) -> dict[str, dict]:
        """The pods Kubernetes would run for a value set: a notebook, a scheduler, a worker."""
        release = self.release(value_set)
        release.require_subcharts()
        return release.pods(user_options, cluster_options)


# ---- fixtures --------------------------------------------------------------------------------

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``values_name``: every value set (defaults and each helm/examples/*.yaml)."""
    if "values_name" in metafunc.fixturenames:
        metafunc.parametrize("values_name", list(VALUE_SETS))


@pytest.fixture(scope="session")
def helm_bin() -> str:
    path = find_helm()
    out = subprocess.run([path, "version", "--short"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(("v3.", "v4.")), out.stdout
    return path


@pytest.fixture(scope="session")
def _staged_chart(tmp_path_factory) -> tuple[Path, bool]:
    return stage_chart(tmp_path_factory.mktemp("chart"))


@pytest.fixture(scope="session")
def chart_dir(_staged_chart) -> Path:
    """The staged copy of the chart, with the real subcharts in charts/ when available."""
    return _staged_chart[0]


@pytest.fixture(scope="session")
def helm(helm_bin, chart_dir, tmp_path_factory) -> Helm:
    return Helm(helm_bin, chart_dir, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def kit(helm, _staged_chart, tmp_path_factory) -> Kit:
    return Kit(helm, _staged_chart[0], _staged_chart[1], tmp_path_factory.mktemp("releases"))


@pytest.fixture(scope="session")
def real_subcharts(kit) -> Kit:
    """The kit, for tests that need the subcharts' code; skips in smoke mode only."""
    if not kit.real_subcharts:
        skip_smoke()
    return kit


@pytest.fixture(scope="session")
def render(kit) -> Callable[[str], list[dict]]:
    """``render(value_set_name)``: the objects of our own templates, cached for the session."""
    return lambda name: copy.deepcopy(kit.release(name).ours)


@pytest.fixture
def hub_for(kit):
    """``hub_for(value_set, values=None)``: (hub config after z2jh's jupyterhub_config.py and
    our snippet, our rendered objects, settings dict)."""

    def make(name: str, values: Mapping | None = None):
        release = kit.release(name, values=values)
        return release.hub_config(), copy.deepcopy(release.ours), release.settings

    return make


@pytest.fixture
def gateway_for(kit):
    """``gateway_for(value_set, values=None)``: a fresh DaskGateway initialized from the rendered
    dask_gateway_config.py in the api pod's environment, and the settings dict."""

    def make(name: str, values: Mapping | None = None):
        release = kit.release(name, values=values)
        return release.gateway(), release.settings

    return make
