"""``neuropixels-dask hub local``: the hub, end to end on one machine, configured by the chart.

Runs every moving part of the Helm chart except Kubernetes itself, on 127.0.0.1:

- **configurable-http-proxy** (the jupyterhub chart's ``proxy`` pod), from npm
  (``scripts/install-chp.sh``);
- **JupyterHub** with a shared-password authenticator and a local process spawner (instead of an
  OAuth login and KubeSpawner): each user gets a real JupyterLab (``jupyterhub-singleuser``, the
  image's notebook server, from the ``notebook`` extra) in a home folder under the workdir,
  seeded with the example notebooks by the chart's own ``postStart`` hook, its kernels running
  with exactly the environment the chart gives a user pod;
- **dask-gateway-server** registered as the hub service ``dask-gateway``, authenticating users
  with their JupyterHub token, clusters as local processes (instead of the KubeBackend);
- the **local S3 server** holding a synthetic cache at the chart's ``cache.url``, readable only
  with the credentials the chart hands to notebooks and workers.

Nothing here is a second copy of the chart's configuration. The launcher

1. merges ``helm/neuropixels-hub/values.yaml`` with the operator's ``-f`` files (Helm's rule),
2. renders the settings document ``NEUROPIXELS_HUB_SETTINGS`` with the real ``helm template``
   (the chart's own ConfigMap; a Python rendering of the same template only when no helm binary
   is found, see :func:`render_settings_python`),
3. writes a ``jupyterhub_config.py`` and a ``dask_gateway_config.py`` that run the chart's
   ``extraConfig`` snippets verbatim against the servers' real ``c``
   (:mod:`neuropixels_dask.local.hub.serverconfig`).

What the launcher adds is only what Kubernetes would otherwise provide: ports on localhost, a
local spawner and backend, the proxy binary, the S3 endpoint (``s3.endpointUrl``,
``s3.anon=false``) and the Secret behind ``credentials.existingSecret`` (it plays the kubelet,
resolving the chart's ``secretKeyRef`` entries; running the notebook container's ``postStart``
hook), and the example notebooks from the package (:func:`..resources.notebooks_dir`). The
per-process lifetime is managed here too: every process runs in its own process group, carries a
marker in its environment (so do the users' servers and kernels, which inherit it), and
:meth:`HubLocal.stop` (also on Ctrl-C, SIGTERM and at interpreter exit) stops them in order and
kills whatever survived.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ...errors import NeuropixelsDaskError
from .. import resources
from ..cli import needs_extra
from . import serverconfig
from .serverconfig import RUN_MARKER

__all__ = ["HubLocal", "HubLocalError", "find_helm", "find_chp", "load_values",
           "merge_values", "register_cli", "render_settings_helm", "render_settings_python"]

SETTINGS_TEMPLATE = "templates/settings-configmap.yaml"
#: "neuropixels-hub.jupyterConfigName": the notebooks' Jupyter configuration files.
JUPYTER_CONFIG = "neuropixels-hub-jupyter"
#: Name of the Secret the launcher plays when the values name none.
LOCAL_SECRET = "hub-local-s3"
#: The scope a hub token needs for the gateway (the chart's gateway snippet enforces it).
GATEWAY_SCOPE = "access:services!service=dask-gateway"
#: Who may log in when no --user is given (the trial mode needs an allow list).
DEFAULT_USER = "demo"
#: Environment variables of the launcher that must not leak into the servers (or their users).
_PRIVATE_PREFIXES = ("DASK_GATEWAY__", "NEUROPIXELS_DASK__", "AWS_", "JUPYTERHUB_",
                     "CONFIGPROXY_", "NEUROPIXELS_HUB_SETTINGS", RUN_MARKER)


class HubLocalError(NeuropixelsDaskError):
    """The local hub could not be set up (a missing tool, a port in use, a server that died)."""


# ------------------------------------------------------------------------------------ values


def default_chart() -> Path:
    """The chart: ``$NEUROPIXELS_HUB_CHART``, else the copy inside the package."""
    return resources.chart_dir()


def merge_values(base: Mapping, override: Mapping) -> dict:
    """Helm's rule for ``-f`` files: maps merge key by key, anything else (lists too) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_values(chart: Path | None = None, files: Iterable[str | os.PathLike] = (),
                overrides: Iterable[Mapping] = ()) -> dict:
    """``values.yaml`` of the chart with ``files`` and then ``overrides`` applied in order."""
    chart = Path(chart or default_chart())
    values = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    for path in files:
        values = merge_values(values, yaml.safe_load(Path(path).read_text()) or {})
    for extra in overrides:
        values = merge_values(values, extra)
    return values


# ---------------------------------------------------------------------------------- settings


def trial_login(users: Iterable[str], password: str) -> dict[str, Any]:
    """``jupyterhub.hub.config`` of the chart's trial mode (helm/examples/trial.yaml): the
    listed users, each with the shared password, and nobody else (no admins: admin_users of the
    operator's files would need an admin password)."""
    return {"JupyterHub": {"authenticator_class": "shared-password"},
            "SharedPasswordAuthenticator": {"user_password": password},
            "Authenticator": {"allowed_users": list(users), "admin_users": []}}


