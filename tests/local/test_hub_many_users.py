"""Eight users on one local hub at the same time (issue 16): each logs in, gets a dask-gateway
cluster, has its worker read the cache from S3, and is refused a second cluster with the
per-user limit in the message; the hub's API answers every request meanwhile (its latency is
measured and reported); after ``stop()`` no process of the run is left.

Bounded in count and time: 8 users, one worker each (the chart's ``maxWorkersPerCluster`` set to
1 here), one cluster each (``maxClustersPerUser`` 1), everything on loopback. The chart has no
hub-wide cluster ceiling (only per cluster and per user), so the limit a user can meet is the
per-user one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import numpy as np
import psutil
import pytest

from neuropixels_dask.local.hub.launcher import HubLocal, http, marked_processes

USERS = [f"user{i}" for i in range(8)]
PASSWORD = "many-users-test-password"
VALUES = {"dask": {"idleTimeout": 600,
                   "limits": {"maxWorkersPerCluster": 1, "maxClustersPerUser": 1}}}
#: no request to the hub may take longer than this (a hang would show as a timeout)
REQUEST_TIMEOUT = 10.0
#: the hub's API is asked this often while the users work (seconds between requests)
SAMPLE_EVERY = 0.1

#: one user's notebook: a cluster, a task on its worker reading S3, a second cluster refused
NOTEBOOK = textwrap.dedent("""
    import json, os, time
    import neuropixels_dask as npd
    from dask_gateway import Gateway

    out = {"user": os.environ["JUPYTERHUB_USER"]}
    t0 = time.monotonic()
    try:
        client = npd.get_client(n_workers=1)
        out["cluster"] = client.cluster.name
        client.wait_for_workers(1, timeout=300)
        out["worker_s"] = round(time.monotonic() - t0, 1)

        def sessions():                      # on the worker, with the worker's credentials
            import neuropixels_dask as npd
            return len(npd.open_cache().get_session_table())

        out["sessions"] = client.submit(sessions, pure=False).result(timeout=300)
        gateway = Gateway()
        try:
            out["second"] = "accepted: " + gateway.submit()
        except ValueError as exc:
            out["second"] = str(exc)
        client.cluster.shutdown()
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["total_s"] = round(time.monotonic() - t0, 1)
    print("RESULT " + json.dumps(out), flush=True)
""")


def _login(hub_url: str, user: str) -> int:
    """Log in through the hub's form as a browser does; the final HTTP status."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(f"{hub_url}/hub/login", timeout=REQUEST_TIMEOUT) as resp:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', resp.read().decode()).group(1)
    form = urllib.parse.urlencode({"username": user, "password": PASSWORD, "_xsrf": xsrf})
    try:
        with opener.open(f"{hub_url}/hub/login", data=form.encode(),
                         timeout=REQUEST_TIMEOUT) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


class _Sampler(threading.Thread):
    """Asks the hub's API for one user after another, timing every answer."""

    def __init__(self, api_url: str, tokens: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.api_url, self.tokens = api_url, tokens
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        users = list(self.tokens)
        k = 0
        while not self.stopping.wait(SAMPLE_EVERY):
            user = users[k % len(users)]
            k += 1
            t0 = time.monotonic()
            try:
                status, body = http("GET", f"{self.api_url}/users/{user}",
                                    token=self.tokens[user], timeout=REQUEST_TIMEOUT)
            except OSError as exc:
                self.failures.append(f"{user}: {type(exc).__name__}: {exc}")
                continue
            self.latencies.append(time.monotonic() - t0)
            if status != 200 or body.get("name") != user:
                self.failures.append(f"{user}: HTTP {status} {str(body)[:200]}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_eight_users_at_once(tmp_path, tiny_cache_dir, record_property):
    mine_before = {p.pid for p in psutil.Process().children(recursive=True)}
    hub = HubLocal(users=USERS, port=0, password=PASSWORD, cache_dir=tiny_cache_dir,
                   values=VALUES, workdir=tmp_path / "hub")
    with hub:
        logins = {}
        threads = [threading.Thread(target=lambda u=u: logins.__setitem__(u, _login(hub.url, u)))
                   for u in USERS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert logins == dict.fromkeys(USERS, 200), logins
        tokens = {u: hub.token(u) for u in USERS}
        sampler = _Sampler(hub.api_url, tokens)
        sampler.start()
        t0 = time.monotonic()
        notebooks = {
            u: subprocess.Popen(
                [sys.executable, "-c", NOTEBOOK], cwd=tmp_path, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=dict(hub.user_environment(tokens[u], u),
                         PATH=f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
                         HOME=str(tmp_path), PYTHONUNBUFFERED="1"))
            for u in USERS}
        results, outputs = {}, {}
        for u, nb in notebooks.items():
            try:
                outputs[u], _ = nb.communicate(timeout=max(1.0, 480 - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                nb.kill()
                outputs[u] = nb.communicate()[0]
            line = next((x for x in outputs[u].splitlines() if x.startswith("RESULT ")), None)
            results[u] = json.loads(line[len("RESULT "):]) if line else {"error": outputs[u][-2000:]}
        wall = time.monotonic() - t0
        sampler.stopping.set()
        sampler.join(REQUEST_TIMEOUT + 5)
        run_id = hub.run_id
        # every user got a cluster of their own, used it, and met the per-user limit
        for u, r in results.items():
            assert "error" not in r, (u, r, outputs[u][-3000:])
            assert r["sessions"] == 2, r  # the worker read the cache from S3
            assert re.search(r"already has 1 running or pending clusters, the most allowed "
                             r"per user \(1\)", r["second"]), r
        assert len({r["cluster"] for r in results.values()}) == len(USERS)
        # the hub answered every request meanwhile
        lat = np.array(sampler.latencies)
        assert not sampler.failures, sampler.failures[:5]
        assert len(lat) >= 20
        figures = {"users": len(USERS), "wall_s": round(wall, 1),
                   "api_requests": len(lat), "api_p50_s": round(float(np.percentile(lat, 50)), 3),
                   "api_p95_s": round(float(np.percentile(lat, 95)), 3),
                   "api_max_s": round(float(lat.max()), 3),
                   "worker_up_s_max": max(r["worker_s"] for r in results.values()),
                   "notebook_s_max": max(r["total_s"] for r in results.values())}
        for k, v in figures.items():
            record_property(k, v)
        print(f"\nmany users: {figures}")
    # nothing of the run is left: no hub, proxy, gateway, scheduler, worker or S3 process
    assert marked_processes(run_id) == []
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in mine_before
            and p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [" ".join(p.cmdline())[:120] for p in left]
