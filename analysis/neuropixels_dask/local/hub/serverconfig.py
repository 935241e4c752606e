"""Configuration of the local hub's JupyterHub and dask-gateway-server, run INSIDE those processes.

``neuropixels-dask hub local`` (:mod:`neuropixels_dask.local.hub.launcher`) writes a ``jupyterhub_config.py``
and a ``dask_gateway_config.py`` that load this file by its path and call :func:`configure_hub` /
:func:`configure_gateway` with the real ``c`` of the server. Each function does three things, in
the order the charts do them on Kubernetes:

1. **Localhost** (what Kubernetes Services and the subcharts' fixed settings provide in a cluster):
   where each server listens, the database files, a local spawner / the gateway's local backend.
2. **What the official subcharts make of our values** (z2jh's ``jupyterhub_config.py``, the
   dask-gateway chart's ``dask_gateway_config.py``): ``singleuser.extraEnv``/``defaultUrl``,
   ``singleuser.startTimeout``, ``hub.services``, ``hub.loadRoles``, ``hub.config`` (the login:
   the launcher's trial mode, a shared password plus an allow list), ``gateway.prefix``,
   ``gateway.auth``, ``gateway.backend.environment``; plus what the kubelet does in a cluster:
   resolving the chart's ``secretKeyRef`` credentials, and running the notebook container's
   ``singleuser.lifecycleHooks.postStart`` command (it seeds the home with the example
   notebooks; here before the local server starts, see :func:`seed_hook`).
3. **The chart's own ``extraConfig`` snippets**, verbatim from the merged values, in key order,
   with ``c`` in scope and ``NEUROPIXELS_HUB_SETTINGS`` in the environment, exactly as the pods
   run them.

Standard library only: the hub and gateway processes import this module and, through the
package's lazy ``__init__``, nothing of the science stack; on Kubernetes they do not have it
either.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

#: Environment variable that marks every process of one local hub (cleanup finds them by it).
RUN_MARKER = "NEUROPIXELS_HUB_LOCAL_RUN"

#: The dask-gateway chart's default for ``gateway.loglevel``.
DEFAULT_GATEWAY_LOG_LEVEL = "INFO"


def load(launch: str | dict) -> dict[str, Any]:
    """The launch document (a dict, or the path of the JSON file the launcher wrote)."""
    if isinstance(launch, dict):
        return launch
    with open(launch) as f:
        return json.load(f)


def _snake(name: str) -> str:
    """z2jh's camelCase service keys (``apiToken``, ``oauthNoConfirm``) in JupyterHub's spelling."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def run_snippets(c: Any, snippets: dict[str, str], where: str) -> None:
    """``extraConfig`` entries in key order, each with only ``c`` in scope (as the charts do)."""
    for key in sorted(snippets):
        code = compile(snippets[key], f"<{where}.extraConfig.{key}>", "exec")
        exec(code, {"c": c})  # noqa: S102 - the chart's own configuration code


def hub_services(launch: dict) -> list[dict[str, Any]]:
    """``jupyterhub.hub.services`` as z2jh turns it into ``c.JupyterHub.services``: one entry per
    key, ``name`` = key, the token the chart generates into the Secret ``hub``."""
    services = []
    for name, spec in (launch["values"]["jupyterhub"]["hub"].get("services") or {}).items():
        entry = {_snake(k): v for k, v in (spec or {}).items() if k != "apiToken"}
        entry["name"] = name
        entry["api_token"] = launch["tokens"]["services"][name]
        services.append(entry)
    return services


def hub_roles(launch: dict) -> list[dict[str, Any]]:
    """``jupyterhub.hub.loadRoles`` as z2jh turns it into ``c.JupyterHub.load_roles``: one entry
    per key, ``name`` = key (a dict in values so that -f files can merge it)."""
    roles = []
    for name, spec in (launch["values"]["jupyterhub"]["hub"].get("loadRoles") or {}).items():
        role = dict(spec or {})
        role.setdefault("name", name)
        roles.append(role)
    return roles


