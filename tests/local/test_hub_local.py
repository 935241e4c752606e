"""The hub end to end on one machine (issue 7): `neuropixels-dask hub local` runs a real
JupyterHub (behind configurable-http-proxy from npm), a real dask-gateway-server registered as its
service with JupyterHub auth, and the local S3 server, all configured by the chart's values and
extraConfig snippets. A user with only a hub token and the environment of a user pod scales out,
runs the analyses with workers reading S3 with the chart's credentials, and shuts down; the
limits the chart promises hold; the gateway refuses requests without a valid hub token and hub
tokens without access to its service (the chart's roles grant it to users and notebook servers);
Ctrl-C leaves nothing running, the users' JupyterLab servers and kernels included.

The user's "notebook" is a separate Python process whose environment is exactly what the hub
prints for a user pod (plus PATH/HOME), so nothing of the test process leaks into it; a kernel
of a real JupyterLab spawned by the hub has that same environment. (In a real browser:
tests/local/test_hub_browser.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from neuropixels_dask.local.hub import launcher as hublocal
from neuropixels_dask.local.hub.launcher import (
    HubLocalError,
    http,
    load_values,
    render_settings_helm,
    render_settings_python,
    trial_login,
)
from neuropixels_dask.local.hub.serverconfig import RUN_MARKER, configure_gateway, configure_hub
from neuropixels_dask.local.resources import chart_dir

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "helm" / "examples"
GIB = 2**30
IDLE_TIMEOUT = 30  # seconds; short enough for the test, long enough for a busy 2-core machine
#: The operator's values for this test: a short idle timeout and small ceilings.
TEST_VALUES = {"dask": {"idleTimeout": IDLE_TIMEOUT,
                        "limits": {"maxWorkersPerCluster": 2, "maxClustersPerUser": 1}}}
PASSWORD = "hub-local-test-password"

# What a scientist runs in a notebook on the hub: nothing but the package and its environment.
NOTEBOOK = textwrap.dedent("""
    import functools, json, os, time, warnings
    import numpy as np
    import neuropixels_dask as npd
    from neuropixels_dask.analyses import (map_sessions, session_structure_spectra,
                                           spike_count_correlations)

    t0 = time.monotonic()
    out = {}
    try:                                      # beyond the chart's worker_cores maximum
        npd.get_client(worker_cores=64)
    except ValueError as exc:
        out["over_ceiling"] = str(exc)
    client = npd.get_client()                 # dask-gateway: DASK_GATEWAY__ADDRESS is set
    cluster = client.cluster
    out["cluster_type"] = type(cluster).__name__
    out["cluster"] = cluster.name
    client.wait_for_workers(2, timeout=120)   # get_client() scales to 2 by default
    out["workers_up_s"] = time.monotonic() - t0
    workers = client.scheduler_info()["workers"].values()
    out["workers"] = [[w["nthreads"], w["memory_limit"]] for w in workers]
    keys = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "NEUROPIXELS_DASK__S3__ENDPOINT_URL",
            "NEUROPIXELS_DASK__S3__ANON", "NEUROPIXELS_DASK__CACHE__URL"]
    out["worker_env"] = list(client.run(lambda: {k: os.environ.get(k) for k in keys}).values())

    cache = npd.open_cache()                  # NEUROPIXELS_DASK__CACHE__URL, S3 settings
    ids = [int(i) for i in cache.get_session_table().index]
    spectra = map_sessions(session_structure_spectra, ids, cache, client=client, progress=False)
    corr = map_sessions(functools.partial(spike_count_correlations, condition_by="orientation",
                                          min_trials=2),  # tiny: each orientation twice
                        ids, cache, client=client, progress=False)
    out["sessions"] = ids
    out["failed"] = {**spectra.failed, **corr.failed}
    out["spectra"] = {k: int(v) for k, v in spectra.result.sizes.items()}
    out["spectra_finite"] = bool(np.isfinite(spectra.result.values).any())
    out["corr"] = {k: int(v) for k, v in corr.result.sizes.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cluster.scale(5)                      # over maxWorkersPerCluster
    out["scale_warnings"] = [str(w.message) for w in caught]
    cluster.shutdown()
    out["total_s"] = time.monotonic() - t0
    print("RESULT " + json.dumps(out))
""")

#: the chart as the installed package carries it (package data)
CHART = chart_dir()


# ------------------------------------------------------------------------------------ helpers


def _helm() -> str:
    """The real helm: found, or installed by the project script (never skipped)."""
    found = hublocal.find_helm()
    if found:
        return found
    subprocess.run(["bash", str(REPO / "scripts" / "install-helm.sh"), str(REPO / ".tools/bin")],
                   check=True, cwd=REPO, timeout=600)
    return str(REPO / ".tools" / "bin" / "helm")


def _chp() -> str:
    """configurable-http-proxy: found, or installed from npm by scripts/install-chp.sh."""
    return hublocal.ensure_chp()


class _Lines:
    """Lines of a child's stdout, readable with a timeout."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._t = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._t.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def until(self, predicate, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("\n".join(self.lines[-40:]))
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError("\n".join(self.lines[-40:]))
            if predicate(line):
                return line


def _exports(lines: list[str]) -> dict[str, str]:
    """The `export K=V` block the command prints: a user pod's environment."""
    env = {}
    for line in lines:
        if not line.strip().startswith("export "):
            continue
        parts = shlex.split(line.strip())
        if len(parts) == 2:
            key, _, value = parts[1].partition("=")
            env[key] = value
    return env


def _logs(workdir: Path) -> str:
    out = []
    for log in sorted((workdir / "logs").glob("*.log")):
        out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace")
                                                   .splitlines()[-25:]))
    return "\n".join(out)


