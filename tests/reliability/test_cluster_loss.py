"""The scheduler of a user's dask-gateway cluster is killed (SIGKILL) on the local hub, once during
``map_sessions`` and once during a plain ``.compute()``.

* ``map_sessions`` comes back (no hang) with the session that had finished and names the one
  that did not (``.unfinished``, with a warning); ``map_sessions(..., resume=previous)`` on a new
  cluster computes only that one and returns both, the finished one untouched.
* ``.compute()`` raises ``ClusterLostError`` saying what happened and what to do, instead of
  hanging.

Everything real: ``HubLocal`` (JupyterHub, dask-gateway with the chart's configuration, the S3
server), a "notebook" that is a separate process with only a user pod's environment, and the
scheduler process killed by its pid.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from neuropixels_dask.local.hub.launcher import HubLocal, marked_processes

#: a user's notebook: scheduler pids on stdout, map_sessions' progress in its log, results last
NOTEBOOK = textwrap.dedent("""
    import json, logging, os, sys, threading, time, warnings
    import numpy as np
    import neuropixels_dask as npd
    from neuropixels_dask.analyses import lfp_spectra, map_sessions

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(message)s")
    logging.getLogger("neuropixels_dask.tasks.sessions").setLevel(logging.INFO)
    cache = npd.open_cache()
    ids = sorted(int(i) for i in cache.get_session_table().index)
    FAST, SLOW = ids[0], ids[-1]
    calls = []

    def stall(block):
        time.sleep(600)                       # never finishes before the scheduler dies
        return block

    def spectrum(session, stalled=True):
        calls.append(session.ecephys_session_id)
        probes = session.probes.index[session.probes["has_lfp_data"].astype(bool)]
        psd = lfp_spectra(session, int(probes[0])).sel(stimulus="all")
        if stalled and session.ecephys_session_id == SLOW:
            psd = psd.copy(data=psd.data.map_blocks(stall, meta=np.empty((0, 0), psd.dtype)))
        return psd

    def say(tag, **kw):
        print(tag, json.dumps(kw), flush=True)

    client = npd.get_client(n_workers=1, worker_cores=2)    # one worker, two threads
    client.wait_for_workers(1, timeout=180)
    say("SCHEDULER", pid=client.run_on_scheduler(os.getpid), fast=FAST, slow=SLOW)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = map_sessions(spectrum, ids, cache, client=client, progress=False)
    say("RESULT1", done=sorted(first.per_session), unfinished=first.unfinished,
        failed=first.failed, warned=[str(w.message) for w in caught],
        lost=first.cluster_lost, repr=repr(first))

    client = npd.get_client(n_workers=1, worker_cores=2)    # the old one is gone: a new one
    client.wait_for_workers(1, timeout=180)
    calls.clear()
    again = map_sessions(lambda s: spectrum(s, stalled=False), ids, cache, client=client,
                         progress=False, resume=first)
    say("RESULT2", calls=calls, complete=again.complete, done=sorted(again.per_session),
        same=bool(again.per_session[FAST].identical(first.per_session[FAST])),
        dims=dict(again.result.sizes))

    out = {}
    def compute():
        try:
            spectrum(cache.get_session_data(SLOW)).compute()
            out["error"] = None
        except BaseException as exc:
            out["error"], out["message"] = type(exc).__name__, str(exc)
    thread = threading.Thread(target=compute)
    thread.start()
    while not client.run_on_scheduler(lambda dask_scheduler: any(
            ts.state == "processing" and "stall" in ts.prefix.name
            for ts in dask_scheduler.tasks.values())):
        time.sleep(0.2)
    say("SCHEDULER2", pid=client.run_on_scheduler(os.getpid))
    thread.join(300)
    say("RESULT3", alive=thread.is_alive(), **out)
""")


class _Lines:
    """A child's stdout, line by line, with a bounded wait for the next awaited line."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def until(self, prefix: str, timeout: float, parse: bool = True) -> tuple[dict, float]:
        """The JSON after the next line starting with ``prefix`` (and when it came)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {prefix} within {timeout:.0f} s:\n"
                                   + "\n".join(self.lines[-40:])) from None
            if line is None:
                raise EOFError("\n".join(self.lines[-40:]))
            if line.startswith(prefix):
                rest = line[len(prefix):].strip()
                return (json.loads(rest) if parse else {"line": rest}), time.monotonic()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_scheduler_killed_during_map_sessions_and_compute(tmp_path, tiny_cache_dir):
    values = {"dask": {"idleTimeout": 600,
                       "limits": {"maxWorkersPerCluster": 1, "maxClustersPerUser": 2}}}
    with HubLocal(users=["ada"], port=0, cache_dir=tiny_cache_dir, values=values,
                  workdir=tmp_path / "hub") as hub:
        env = dict(hub.user_environment(hub.token("ada"), "ada"),
                   PATH=f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
                   HOME=str(tmp_path), PYTHONUNBUFFERED="1")
        nb = subprocess.Popen([sys.executable, "-c", NOTEBOOK], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = _Lines(nb.stdout)
        try:
            info, _ = out.until("SCHEDULER ", timeout=180)
            # the fast session has its result: now the scheduler dies, the slow one stalled
            out.until(f"LOG map_sessions: session {info['fast']} done", timeout=180,
                      parse=False)
            os.kill(info["pid"], signal.SIGKILL)
            killed = time.monotonic()
            first, at = out.until("RESULT1", timeout=120)  # bounded: no hang
            seconds = {"map_sessions": at - killed}
            assert first["done"] == [info["fast"]] and first["unfinished"] == [info["slow"]]
            assert first["failed"] == {}
            assert "went away" in first["lost"] and "resume=" in first["lost"]
            assert any(f"unfinished: [{info['slow']}]" in w for w in first["warned"])
            assert "1 unfinished" in first["repr"]

            second, _ = out.until("RESULT2", timeout=240)
            assert second["calls"] == [info["slow"]]  # only the rest was computed again
            assert second["complete"] and second["done"] == sorted([info["fast"],
                                                                    info["slow"]])
            assert second["same"] and second["dims"]["session_id"] == 2

            pid2, _ = out.until("SCHEDULER2", timeout=180)
            os.kill(pid2["pid"], signal.SIGKILL)
            killed = time.monotonic()
            third, at = out.until("RESULT3", timeout=120)
            seconds["compute"] = at - killed
            assert not third["alive"]
            assert third["error"] == "ClusterLostError", third
            assert "went away" in third["message"] and "npd.get_client()" in third["message"]
            print(f"\nseconds from SIGKILL to the notebook's answer: {seconds}")
        finally:  # (the notebook's interpreter is not asked to exit: a kernel lives on)
            if nb.poll() is None:
                nb.kill()
                nb.wait(10)
        run_id = hub.run_id
    assert marked_processes(run_id) == []