def apply_hub_config(c: Any, config: dict[str, Any]) -> None:
    """``jupyterhub.hub.config`` as z2jh's jupyterhub_config.py applies it: each section (a
    Configurable class name) updates ``c``, the secrets the chart seeds itself left out."""
    seeded = {"JupyterHub": ("proxy_auth_token", "cookie_secret", "services"),
              "ConfigurableHTTPProxy": ("auth_token",), "CryptKeeper": ("keys",)}
    for section, entries in config.items():
        if not section[:1].isupper():
            raise ValueError(f"jupyterhub.hub.config.{section}: hub.config sections must be "
                             "Configurable class names (e.g. JupyterHub)")
        c[section].update({k: v for k, v in (entries or {}).items()
                           if k not in seeded.get(section, ())})


def configure_hub(c: Any, launch: str | dict) -> None:
    """Configure a real JupyterHub (``c`` of its config file) for the local hub."""
    launch = load(launch)
    values = launch["values"]
    jh = values["jupyterhub"]
    single = jh.get("singleuser") or {}
    ports = launch["ports"]
    host = launch["host"]
    workdir = launch["workdir"]

    # 1. Localhost. z2jh: the proxy pod (CHP, started separately, like should_start=False here),
    #    the hub Service on 8081, the database and cookie secret on the hub's volume.
    c.JupyterHub.bind_url = f"http://{host}:{ports['public']}/"
    c.JupyterHub.hub_bind_url = f"http://{host}:{ports['hub']}"
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = f"http://{host}:{ports['proxy_api']}"
    c.ConfigurableHTTPProxy.auth_token = launch["tokens"]["proxy"]
    c.JupyterHub.db_url = "sqlite:///" + os.path.join(workdir, "jupyterhub.sqlite")
    c.JupyterHub.cookie_secret_file = os.path.join(workdir, "jupyterhub_cookie_secret")
    c.JupyterHub.log_level = launch.get("hub_log_level", "INFO")
    # Who may log in comes from the values' hub.config (step 2), as on Kubernetes: the launcher
    # puts the chart's trial mode there (shared password + allow list, helm/examples/trial.yaml).
    # A local spawner instead of KubeSpawner: each user's JupyterLab is a process of this
    # machine (jupyterhub-singleuser, the image's command), in a home folder under the workdir
    # (the user's volume on Kubernetes), which is also the server's root folder.
    home = os.path.join(workdir, "home", "{username}")
    c.JupyterHub.spawner_class = "simple"
    c.SimpleLocalProcessSpawner.home_dir_template = home
    c.Spawner.notebook_dir = home
    c.Spawner.cmd = [launch["singleuser_cmd"]]
    if not launch.get("notebooks", True):
        # No notebook server installed: after login, the token page instead of a failing spawn.
        c.JupyterHub.default_url = "/hub/token"
    if launch.get("as_root"):
        c.Spawner.args = ["--allow-root"]
    # z2jh: singleuser.startTimeout (its default: 300 s) bounds a spawn; a local server is up
    # once it answers, which a busy machine may take a while for (JupyterHub's default: 30 s).
    c.Spawner.start_timeout = int(single.get("startTimeout") or 300)
    c.Spawner.http_timeout = 120
    seed = launch.get("seed")
    if seed:
        c.Spawner.pre_spawn_hook = seed_hook(seed)
    # LocalProcessSpawner's default list, plus the marker that lets the launcher clean up.
    c.LocalProcessSpawner.env_keep = [
        "CONDA_DEFAULT_ENV", "CONDA_ROOT", "JUPYTERHUB_SINGLEUSER_APP", "LANG", "LC_ALL",
        "LD_LIBRARY_PATH", "PATH", "PYTHONPATH", "VIRTUAL_ENV", RUN_MARKER]

    # 2. What z2jh's jupyterhub_config.py makes of the values (strings only: valueFrom entries
    #    need Kubernetes), and the credentials the kubelet would resolve from secretKeyRefs.
    env = {k: v for k, v in (single.get("extraEnv") or {}).items() if isinstance(v, str)}
    env.update(launch["secret_env"])
    c.Spawner.environment = env
    if single.get("defaultUrl"):
        c.Spawner.default_url = single["defaultUrl"]
    c.JupyterHub.services = hub_services(launch)
    c.JupyterHub.load_roles = hub_roles(launch)
    apply_hub_config(c, jh["hub"].get("config") or {})

    # 3. The chart's hub.extraConfig, verbatim.
    run_snippets(c, jh["hub"].get("extraConfig") or {}, "hub")