def _gateway(env: dict[str, str], token: str | None = None):
    """A dask-gateway client for a user, to be used in a ``with`` block (closed at its end)."""
    from dask_gateway import Gateway, JupyterHubAuth

    class ClosesOnce(Gateway):
        """dask-gateway 2026.3's ``Gateway.close()`` is not idempotent: after an explicit close
        (``with``), ``__del__`` closes again, finds the loop runner stopped and raises ("Accessing
        the loop property while the loop is not running"), which pytest reports as an
        unraisable exception. Closing once is all that is needed."""

        _closed = False

        def close(self) -> None:
            if not self._closed:
                self._closed = True
                super().close()

    return ClosesOnce(address=env["DASK_GATEWAY__ADDRESS"],
                      proxy_address=env["DASK_GATEWAY__PROXY_ADDRESS"],
                      public_address=env["DASK_GATEWAY__PUBLIC_ADDRESS"],
                      auth=JupyterHubAuth(api_token=token or env["JUPYTERHUB_API_TOKEN"]))


def _pod_env(env: dict[str, str], home: Path) -> dict[str, str]:
    """Only what a user pod has: the hub's variables, plus PATH and HOME of any container."""
    return dict(env, PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", HOME=str(home),
                PYTHONUNBUFFERED="1")


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:150]}")
        except psutil.Error:
            pass
    return out


# ------------------------------------------------------------------ fast: the configuration


@pytest.mark.parametrize("files", [(), ("secret-credentials.yaml",), ("custom-endpoint.yaml",),
                                   ("iam-role.yaml",), ("spot-workers.yaml",)])
def test_settings_fallback_equals_helm(tmp_path, files):
    """Without helm the launcher renders the settings in Python: it must equal the chart's
    own ConfigMap, rendered by the real helm, under the same values (localhost ones included)."""
    value_files = [EXAMPLES / f for f in files]
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump({**TEST_VALUES, "s3": {"anon": False,
                                                           "endpointUrl": "http://127.0.0.1:9"},
                                     "credentials": {"existingSecret": "hub-local-s3"},
                                     "jupyterhub": {"hub": {"config": trial_login(
                                         ["alice"], "x" * 8)}}}))
    value_files.append(local)
    by_helm = render_settings_helm(_helm(), CHART, value_files, tmp_path, "hub", "neuro")
    by_python = render_settings_python(load_values(CHART, value_files),
                                       CHART, "hub", "neuro")
    assert by_python == by_helm