def find_helm() -> str | None:
    """``helm``: ``$HELM_BIN``, else on PATH (``./dev`` puts ``.tools/bin`` there)."""
    for candidate in (os.environ.get("HELM_BIN"), shutil.which("helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _stage_chart(chart: Path, dest: Path) -> Path:
    """A copy of the chart whose dependencies are empty stand-ins (tests/chart does the same):
    helm refuses to render a chart whose subcharts were never downloaded, and the settings
    ConfigMap is our own template, independent of them."""
    staged = dest / chart.name
    if staged.exists():
        shutil.rmtree(staged)
    shutil.copytree(chart, staged, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    for dep in meta.get("dependencies") or []:
        stub = staged / "charts" / dep["name"]
        stub.mkdir(parents=True)
        stub_meta = {"apiVersion": "v2", "name": dep["name"], "version": dep["version"]}
        (stub / "Chart.yaml").write_text(yaml.safe_dump(stub_meta))
    return staged


def render_settings_helm(helm: str, chart: Path, value_files: Iterable[str | os.PathLike],
                         workdir: Path, release: str = "hub",
                         namespace: str = "default") -> dict:
    """The settings document from the chart's own ConfigMap, rendered by the real helm."""
    staged = _stage_chart(Path(chart), Path(workdir))
    args = [helm, "template", release, str(staged), "--namespace", namespace,
            "--show-only", SETTINGS_TEMPLATE]
    for path in value_files:
        args += ["--values", str(path)]
    env = dict(os.environ, HELM_CACHE_HOME=str(Path(workdir) / "helm-cache"),
               HELM_CONFIG_HOME=str(Path(workdir) / "helm-config"),
               HELM_DATA_HOME=str(Path(workdir) / "helm-data"))
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    if out.returncode != 0:
        raise HubLocalError(f"helm template refused the values:\n{out.stderr.strip()}")
    configmap = yaml.safe_load(out.stdout)
    return json.loads(configmap["data"]["settings.json"])


def _trunc(name: str) -> str:
    """Helm's ``trunc 63 | trimSuffix "-"``."""
    return name[:63].removesuffix("-")


def _fullname(release: str, name: str, override: str = "") -> str:
    if override:
        return _trunc(override)
    return _trunc(release) if name in release else _trunc(f"{release}-{name}")


def _validate_python(values: dict) -> None:
    """The checks of ``neuropixels-hub.validate`` (same messages), and the schema when the
    ``jsonschema`` package is there (helm checks ``values.schema.json`` itself)."""
    def fail(msg: str) -> None:
        raise HubLocalError(f"values refused: {msg}")

    jh = values.get("jupyterhub") or {}
    gw = values.get("dask-gateway") or {}
    if not (jh.get("enabled") and gw.get("enabled")):
        fail("jupyterhub.enabled and dask-gateway.enabled must both stay true: this chart wires "
             "the two together (the gateway reads its hub token from the jupyterhub chart's "
             "Secret `hub`, the hub proxies /services/dask-gateway/ to the gateway, and the "
             "NetworkPolicies and settings name both); for one of them alone, install its "
             "official chart directly")
    if not isinstance(((jh.get("hub") or {}).get("services") or {}).get("dask-gateway"), dict):
        fail("jupyterhub.hub.services.dask-gateway must stay: the jupyterhub chart generates "
             "the gateway's hub token for that service (Secret `hub`, key "
             "hub.services.dask-gateway.apiToken)")
    if ((jh.get("singleuser") or {}).get("cloudMetadata") or {}).get("blockWithIptables"):
        fail("jupyterhub.singleuser.cloudMetadata.blockWithIptables must stay false: its "
             "iptables init container runs as root and privileged, which "
             "securityContext.pod.runAsNonRoot forbids, so the kubelet would refuse every user "
             "pod; the NetworkPolicies block the cloud metadata server instead")
    backend = (gw.get("gateway") or {}).get("backend") or {}
    for role in ("scheduler", "worker"):
        for what in ("cores", "memory"):
            for kind in ("request", "limit"):
                if ((backend.get(role) or {}).get(what) or {}).get(kind) is not None:
                    fail(f"dask-gateway.gateway.backend.{role}.{what}.{kind} is set: Dask pod "
                         f"sizes come from dask.{role} (requests = limits; workers within the "
                         "users' cluster options), so that no limit can fall below a request; "
                         "remove it")
    if values["credentials"]["existingSecret"] and values["s3"]["anon"]:
        fail("credentials.existingSecret is set but s3.anon is true: anonymous reads would "
             "ignore the credentials; set s3.anon=false")
    if (values.get("jupyterhub") or {}).get("fullnameOverride"):
        fail("jupyterhub.fullnameOverride must stay empty")
    if _gateway_prefix(values) != "/services/dask-gateway":
        fail("dask-gateway.gateway.prefix must be /services/dask-gateway")
    roles = (((values.get("jupyterhub") or {}).get("hub") or {}).get("loadRoles") or {})
    server_scopes = (roles.get("server") or {}).get("scopes") or []
    if not {GATEWAY_SCOPE, "access:services", "inherit"} & set(server_scopes):
        fail(f"jupyterhub.hub.loadRoles.server.scopes must include {GATEWAY_SCOPE}: notebooks "
             "reach dask-gateway with their server's token, and the gateway refuses tokens "
             "without access to its service")
    dask = values["dask"]
    for what in ("cores", "memory"):
        opt = dask["worker"][what]
        if not float(opt["min"]) <= float(opt["default"]) <= float(opt["max"]):
            fail(f"dask.worker.{what}.default ({opt['default']}) must lie between "
                 f"dask.worker.{what}.min ({opt['min']}) and dask.worker.{what}.max "
                 f"({opt['max']})")
    limits = dask["limits"]
    if float(dask["worker"]["cores"]["max"]) > float(limits["maxCoresPerCluster"]):
        fail("dask.worker.cores.max exceeds dask.limits.maxCoresPerCluster")
    if float(dask["worker"]["memory"]["max"]) > float(limits["maxMemoryPerCluster"]):
        fail("dask.worker.memory.max exceeds dask.limits.maxMemoryPerCluster")
    if float(dask["scheduler"]["cores"]) + float(dask["worker"]["cores"]["min"]) > float(
            limits["maxCoresPerCluster"]):
        fail("dask.scheduler.cores plus one smallest worker exceed "
             "dask.limits.maxCoresPerCluster")
    if float(dask["scheduler"]["memory"]) + float(dask["worker"]["memory"]["min"]) > float(
            limits["maxMemoryPerCluster"]):
        fail("dask.scheduler.memory plus one smallest worker exceed "
             "dask.limits.maxMemoryPerCluster")


def _gateway_prefix(values: dict) -> str:
    gw = values.get("dask-gateway") or {}
    return ((gw.get("gateway") or {}).get("prefix") or "/services/dask-gateway").removesuffix("/")


def render_settings_python(values: dict, chart: Path | None = None, release: str = "hub",
                           namespace: str = "default") -> dict:
    """The fallback when no helm binary is found: ``neuropixels-hub.settings`` of
    ``templates/_helpers.tpl`` in Python. tests/test_hub_local.py checks that it equals helm's
    rendering for several value sets, so the two cannot drift apart unnoticed."""
    chart = Path(chart or default_chart())
    schema_path = chart / "values.schema.json"
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - a test dependency; helm validates in production
        jsonschema = None
    if jsonschema is not None and schema_path.is_file():
        try:
            jsonschema.validate(values, json.loads(schema_path.read_text()))
        except jsonschema.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            raise HubLocalError(f"values refused at '/{path}': {exc.message}") from exc
    _validate_python(values)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    name = values.get("nameOverride") or meta["name"]
    fullname = _fullname(release, name, values.get("fullnameOverride") or "")

    sa = values["serviceAccount"]
    sa_name = (_trunc(sa.get("name") or f"{fullname}-user") if sa["create"]
               else sa.get("name") or "")

    gw = values.get("dask-gateway") or {}
    gw_fullname = _fullname(release, gw.get("nameOverride") or "dask-gateway",
                            gw.get("fullnameOverride") or "")
    traefik = _trunc(f"traefik-{gw_fullname}")
    ports = ((gw.get("traefik") or {}).get("service") or {}).get("ports") or {}
    web = int((ports.get("web") or {}).get("port") or 80)
    tcp = (ports.get("tcp") or {}).get("port") or "web"
    tcp = web if str(tcp) == "web" else int(tcp)
    prefix = _gateway_prefix(values)

    s3 = values["s3"]
    env = {
        "NEUROPIXELS_DASK__CACHE__URL": values["cache"]["url"],
        "NEUROPIXELS_DASK__S3__ANON": "true" if s3["anon"] else "false",
        "NEUROPIXELS_DASK__S3__REGION": s3["region"],
        "NEUROPIXELS_DASK__S3__REQUESTER_PAYS": "true" if s3["requesterPays"] else "false",
    }
    if s3.get("endpointUrl"):
        env["NEUROPIXELS_DASK__S3__ENDPOINT_URL"] = s3["endpointUrl"]
    secret_env: dict[str, dict[str, str]] = {}
    creds = values["credentials"]
    if creds.get("existingSecret"):
        keys = creds["keys"]
        secret = creds["existingSecret"]
        secret_env["AWS_ACCESS_KEY_ID"] = {"name": secret, "key": keys["accessKeyId"]}
        secret_env["AWS_SECRET_ACCESS_KEY"] = {"name": secret, "key": keys["secretAccessKey"]}
        if keys.get("sessionToken"):
            secret_env["AWS_SESSION_TOKEN"] = {"name": secret, "key": keys["sessionToken"]}
    image = values["image"]
    ref = f"{image['name']}:{image['tag']}"
    return {
        "version": 1,
        "image": {"ref": ref, "pullPolicy": image["pullPolicy"],
                  "pullSecrets": image["pullSecrets"], "allowed": _allowed_images(values, ref)},
        "env": env,
        "secretEnv": secret_env,
        "serviceAccountName": sa_name,
        "gateway": {
            "address": f"http://proxy-public{prefix}",
            "proxyAddress": f"gateway://{traefik}.{namespace}:{tcp}",
            "publicAddress": f"{prefix}/",
            "serviceUrl": f"http://{traefik}.{namespace}:{web}",
        },
        "dask": values["dask"],
        "securityContext": values["securityContext"],
        "scratch": values["scratch"],
        "notebook": {"jupyterConfigMap": JUPYTER_CONFIG, **values["notebook"]},
    }


def _allowed_images(values: dict, ref: str) -> list[str]:
    """``neuropixels-hub.images``: the chart's image, then the images profiles name literally
    (a profile's own override, then its options' choices in key order), first occurrence kept."""
    images = [ref]
    single = (values.get("jupyterhub") or {}).get("singleuser") or {}
    for profile in single.get("profileList") or []:
        overrides = [profile.get("kubespawner_override") or {}]
        for _, option in sorted((profile.get("profile_options") or {}).items()):
            for _, choice in sorted((option.get("choices") or {}).items()):
                overrides.append(choice.get("kubespawner_override") or {})
        images += [str(o["image"]) for o in overrides
                   if o.get("image") and "{" not in str(o["image"])]
    return list(dict.fromkeys(images))


# ----------------------------------------------------------------------------------- helpers


def find_chp() -> str | None:
    """configurable-http-proxy: ``$CONFIGPROXY_BIN``, else on PATH (``./dev`` puts the one
    ``scripts/install-chp.sh`` installs there)."""
    for candidate in (os.environ.get("CONFIGPROXY_BIN"), shutil.which("configurable-http-proxy")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_chp() -> str:
    """The proxy binary, or an error saying how to install it."""
    found = find_chp()
    if found:
        return found
    raise HubLocalError(
        "configurable-http-proxy (JupyterHub's proxy) was not found on PATH. Install it with "
        "`npm install -g configurable-http-proxy` (or run `./dev hub` in the repository, which "
        "installs it), or point CONFIGPROXY_BIN at it.")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free(host: str, port: int) -> bool:
    """Whether a server can listen on the port. SO_REUSEADDR like the servers themselves (node,
    tornado): connections of a hub stopped a moment ago linger in TIME_WAIT and must not make
    the port look taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def http(method: str, url: str, *, token: str | None = None, body: Any = None,
         auth_scheme: str = "token", timeout: float = 10) -> tuple[int, Any]:
    """``(status, parsed JSON or text)`` of one HTTP request; never raises for HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"{auth_scheme} {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - localhost
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _s3_location(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise HubLocalError(f"cache.url is {url!r}: the local hub serves the cache from its S3 "
                            "server, so it must be an s3:// URL")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _display_path(path: str) -> str:
    """``path`` relative to the working directory when inside it (``.venv/bin/python``)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _has_notebook_server() -> bool:
    """Whether a user's JupyterLab can run here (``jupyterhub-singleuser`` needs jupyter_server,
    the chart's ``defaultUrl: /lab`` jupyterlab; neither is a dependency of the project): without
    them the hub must not send users to a spawn that fails."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("jupyter_server", "jupyterlab"))


def notebooks_image(notebooks: Path) -> str:
    """What stands for ``$JUPYTER_IMAGE_SPEC`` (the pod's image) when the chart's hook seeds a
    local home: this installation's version and a digest of its example notebooks. The hook
    seeds once per value, as once per image on Kubernetes: examples that change (a new release,
    an edited checkout) are copied again, without overwriting the user's files."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("neuropixels-dask")
    except PackageNotFoundError:  # pragma: no cover - run from a bare source tree
        release = "unknown"
    digest = hashlib.sha256()
    for path in sorted(notebooks.rglob("*")):
        if path.is_file() and ".ipynb_checkpoints" not in path.parts:
            digest.update(str(path.relative_to(notebooks)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return f"neuropixels-dask=={release} notebooks@sha256:{digest.hexdigest()[:16]}"


def post_start_command(values: Mapping) -> list[str] | None:
    """``jupyterhub.singleuser.lifecycleHooks.postStart.exec.command`` of the merged values (what
    z2jh hands KubeSpawner as the notebook container's postStart hook), or None."""
    single = ((values.get("jupyterhub") or {}).get("singleuser") or {})
    post_start = (single.get("lifecycleHooks") or {}).get("postStart") or {}
    command = (post_start.get("exec") or {}).get("command")
    return [str(part) for part in command] if command else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the server when the launcher dies, even by SIGKILL (no cleanup code of
    ours can run then); the servers then stop their own children (clusters, notebooks)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG


class _Proc:
    """One server process: own process group (so Ctrl-C in a terminal reaches only the
    launcher, which stops everything in order), output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path,
                 log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float) -> None:
        """SIGTERM to the group (graceful: the gateway stops its clusters, the hub its
        notebooks), then SIGKILL to the group if it is still there after ``timeout``."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # leftovers of the group


def marked_processes(run_id: str) -> list:
    """Live processes whose environment carries this run's marker (psutil.Process objects)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(RUN_MARKER) == run_id and proc.status() != "zombie":
                found.append(proc)
    return found


# --------------------------------------------------------------------------------- the hub


class HubLocal:
    """JupyterHub + dask-gateway-server + S3 on localhost, configured from the chart's values.

    >>> with HubLocal(users=["alice"], port=0) as hub:              # doctest: +SKIP
    ...     token = hub.token("alice")
    ...     env = hub.user_environment(token)     # what a user pod gets
    ...     # run `npd.get_client()` in a process with `env`

    Parameters
    ----------
    values_files: the operator's values files (``helm -f``), applied over ``values.yaml``.
    values: more values (a dict), applied after the files; tests use it for short timeouts.
    port: the hub's public port (configurable-http-proxy); 0 picks a free one.
    users: who may log in (the allow list of the chart's trial mode; default: ``demo``).
    password: the shared password (default: random, see :attr:`password`).
    cache_dir: the synthetic cache to serve (generated there with ``preset`` unless present);
        default: a folder in ``workdir``.
    workdir: configs, databases, logs and cluster folders; default: a temporary folder that
        :meth:`stop` removes.
    helm: path of the helm binary; ``"auto"`` finds one (PATH, ``.tools/bin``) and falls back to
        :func:`render_settings_python` without; ``None`` forces the fallback.
    chp: path of configurable-http-proxy (default: found or installed by ``install-chp.sh``).
    notebooks: the example notebooks that seed each user's home (default:
        :func:`neuropixels_dask.local.resources.notebooks_dir`, the package's copy).
    """

    def __init__(self, *, chart: str | os.PathLike | None = None,
                 values_files: Iterable[str | os.PathLike] = (),
                 values: Mapping | None = None, host: str = "127.0.0.1", port: int = 8000,
                 users: Iterable[str] = (), password: str | None = None,
                 cache_dir: str | os.PathLike | None = None, preset: str = "tiny",
                 workdir: str | os.PathLike | None = None, helm: str | None = "auto",
                 chp: str | None = None, release: str = "hub", namespace: str = "default",
                 startup_timeout: float = 120.0, log_level: str = "INFO",
                 notebooks: str | os.PathLike | None = None) -> None:
        self.chart = Path(chart) if chart else default_chart()
        self.values_files = [Path(p) for p in values_files]
        self.extra_values = dict(values or {})
        self.host = host
        self.requested_port = int(port)
        self.users = list(users) or [DEFAULT_USER]
        self.password = password or "npd-" + secrets.token_urlsafe(12)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.preset = preset
        self._workdir_arg = Path(workdir) if workdir else None
        self.helm = find_helm() if helm == "auto" else helm
        self.chp = chp
        self.release = release
        self.namespace = namespace
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self._notebooks_arg = notebooks
        #: The example notebooks seeding the homes (set at start; None without a notebook server).
        self.notebooks: Path | None = None
        self.run_id = secrets.token_hex(8)
        self.workdir: Path | None = None
        self.values: dict = {}
        self.settings: dict = {}
        self.renderer = ""
        self.ports: dict[str, int] = {}
        self.secret_env: dict[str, str] = {}
        self.s3: Any = None
        self.procs: dict[str, _Proc] = {}
        self._launch: dict = {}
        self._started = False
        self._stopped = False

    # --------------------------------------------------------------------------- addresses
    @property
    def url(self) -> str:
        """The hub's public address (through configurable-http-proxy)."""
        return f"http://{self.host}:{self.ports['public']}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/hub/api"

    @property
    def gateway_address(self) -> str:
        """What user pods get as ``DASK_GATEWAY__ADDRESS`` (through the hub's proxy)."""
        return self.settings["gateway"]["address"]

    @property
    def proxy_address(self) -> str:
        """What user pods get as ``DASK_GATEWAY__PROXY_ADDRESS`` (schedulers, TLS)."""
        return self.settings["gateway"]["proxyAddress"]

    @property
    def cache_url(self) -> str:
        return self.values["cache"]["url"]

    def home(self, user: str) -> Path:
        """The user's home folder (the local spawner's HOME and root folder; the user's volume on
        Kubernetes), seeded with the example notebooks at the first spawn."""
        assert self.workdir is not None, "start() the hub first"
        return self.workdir / "home" / user

    def lab_url(self, user: str) -> str:
        """Where the user's server opens (``jupyterhub.singleuser.defaultUrl``: ``/lab``)."""
        default = (self.values["jupyterhub"].get("singleuser") or {}).get("defaultUrl") or "/"
        return f"{self.url}/user/{user}/{default.lstrip('/')}"

    # --------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> HubLocal:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> HubLocal:
        """Start S3, the proxy, the hub and the gateway; return once all of them answer."""
        if self._started:
            return self
        self._started = True
        atexit.register(self.stop)
        try:
            self._prepare()
            self._start_servers()
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        if self._workdir_arg is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="npd-hub-local-"))
            self._own_workdir = True
        else:
            self.workdir = self._workdir_arg.resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._own_workdir = False
        for sub in ("logs", "clusters", "home", "values"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self.chp = self.chp or ensure_chp()

        # The operator's values (files, then the dict) decide where the data lives.
        value_files = list(self.values_files)
        if self.extra_values:
            extra = self.workdir / "values" / "values-extra.yaml"
            extra.write_text(yaml.safe_dump(self.extra_values))
            value_files.append(extra)
        user_values = load_values(self.chart, value_files)
        bucket, prefix = _s3_location(user_values["cache"]["url"])

        # The data: a synthetic cache, served where cache.url points, credentials required.
        from ..s3server import LocalS3Server
        from ..synth import generate_cache

        cache_dir = self.cache_dir or self.workdir / "cache"
        generate_cache(str(cache_dir), self.preset, progress=False)
        self.cache_dir = cache_dir
        self.s3 = LocalS3Server(bucket=bucket, region=user_values["s3"]["region"],
                                mounts={prefix: cache_dir}, cache_prefix=prefix,
                                public=False).start()

        # The only values the launcher adds: the local endpoint and a Secret to play.
        secret_name = user_values["credentials"].get("existingSecret") or LOCAL_SECRET
        # And the login: the chart's trial mode (a shared password plus an allow list,
        # helm/examples/trial.yaml), which replaces any login of the operator's files here.
        localhost = {"s3": {"anon": False, "endpointUrl": self.s3.endpoint_url},
                     "credentials": {"existingSecret": secret_name},
                     "jupyterhub": {"hub": {"config": trial_login(self.users, self.password)}}}
        local_file = self.workdir / "values" / "values-localhost.yaml"
        fd = os.open(local_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a password
        with os.fdopen(fd, "w") as f:
            f.write("# Added by `neuropixels-dask hub local` (localhost only)\n"
                    + yaml.safe_dump(localhost))
        value_files.append(local_file)
        self.values = load_values(self.chart, value_files)

        if self.helm:
            self.settings = render_settings_helm(self.helm, self.chart, value_files,
                                                 self.workdir, self.release, self.namespace)
            version = subprocess.run([self.helm, "version", "--short"], capture_output=True,
                                     text=True, timeout=30).stdout.strip()
            self.renderer = f"helm template ({version})"
        else:
            self.settings = render_settings_python(self.values, self.chart, self.release,
                                                   self.namespace)
            self.renderer = "Python fallback (no helm binary found)"

        self.ports = {
            "public": self.requested_port or free_port(self.host),
            "proxy_api": free_port(self.host), "hub": free_port(self.host),
            "gateway_api": free_port(self.host), "gateway_web": free_port(self.host),
            "gateway_tcp": free_port(self.host),
        }
        if not _port_free(self.host, self.ports["public"]):
            raise HubLocalError(f"port {self.ports['public']} on {self.host} is in use: pick "
                                "another with --port (0 = any free port)")
        # Kubernetes Service names in the chart's addresses -> localhost ports.
        prefix_path = _gateway_prefix(self.values)
        self.settings["gateway"].update({
            "address": f"{self.url}{prefix_path}",
            "proxyAddress": f"gateway://{self.host}:{self.ports['gateway_tcp']}",
            "serviceUrl": f"http://{self.host}:{self.ports['gateway_web']}",
        })

        # The Secret behind credentials.existingSecret holds the S3 server's keys (fresh ones,
        # so that nothing but the chart's wiring can hand them to notebooks and workers).
        access_key = "hublocal" + secrets.token_hex(6)
        secret_values = {"AWS_ACCESS_KEY_ID": access_key,
                         "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
                         "AWS_SESSION_TOKEN": secrets.token_hex(16)}
        store: dict[str, dict[str, str]] = {}
        for var, ref in self.settings["secretEnv"].items():
            store.setdefault(ref["name"], {})[ref["key"]] = secret_values[var]
        self.secret_env = {var: store[ref["name"]][ref["key"]]
                           for var, ref in self.settings["secretEnv"].items()}

        jh_services = self.values["jupyterhub"]["hub"].get("services") or {}
        tokens = {"proxy": secrets.token_hex(32),
                  "services": {name: secrets.token_hex(32) for name in jh_services}}
        bindir = Path(sys.executable).parent
        has_notebooks = _has_notebook_server()
        seed = None
        command = post_start_command(self.values)
        if has_notebooks:
            self.notebooks = resources.notebooks_dir(self._notebooks_arg).resolve()
            if command:
                seed = {"command": command, "notebooks": str(self.notebooks),
                        "image": notebooks_image(self.notebooks)}
        self._launch = {
            "host": self.host, "ports": self.ports, "workdir": str(self.workdir),
            "values": self.values, "tokens": tokens, "password": self.password,
            "users": self.users, "secret_env": self.secret_env,
            "singleuser_cmd": str(bindir / "jupyterhub-singleuser"),
            "as_root": hasattr(os, "geteuid") and os.geteuid() == 0,
            "notebooks": has_notebooks,
            "seed": seed,
            "hub_log_level": self.log_level,
            "gateway_log_level": None if self.log_level == "INFO" else self.log_level,
        }
        launch_path = self.workdir / "launch.json"
        fd = os.open(launch_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._launch, f, indent=1)
        for name, func in (("jupyterhub_config.py", "configure_hub"),
                           ("dask_gateway_config.py", "configure_gateway")):
            (self.workdir / name).write_text(_CONFIG_FILE.format(
                module=serverconfig.__name__, func=func, launch=str(launch_path)))

    def _gateway_service(self) -> str:
        """The hub service whose token the gateway uses (``apiTokenFromSecretKey`` names it)."""
        key = (self.values["dask-gateway"]["gateway"]["auth"].get("jupyterhub") or {}).get(
            "apiTokenFromSecretKey", "hub.services.dask-gateway.apiToken")
        return key.removeprefix("hub.services.").removesuffix(".apiToken")

    def _start_servers(self) -> None:
        assert self.workdir is not None
        logs = self.workdir / "logs"
        base = _base_env()
        base[RUN_MARKER] = self.run_id
        settings_json = json.dumps(self.settings)
        tokens = self._launch["tokens"]

        chp_env = dict(base, CONFIGPROXY_AUTH_TOKEN=tokens["proxy"])
        hub_target = f"http://{self.host}:{self.ports['hub']}"
        self.procs["proxy"] = _Proc("configurable-http-proxy", [
            self.chp, "--ip", self.host, "--port", str(self.ports["public"]),
            "--api-ip", self.host, "--api-port", str(self.ports["proxy_api"]),
            "--default-target", hub_target, "--error-target", f"{hub_target}/hub/error",
            "--log-level", "warn"], chp_env, self.workdir, logs / "proxy.log")

        hub_env = dict(base, NEUROPIXELS_HUB_SETTINGS=settings_json,
                       CONFIGPROXY_AUTH_TOKEN=tokens["proxy"])
        self.procs["hub"] = _Proc("jupyterhub", [
            sys.executable, "-m", "jupyterhub", "-f", str(self.workdir / "jupyterhub_config.py")],
            hub_env, self.workdir, logs / "jupyterhub.log")

        service = self._gateway_service()
        if service not in tokens["services"]:
            raise HubLocalError(f"dask-gateway takes the token of hub service {service!r}, "
                                "which jupyterhub.hub.services does not declare")
        gw_env = dict(base, NEUROPIXELS_HUB_SETTINGS=settings_json,
                      JUPYTERHUB_API_TOKEN=tokens["services"][service])
        self.procs["gateway"] = _Proc("dask-gateway-server", [
            sys.executable, "-m", "dask_gateway_server", "--config",
            str(self.workdir / "dask_gateway_config.py")],
            gw_env, self.workdir, logs / "dask-gateway.log")

        self._wait("the proxy's API", f"http://{self.host}:{self.ports['proxy_api']}/api/routes",
                   token=tokens["proxy"])
        self._wait("JupyterHub", f"http://{self.host}:{self.ports['hub']}/hub/api/")
        self._wait("JupyterHub (through the proxy)", f"{self.api_url}/")
        self._wait("dask-gateway (through the hub's proxy)",
                   f"{self.gateway_address}/api/health")

    def _wait(self, what: str, url: str, token: str | None = None) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last: Any = None
        while time.monotonic() < deadline:
            for proc in self.procs.values():
                if not proc.alive():
                    raise HubLocalError(f"{proc.name} exited ({proc.popen.returncode}) while "
                                        f"waiting for {what}; its log ({proc.log_path}):\n"
                                        f"{proc.log_tail()}")
            try:
                status, body = http("GET", url, token=token, timeout=5)
                if status == 200:
                    return
                last = f"HTTP {status}: {str(body)[:200]}"
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise HubLocalError(f"{what} did not answer at {url} within "
                            f"{self.startup_timeout:.0f} s (last: {last}); logs in "
                            f"{self.workdir / 'logs'}")

    def stop(self) -> None:
        """Stop everything, in order, and kill whatever survived (idempotent)."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        # The gateway first: on SIGTERM it stops its clusters (SIGINT, SIGTERM, SIGKILL with
        # its own timeouts); then the hub (stops notebooks), then the proxy.
        for name, timeout in (("gateway", 40.0), ("hub", 20.0), ("proxy", 10.0)):
            proc = self.procs.get(name)
            if proc is not None:
                proc.stop(timeout)
        if self.s3 is not None:
            self.s3.stop()
        self._kill_leftovers()
        if getattr(self, "_own_workdir", False) and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """Processes of this run that outlived their parents (other sessions, orphans)."""
        import psutil

        leftovers = marked_processes(self.run_id)
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=10)

    def alive(self) -> dict[str, bool]:
        return {name: proc.alive() for name, proc in self.procs.items()}

    # ------------------------------------------------------------------------------ users
    def token(self, user: str, note: str = "hub local") -> str:
        """A JupyterHub API token for ``user``, requested with the user's own password (the
        hub API allows it for authenticators with passwords), as a user would at /hub/token."""
        status, body = http("POST", f"{self.api_url}/users/{user}/tokens",
                            body={"auth": {"username": user, "password": self.password},
                                  "note": note})
        if status != 201:
            raise HubLocalError(f"the hub refused a token for {user!r} (HTTP {status}: {body}); "
                                "only users listed at start or who logged in once have one")
        return body["token"]

    def user_environment(self, token: str | None = None, user: str | None = None
                         ) -> dict[str, str]:
        """The environment a notebook of this hub gets from the hub: the spawner environment
        that the chart's hub snippet computes (gateway addresses, data settings, credentials),
        plus JupyterHub's own variables. Computed by running the same configuration as the hub
        process (:func:`serverconfig.configure_hub`) on a fresh config object."""
        from traitlets.config import Config

        c = Config()
        with _env_var("NEUROPIXELS_HUB_SETTINGS", json.dumps(self.settings)):
            serverconfig.configure_hub(c, self._launch)
        env = {k: v for k, v in c.Spawner.environment.items() if isinstance(v, str)}
        env["JUPYTERHUB_API_URL"] = self.api_url
        if token is not None:
            env["JUPYTERHUB_API_TOKEN"] = token
        if user is not None:
            env["JUPYTERHUB_USER"] = user
        return env

    # ------------------------------------------------------------------------------ report
    def summary(self) -> str:
        """Where to log in, where notebooks open, and what a user's environment holds."""
        if self._launch.get("notebooks"):
            seeded = ""
            if self._launch.get("seed") and self.notebooks is not None:
                names = sorted(p.name for p in self.notebooks.glob("*.ipynb"))
                seeded = f", seeded with {', '.join(names)}"
            notebooks = [
                f"  notebooks: JupyterLab for each user at {self.url}/user/<name>/lab",
                f"             (home: {self.workdir / 'home'}/<name>{seeded})",
            ]
            env_intro = ("Every user's JupyterLab and kernels get a user pod's environment; for "
                         "a script outside the hub, use it with your token from /hub/token "
                         f"(`{_display_path(sys.executable)} -c 'import neuropixels_dask as npd; "
                         "c = npd.get_client(); print(c); c.cluster.shutdown()'`):")
        else:
            notebooks = ["  notebooks: none installed here (no JupyterLab in this environment: "
                         "pip install 'neuropixels-dask[notebook]'): logging in opens /hub/token;",
                         "             use the token with the environment below"]
            env_intro = ("A user pod's environment (paste into a shell with your token, then "
                         f"`{_display_path(sys.executable)} -c 'import neuropixels_dask as npd; "
                         "c = npd.get_client(); print(c); c.cluster.shutdown()'`):")
        env = self.user_environment(token="<your token from /hub/token>")
        who = f"as {' or '.join(self.users)}"
        lines = [
            "Neuropixels Hub, local: JupyterHub + dask-gateway + S3, configured from "
            f"{self.chart}/values.yaml"
            + "".join(f" + {p}" for p in self.values_files),
            f"  settings:  rendered by {self.renderer}",
            f"  log in:    {self.url}/hub/login   ({who}, password: {self.password})",
            *notebooks,
            f"  token:     {self.url}/hub/token",
            f"  gateway:   {self.gateway_address}   (JupyterHub auth; schedulers at "
            f"{self.proxy_address})",
            f"  data:      {self.cache_url} on {self.s3.endpoint_url} "
            f"(synthetic, {self.preset} preset; credentials required)",
            f"  logs:      {self.workdir / 'logs'}",
            "",
            env_intro,
            *[f"  export {k}={shlex.quote(v)}" for k, v in sorted(env.items())],
            "",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)


_CONFIG_FILE = '''\
# Written by `neuropixels-dask hub local`: the chart's extraConfig snippets run against this
# server's real `c` (see {module}).
from {module} import {func}

{func}(c, {launch!r})
'''


@contextlib.contextmanager
def _env_var(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# --------------------------------------------------------------------------------------- CLI


@needs_extra("`neuropixels-dask hub local`")
def _cmd_hub_local(args: Any) -> int:
    hub = HubLocal(values_files=args.values or (), port=args.port, users=args.user or (),
                   password=args.password, cache_dir=args.cache_dir, preset=args.preset,
                   workdir=args.workdir, helm=None if args.no_helm else "auto",
                   log_level="DEBUG" if args.verbose else "INFO", notebooks=args.notebooks)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def patience(signum: int, frame: Any) -> None:
        print("still stopping the local hub, please wait…", file=sys.stderr, flush=True)

    # SIGINT too: a shell starts background jobs (`… &` in a script) with SIGINT ignored, and
    # `kill -INT` must stop the hub all the same.
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, terminate) for s in stop_signals}
    t0 = time.monotonic()
    try:
        print("starting the local hub (S3 server, proxy, JupyterHub, dask-gateway)…",
              flush=True)
        hub.start()
        print(hub.summary().replace("Neuropixels Hub, local:",
                                    f"Neuropixels Hub, local (up in {time.monotonic() - t0:.0f} s):"),
              flush=True)
        while True:
            dead = [hub.procs[n] for n, ok in hub.alive().items() if not ok]
            if dead:
                proc = dead[0]
                print(f"{proc.name} exited ({proc.popen.returncode}); its log:\n"
                      f"{proc.log_tail()}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping the local hub…", flush=True)
        return 0
    finally:
        # A second Ctrl-C must not interrupt the clean-up half-way (leaving servers running).
        for sig in stop_signals:
            signal.signal(sig, patience)
        hub.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopped: no hub, gateway, cluster or S3 process is left running (nor any "
              "notebook server or kernel)", flush=True)


def register_cli(subparsers: Any) -> None:
    """``neuropixels-dask hub local`` (found by cli.py's plugin discovery)."""
    hub = subparsers.add_parser("hub", help="the JupyterHub + dask-gateway platform")
    sub = hub.add_subparsers(dest="hub_command", required=True)
    p = sub.add_parser(
        "local", help="run the hub on this machine, configured from the Helm chart's values",
        description="JupyterHub (a JupyterLab for each user, homes seeded with the example "
                    "notebooks), dask-gateway and an S3 server with a synthetic cache on "
                    "127.0.0.1, configured by helm/neuropixels-hub's values and extraConfig "
                    "snippets. Ctrl-C stops everything, notebook servers and kernels included.")
    p.add_argument("-f", "--values", action="append", metavar="FILE",
                   help="a values file over the chart's values.yaml (repeatable, like helm -f)")
    p.add_argument("--port", type=int, default=8000, help="the hub's port (0: any free one)")
    p.add_argument("--user", action="append", metavar="NAME",
                   help="who may log in (repeatable; default: demo); nobody else can")
    p.add_argument("--password", help="the shared login password (default: random, printed)")
    p.add_argument("--cache-dir", default=".cache/hub-local",
                   help="where the synthetic cache is generated and reused from")
    p.add_argument("--preset", default="tiny", choices=["tiny", "demo", "bench"],
                   help="size of the synthetic cache")
    p.add_argument("--workdir", help="keep configs, databases and logs here (default: a "
                   "temporary folder removed at exit)")
    p.add_argument("--notebooks", metavar="DIR",
                   help="seed homes with the notebooks of this folder (default: the examples "
                        "the package carries, or $NEUROPIXELS_HUB_NOTEBOOKS)")
    p.add_argument("--no-helm", action="store_true",
                   help="render the settings in Python even if helm is installed")
    p.set_defaults(func=_cmd_hub_local)