def seed_hook(seed: dict[str, Any]):
    """A ``Spawner.pre_spawn_hook`` that runs the chart's ``singleuser.lifecycleHooks.postStart``
    command (which seeds the home with the example notebooks) for a local server.

    On Kubernetes the kubelet runs it in the notebook container, as the user, once the home
    volume is mounted, and the pod counts as running only when it is done. Here: in the user's
    home, as the hub's (= the server's) Unix user, before the server starts. Its environment is
    what the hook reads in the image: ``HOME``, ``NEUROPIXELS_HUB_NOTEBOOKS`` (the image keeps the
    examples there; here the package's copy) and ``JUPYTER_IMAGE_SPEC`` (set by KubeSpawner;
    here a name of this installation and its notebooks, so that "once per image" means once per
    version of the examples). Like the chart's hook, it never fails the spawn."""
    import asyncio
    import logging

    command = list(seed["command"])

    async def hook(spawner: Any) -> None:
        home = spawner.home_dir
        os.makedirs(home, 0o755, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
               "USER": spawner.user.name, "NEUROPIXELS_HUB_NOTEBOOKS": seed["notebooks"],
               "JUPYTER_IMAGE_SPEC": seed["image"]}
        if RUN_MARKER in os.environ:
            env[RUN_MARKER] = os.environ[RUN_MARKER]
        log = getattr(spawner, "log", logging.getLogger(__name__))
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=home, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            log.warning("seeding the home of %s failed: %r", spawner.user.name, exc)
            return
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("seeding the home of %s: the postStart hook took over 60 s; stopped",
                        spawner.user.name)
            return
        if proc.returncode:
            log.warning("seeding the home of %s: the postStart hook exited %s: %s",
                        spawner.user.name, proc.returncode, out.decode(errors="replace")[-500:])

    return hook


def configure_gateway(c: Any, launch: str | dict) -> None:
    """Configure a real dask-gateway-server (``c`` of its config file) for the local hub."""
    launch = load(launch)
    gateway = launch["values"]["dask-gateway"]["gateway"]
    ports = launch["ports"]
    host = launch["host"]

    # 1. Localhost. The chart: the API on :8000, traefik's web and tcp entrypoints, KubeBackend.
    #    Here: the gateway's own proxy on two local ports, and local processes for clusters.
    c.DaskGateway.log_level = launch.get("gateway_log_level") or gateway.get(
        "loglevel", DEFAULT_GATEWAY_LOG_LEVEL)
    c.DaskGateway.address = f"{host}:{ports['gateway_api']}"
    c.Proxy.address = f"{host}:{ports['gateway_web']}"
    c.Proxy.tcp_address = f"{host}:{ports['gateway_tcp']}"
    # UnsafeLocalBackend: LocalBackend would run each cluster under the Unix account named like
    # the hub user (root + one OS account per user); here hub users are not Unix users. Users
    # stay apart the way they do on Kubernetes: through the gateway's API (JupyterHub auth,
    # per-cluster permissions) and the per-cluster TLS credentials schedulers demand.
    c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
    c.LocalBackend.clusters_directory = os.path.join(launch["workdir"], "clusters")
    c.LocalBackend.inherited_environment = [
        "PATH", "PYTHONPATH", "CONDA_ROOT", "CONDA_DEFAULT_ENV", "VIRTUAL_ENV", "LANG", "LC_ALL",
        RUN_MARKER]

    # 2. What the dask-gateway chart's dask_gateway_config.py makes of the values.
    prefix = gateway.get("prefix")
    if prefix:
        c.Proxy.prefix = prefix
    auth = gateway.get("auth") or {}
    if auth.get("type") != "jupyterhub":
        raise ValueError(
            f"dask-gateway.gateway.auth.type is {auth.get('type')!r}: the local hub supports "
            "'jupyterhub' (the chart's setting) only")
    c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
    # The chart: gateway.auth.jupyterhub.apiUrl, else the hub Service; the API token comes from
    # the hub's Secret as JUPYTERHUB_API_TOKEN (set by the launcher in this process).
    c.DaskGateway.JupyterHubAuthenticator.jupyterhub_api_url = (
        f"http://{host}:{ports['hub']}/hub/api")
    environment = dict((gateway.get("backend") or {}).get("environment") or {})
    environment.update(launch["secret_env"])
    c.ClusterConfig.environment = environment

    # 3. The chart's gateway.extraConfig, verbatim.
    run_snippets(c, gateway.get("extraConfig") or {}, "gateway")