def test_fallback_refuses_what_helm_refuses(tmp_path):
    values = load_values(CHART, overrides=[{"s3": {"anon": True},
                                                     "credentials": {"existingSecret": "x"}}])
    with pytest.raises(HubLocalError, match="set s3.anon=false"):
        render_settings_python(values)
    values = load_values(CHART, overrides=[{"dask": {"limits": {"maxWorker": 3}}}])
    with pytest.raises(HubLocalError, match="maxWorker"):
        render_settings_python(values)
    values = load_values(CHART, overrides=[{"jupyterhub": {"hub": {"loadRoles": {
        "server": {"scopes": ["users:activity!user", "access:servers!server"]}}}}}])
    with pytest.raises(HubLocalError, match=r"loadRoles.server.scopes must include "
                                            r"access:services!service=dask-gateway"):
        render_settings_python(values)
    values = load_values(CHART, overrides=[
        {"securityContext": {"container": {"privileged": True}}}])
    with pytest.raises(HubLocalError, match="at '/securityContext/container/privileged'"):
        render_settings_python(values)


def test_config_files_run_the_chart_snippets(monkeypatch, tmp_path):
    """What the hub and gateway processes execute: localhost settings, then the chart's own
    snippets (their effects are visible: gateway env in user pods, the cluster options class,
    the per-user backend), with the credentials the chart names resolved as Kubernetes would."""
    from traitlets.config import Config

    values = load_values(CHART, overrides=[TEST_VALUES, {
        "s3": {"anon": False, "endpointUrl": "http://127.0.0.1:9"},
        "credentials": {"existingSecret": "hub-local-s3"},
        "jupyterhub": {"hub": {"config": trial_login(["alice"], "x" * 8)}}}])
    settings = render_settings_python(values)
    settings["gateway"].update(address="http://127.0.0.1:1/services/dask-gateway",
                               proxyAddress="gateway://127.0.0.1:2",
                               serviceUrl="http://127.0.0.1:3")
    monkeypatch.setenv("NEUROPIXELS_HUB_SETTINGS", json.dumps(settings))
    launch = {"host": "127.0.0.1", "workdir": str(tmp_path), "values": values,
              "ports": dict.fromkeys(("public", "proxy_api", "hub", "gateway_api",
                                      "gateway_web", "gateway_tcp"), 1),
              "tokens": {"proxy": "p", "services": {"dask-gateway": "s"}}, "password": "x" * 8,
              "users": ["alice"], "secret_env": {"AWS_ACCESS_KEY_ID": "k",
                                                 "AWS_SECRET_ACCESS_KEY": "s"},
              "singleuser_cmd": "jupyterhub-singleuser"}
    hub = Config()
    configure_hub(hub, launch)
    assert hub.Spawner.environment["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://127.0.0.1:2"
    assert hub.Spawner.environment["AWS_ACCESS_KEY_ID"] == "k"
    assert hub.Spawner.environment["NEUROPIXELS_DASK__S3__ANON"] == "false"
    # The login is the values' hub.config, applied as z2jh does: the chart's trial mode.
    assert hub.JupyterHub.authenticator_class == "shared-password"
    assert hub.SharedPasswordAuthenticator.user_password == "x" * 8
    assert hub.Authenticator.allowed_users == ["alice"]
    assert "allow_all" not in hub.Authenticator
    (service,) = hub.JupyterHub.services
    assert service == {"name": "dask-gateway", "display": False, "api_token": "s",
                       "url": "http://127.0.0.1:3"}

    # The chart's roles, as z2jh loads them: users and their notebook servers' tokens may use
    # the gateway's service.
    roles = {role["name"]: role["scopes"] for role in hub.JupyterHub.load_roles}
    assert "access:services!service=dask-gateway" in roles["user"]
    assert "access:services!service=dask-gateway" in roles["server"]

    gw = Config()
    configure_gateway(gw, launch)
    # ... and the gateway admits only tokens with that access.
    assert gw.DaskGateway.JupyterHubAuthenticator.jupyterhub_service_name == "dask-gateway"
    assert gw.DaskGateway.backend_class.__name__ == "NeuropixelsBackend"
    assert gw.ClusterConfig.idle_timeout == IDLE_TIMEOUT
    assert gw.ClusterConfig.cluster_max_workers == 2
    assert gw.ClusterConfig.environment["AWS_SECRET_ACCESS_KEY"] == "s"
    assert gw.Proxy.prefix == "/services/dask-gateway"
    assert [f.field for f in gw.Backend.cluster_options.fields] == ["worker_cores",
                                                                   "worker_memory"]


def test_homes_are_seeded_by_the_charts_hook(tmp_path):
    """The chart's postStart hook, run for a local server as the kubelet runs it for a pod:
    the example notebooks are copied into the home, never over the user's files, once per
    image (here: per version of the examples)."""
    import asyncio
    from types import SimpleNamespace

    from neuropixels_dask.local.hub.serverconfig import seed_hook
    from neuropixels_dask.local.resources import notebooks_dir

    command = hublocal.post_start_command(load_values(CHART))
    assert command and command[0] == "sh"  # the chart's own hook, verbatim
    notebooks = notebooks_dir()
    image = hublocal.notebooks_image(notebooks)
    assert image == hublocal.notebooks_image(notebooks) and image.startswith("neuropixels-dask==")
    home = tmp_path / "home" / "alice"
    spawner = SimpleNamespace(home_dir=str(home), user=SimpleNamespace(name="alice"))

    def spawn(image: str) -> None:
        hook = seed_hook({"command": command, "notebooks": str(notebooks), "image": image})
        asyncio.run(hook(spawner))

    spawn(image)
    examples = sorted(p.name for p in notebooks.glob("*.ipynb"))
    assert examples and sorted(p.name for p in home.glob("*.ipynb")) == examples
    assert (home / "quickstart.ipynb").read_bytes() == (notebooks / "quickstart.ipynb").read_bytes()
    assert (home / ".neuropixels-hub" / "seeded").read_text() == image
    # The user edits one example and deletes another: the next spawn keeps both choices ...
    (home / "quickstart.ipynb").write_text("my edits")
    (home / "scale_out.ipynb").unlink()
    spawn(image)
    assert (home / "quickstart.ipynb").read_text() == "my edits"
    assert not (home / "scale_out.ipynb").exists()
    # ... until new examples arrive: copied again, still never over the user's file.
    spawn(image + "-next")
    assert (home / "quickstart.ipynb").read_text() == "my edits"
    assert (home / "scale_out.ipynb").is_file()
    assert (home / ".neuropixels-hub" / "seeded").read_text() == image + "-next"


def test_cache_url_must_be_s3(tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"cache": {"url": "/data/cache"}}))
    with pytest.raises(HubLocalError, match="s3:// URL"):
        hublocal.HubLocal(values_files=[values], workdir=tmp_path / "w", chp="/bin/true").start()


# --------------------------------------------------------------- the hub, end to end


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hub_local_end_to_end(tmp_path, tiny_cache_dir):
    _chp()  # installed beforehand, so that its download does not count against start-up
    values = tmp_path / "test-values.yaml"
    values.write_text(yaml.safe_dump(TEST_VALUES))
    workdir = tmp_path / "hub"
    mine_before = {p.pid for p in psutil.Process().children(recursive=True)}
    t_start = time.monotonic()
    cmd = [sys.executable, "-m", "neuropixels_dask.cli", "hub", "local", "--port", "0",
           "-f", str(values), "--user", "alice", "--user", "bob", "--password", PASSWORD,
           "--cache-dir", tiny_cache_dir, "--workdir", str(workdir)]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DASK_GATEWAY__", "NEUROPIXELS_DASK__", "AWS_"))}
    cli = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, cwd=REPO, start_new_session=True,
                           preexec_fn=hublocal._die_with_parent)  # even if pytest is killed
    out = _Lines(cli.stdout)
    timings: dict[str, float] = {}
    try:
        out.until(lambda line: line.startswith("Ctrl-C stops everything"), timeout=150)
        timings["up"] = time.monotonic() - t_start
        printed = _exports(out.lines)
        login = next(line for line in out.lines if "/hub/login" in line)
        hub_url = login.split()[2].removesuffix("/hub/login")
        assert "helm template" in next(line for line in out.lines if "settings:" in line)

        # Users get tokens from the hub, with their password (as at /hub/token).
        def token(user: str) -> str:
            status, body = http("POST", f"{hub_url}/hub/api/users/{user}/tokens",
                                body={"auth": {"username": user, "password": PASSWORD}})
            assert status == 201, body
            return body["token"]

        alice_env = dict(printed, JUPYTERHUB_API_TOKEN=token("alice"))
        bob_env = dict(printed, JUPYTERHUB_API_TOKEN=token("bob"))
        gateway_api = f"{printed['DASK_GATEWAY__ADDRESS']}/api/v1/clusters/"

        # A valid hub token is not enough: it needs access to the dask-gateway service. The
        # chart's roles grant it to users and to notebook servers (the `server` role, whose
        # scopes a notebook's own token gets); a token with narrower scopes is refused.
        def scoped_token(user: str, **scopes: list[str]) -> str:
            status, body = http("POST", f"{hub_url}/hub/api/users/{user}/tokens",
                                body={"auth": {"username": user, "password": PASSWORD},
                                      **scopes})
            assert status == 201, body
            return body["token"]

        narrow = scoped_token("alice", scopes=["read:users:name!user=alice"])
        as_notebook = scoped_token("alice", roles=["server"])
        gateway_auth = {"auth_scheme": "jupyterhub"}
        assert http("GET", f"{hub_url}/hub/api/user", token=narrow)[0] == 200  # hub: valid
        assert http("GET", gateway_api, token=narrow, **gateway_auth)[0] == 401
        assert http("POST", gateway_api, token=narrow, body={"cluster_options": {}},
                    **gateway_auth)[0] == 401
        assert http("GET", gateway_api, token=as_notebook, **gateway_auth) == (200, {})
        assert printed["DASK_GATEWAY__ADDRESS"].startswith(hub_url)  # through the hub's proxy
        assert printed["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
        assert printed["NEUROPIXELS_DASK__CACHE__URL"] == (
            "s3://allen-brain-observatory/visual-coding-neuropixels/ecephys-cache/")
        assert printed["AWS_ACCESS_KEY_ID"].startswith("hublocal")  # from the played Secret

        # Logging in with a browser's form spawns the user's JupyterLab (the `notebook` extra,
        # which the test extra brings): the hub shows its pending page, or sends the browser
        # straight on to JupyterLab when the server was up within the hub's own wait.
        # (tests/local/test_hub_browser.py does this in a real browser, notebooks and all.)
        assert hublocal._has_notebook_server()
        assert "JupyterLab for each user" in next(line for line in out.lines
                                                  if "notebooks:" in line)
        status, landed, page = _login(hub_url, "alice", PASSWORD)
        assert status == 200, (landed, page[:300])
        assert landed in (f"{hub_url}/hub/spawn-pending/alice",
                          f"{hub_url}/user/alice/lab"), landed
        assert _login(hub_url, "alice", "wrong-password")[1].startswith(f"{hub_url}/hub/login")

        # A user whose name is not allowed, or with a wrong password, gets no token.
        for user, password in (("mallory", PASSWORD), ("alice", "wrong-password")):
            status, _ = http("POST", f"{hub_url}/hub/api/users/{user}/tokens",
                             body={"auth": {"username": user, "password": password}})
            assert status == 403

        # Requests without a valid token are refused, by the gateway and by the hub. (For a
        # token the hub does not know, JupyterHub >= 2 answers the gateway's check with 403,
        # which dask-gateway-server passes on as a 500 "Permission failure verifying user's
        # JupyterHub API token": refused all the same, nothing is created.)
        for method, body in (("GET", None), ("POST", {"cluster_options": {}})):
            status, answer = http(method, gateway_api, body=body)
            assert status == 401, answer
            status, answer = http(method, gateway_api, token="not-a-token", body=body,
                                  auth_scheme="jupyterhub")
            assert status in (401, 500) and "token" in str(answer).lower(), answer
        assert http("GET", f"{hub_url}/hub/api/user")[0] == 403
        assert http("GET", f"{hub_url}/hub/api/user", token="not-a-token")[0] == 403
        with _gateway(bob_env, token="not-a-token") as bogus, pytest.raises(Exception) as err:
            bogus.list_clusters()
        assert "JupyterHub API token" in str(err.value) or "401" in str(err.value)

        # The S3 server refuses anonymous reads: only the chart's credentials open the data.
        import s3fs

        anon = s3fs.S3FileSystem(anon=True, skip_instance_cache=True, client_kwargs={
            "endpoint_url": printed["NEUROPIXELS_DASK__S3__ENDPOINT_URL"]})
        with pytest.raises(PermissionError):
            anon.cat(printed["NEUROPIXELS_DASK__CACHE__URL"] + "manifest.json")

        with _gateway(bob_env) as bob, _gateway(alice_env) as alice:
            # The chart's cluster options, bounds included.
            status, body = http("GET", printed["DASK_GATEWAY__ADDRESS"] + "/api/v1/options",
                                token=bob_env["JUPYTERHUB_API_TOKEN"], auth_scheme="jupyterhub")
            assert status == 200, body
            spec = {f["field"]: f for f in body["cluster_options"]}
            assert spec["worker_cores"]["spec"] == {"type": "float", "min": 0.5, "max": 4.0}
            assert spec["worker_memory"]["spec"] == {"type": "float", "min": 1.0, "max": 32.0}
            assert (spec["worker_cores"]["default"], spec["worker_memory"]["default"]) == (1, 4)
            # Over the per-cluster ceilings: the gateway refuses, with the limit in the
            # message. (submit(), not new_cluster(): when the server refuses a new_cluster()
            # or connect(), the dask-gateway 2026.3 client can deadlock its event loop later,
            # from Gateway.__del__ running on the loop thread.)
            with pytest.raises(ValueError, match=r"worker_cores must be <= 4"):
                bob.submit(worker_cores=64)
            with pytest.raises(ValueError, match=r"worker_memory must be <= 32"):
                bob.submit(worker_memory=100)

            # Bob starts a cluster and forgets it: the idle timeout must shut it down.
            idle_name = bob.submit()
            t_idle = time.monotonic()
            # One cluster is all a user may have (maxClustersPerUser: 1).
            with pytest.raises(ValueError, match=r"already has 1 running or pending clusters, "
                                                 r"the most allowed per user \(1\)"):
                bob.submit()

            # Meanwhile Alice works in her notebook, with only a user pod's environment.
            notebook = subprocess.Popen(
                [sys.executable, "-c", NOTEBOOK], env=_pod_env(alice_env, tmp_path),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)

            # Alice cannot see Bob's cluster, nor view, scale or stop it.
            _wait_running(bob, idle_name)
            assert alice.list_clusters() == []
            assert [c.name for c in bob.list_clusters()] == [idle_name]
            alice_auth = {"token": alice_env["JUPYTERHUB_API_TOKEN"], "auth_scheme": "jupyterhub"}
            assert http("GET", gateway_api + idle_name, **alice_auth)[0] == 403
            assert http("POST", gateway_api + idle_name + "/scale", body={"count": 1},
                        **alice_auth)[0] == 403
            assert http("DELETE", gateway_api + idle_name, **alice_auth)[0] == 403
            # Nor connect to it: the API refuses her (in a process of its own: a refused
            # Gateway.connect leaves the dask-gateway client's event loop stuck) ...
            refused = subprocess.run(
                [sys.executable, "-c", "from dask_gateway import Gateway; "
                 f"Gateway().connect({idle_name!r})"],
                env=_pod_env(alice_env, tmp_path), capture_output=True, text=True, timeout=60)
            assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr[-500:]
            # ... and the scheduler refuses TLS credentials that are not the cluster's own.
            _forged_tls_is_refused(printed["DASK_GATEWAY__PROXY_ADDRESS"], idle_name, tmp_path)
            assert [c.name for c in bob.list_clusters()] == [idle_name]  # still running

            stdout, _ = notebook.communicate(timeout=180)
            assert notebook.returncode == 0, stdout[-4000:]
            result = json.loads(stdout.split("RESULT ", 1)[1])
            timings["notebook"] = result["total_s"]

            # The notebook ran on a dask-gateway cluster with the chart's cluster options ...
            assert result["cluster_type"] == "GatewayCluster"
            assert result["over_ceiling"].startswith("worker_cores must be <= 4")
            assert result["workers"] == [[2, 4 * GIB]] * 2  # 1 core, 2 threads per core
            # ... whose workers got the chart's data settings and the Secret's credentials,
            assert result["worker_env"] == [{k: printed[k] for k in result["worker_env"][0]}] * 2
            assert result["worker_env"][0]["NEUROPIXELS_DASK__S3__ANON"] == "false"
            # ... and computed both analyses on every session, reading S3 themselves.
            assert result["failed"] == {}
            assert len(result["sessions"]) >= 1
            assert result["spectra"]["session_id"] == len(result["sessions"])
            assert result["spectra_finite"]
            assert result["corr"]["session_id"] == len(result["sessions"])
            assert result["corr"]["area_a"] == result["corr"]["area_b"] >= 2
            # scale() beyond maxWorkersPerCluster is capped, with the limit in the message.
            assert result["scale_warnings"] == [
                "Scale request of 5 workers would exceed resource limit of 2 workers. "
                "Scaling to 2 instead."]
            # She shut her cluster down.
            status, clusters = http("GET", gateway_api, **alice_auth)
            assert status == 200 and clusters == {}

            # Bob's forgotten cluster: shut down by the idle timeout, not before.
            deadline = t_idle + IDLE_TIMEOUT * 1.25 + 30
            while bob.list_clusters() and time.monotonic() < deadline:
                time.sleep(0.5)
            idle_after = time.monotonic() - t_idle
            assert bob.list_clusters() == [], _logs(workdir)
            assert idle_after >= IDLE_TIMEOUT - 1
            timings["idle_shutdown"] = idle_after
            deadline = time.monotonic() + 30
            while bob.get_cluster(idle_name).status.name != "STOPPED":
                assert time.monotonic() < deadline, bob.get_cluster(idle_name).status
                time.sleep(0.3)
            # The per-user limit counts running clusters only: Bob may start another, and
            # leaves it running, with a worker, for Ctrl-C to clean up. (Through the API, not a
            # GatewayCluster: that one's own Gateway would hit the double close above.)
            running = bob.submit()
            _wait_running(bob, running)
            bob.scale_cluster(running, 1)
            deadline = time.monotonic() + 60
            while "dask worker" not in {_name(p) for p in _descendants(cli.pid)}:
                assert time.monotonic() < deadline, _logs(workdir)
                time.sleep(0.3)

        # Alice's JupyterLab (spawned by her login above), seeded home, and a kernel in it with
        # exactly a user pod's environment, left running for Ctrl-C too.
        alice_token = alice_env["JUPYTERHUB_API_TOKEN"]
        _wait_server_ready(hub_url, "alice", alice_token, _logs(workdir))
        assert (workdir / "home" / "alice" / "quickstart.ipynb").is_file()
        status, kernel = http("POST", f"{hub_url}/user/alice/api/kernels",
                              token=alice_token, body={"name": "python3"})
        assert status == 201, kernel
        kernel_env = _kernel_environment(cli.pid, kernel["id"])
        pod_keys = [k for k in printed if not k.startswith("JUPYTERHUB_")]  # hub's own
        assert {k: kernel_env.get(k) for k in pod_keys} == {k: printed[k] for k in pod_keys}
        assert kernel_env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/alice/"
        assert kernel_env["HOME"] == str(workdir / "home" / "alice")

        # Ctrl-C: everything stops, nothing is left running.
        tree = _descendants(cli.pid)
        names = {_name(p) for p in tree}
        # proxy, hub, gateway (+ its proxy), Bob's scheduler and worker, the S3 server, Alice's
        # notebook server and kernel
        assert {"configurable-http-proxy", "jupyterhub", "dask_gateway_server",
                "dask-gateway-proxy", "dask scheduler", "dask worker", "s3server",
                "jupyterhub-singleuser", "ipykernel_launcher"} <= names, names
        run_ids = {_marker(p) for p in tree} - {None}
        assert len(run_ids) == 1
        t_stop = time.monotonic()
        os.killpg(cli.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert cli.wait(timeout=90) == 0, "\n".join(out.lines[-30:])
        timings["stop"] = time.monotonic() - t_stop
        assert _alive(tree) == []
        assert hublocal.marked_processes(run_ids.pop()) == []
        assert out.lines[-1].startswith("stopped: no hub, gateway, cluster or S3 process")
        assert "notebook server or kernel" in out.lines[-1]
        assert _refused(hub_url)
    finally:
        if cli.poll() is None:  # the test failed: still stop everything, gracefully first
            os.killpg(cli.pid, signal.SIGINT)
            try:
                cli.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(cli.pid, signal.SIGKILL)
                cli.wait(10)
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    leftovers = [p for p in psutil.Process().children(recursive=True)
                 if p.pid not in mine_before]
    assert _alive(leftovers) == []


def _login(hub_url: str, user: str, password: str) -> tuple[int, str, str]:
    """Log in through the hub's login form as a browser does (XSRF token, cookies, redirects);
    ``(status, final URL, page)``."""
    import re
    import urllib.error
    import urllib.parse
    import urllib.request
    from http.cookiejar import CookieJar

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(f"{hub_url}/hub/login", timeout=20) as resp:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', resp.read().decode()).group(1)
    form = urllib.parse.urlencode({"username": user, "password": password, "_xsrf": xsrf})
    try:
        with opener.open(f"{hub_url}/hub/login", data=form.encode(), timeout=20) as resp:
            return resp.status, resp.url, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:  # a refused login answers 403 on the login page
        return exc.code, exc.url, exc.read().decode(errors="replace")


def _name(p: psutil.Process) -> str:
    """What a process of the local hub is, from its command line."""
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "?"
    for name in ("configurable-http-proxy", "dask-gateway-proxy", "dask scheduler",
                 "dask worker", "s3server", "jupyterhub-singleuser", "ipykernel_launcher",
                 "jupyterhub", "dask_gateway_server"):
        if name in cmd:
            return name
    return cmd[:80]


def _marker(p: psutil.Process) -> str | None:
    try:
        return p.environ().get(RUN_MARKER)
    except psutil.Error:
        return None


def _wait_server_ready(hub_url: str, user: str, token: str, logs: str,
                       timeout: float = 120) -> None:
    """The user's notebook server is up (the hub's model says ready)."""
    deadline = time.monotonic() + timeout
    while True:
        status, model = http("GET", f"{hub_url}/hub/api/users/{user}", token=token)
        assert status == 200, model
        if (model.get("servers") or {}).get("", {}).get("ready"):
            return
        assert time.monotonic() < deadline, f"{user}'s server did not start:\n{logs}"
        time.sleep(0.5)


def _kernel_environment(root: int, kernel_id: str, timeout: float = 60) -> dict[str, str]:
    """The environment of the kernel process ``kernel_id`` (a descendant of ``root``)."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in _descendants(root):
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(proc.cmdline())
                if "ipykernel_launcher" in cmd and kernel_id in cmd:
                    return proc.environ()
        assert time.monotonic() < deadline, f"no process for kernel {kernel_id}"
        time.sleep(0.3)


def _wait_running(gateway, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while gateway.get_cluster(name).status.name != "RUNNING":
        assert time.monotonic() < deadline, f"cluster {name} did not start"
        time.sleep(0.3)


def _refused(url: str) -> bool:
    try:
        http("GET", url, timeout=3)
    except OSError:
        return True
    return False


def _forged_tls_is_refused(proxy_address: str, cluster_name: str, tmp_path: Path) -> None:
    """Connecting to a cluster through the gateway's proxy with a self-made certificate for
    that cluster's name fails: the scheduler only accepts the cluster's own TLS credentials,
    which the gateway hands only to the cluster's owner."""
    import dask_gateway  # noqa: F401 - registers the gateway:// comm
    from dask_gateway_server.tls import new_keypair
    from distributed import Client
    from distributed.security import Security

    cert, key = new_keypair(cluster_name)
    (tmp_path / "forged.crt").write_bytes(cert)
    (tmp_path / "forged.pem").write_bytes(key)
    security = Security(tls_ca_file=str(tmp_path / "forged.crt"),
                        tls_client_cert=str(tmp_path / "forged.crt"),
                        tls_client_key=str(tmp_path / "forged.pem"), require_encryption=True)
    address = f"gateway://{proxy_address.split('://', 1)[1]}/{cluster_name}"
    with pytest.raises(OSError):
        Client(address, security=security, timeout=5)


def test_port_check_ignores_time_wait_but_not_a_listener():
    """Restarting `hub local` right after Ctrl-C: the old connections to port 8000 linger in
    TIME_WAIT, which must not read as "port in use" (the proxy itself binds with SO_REUSEADDR);
    a server still listening must."""
    import socket

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its port goes to TIME_WAIT
    time.sleep(0.1)
    client.close()
    server.close()
    assert hublocal._port_free("127.0.0.1", port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not hublocal._port_free("127.0.0.1", listener.getsockname()[1])
