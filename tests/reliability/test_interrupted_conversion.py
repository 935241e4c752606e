"""``neuropixels-dask convert`` killed at random points (several seeds, SIGKILL and Ctrl-C, once
twice in a row): the same command resumes, finishes and passes ``--verify``; the store equals an
uninterrupted conversion array for array; and a reader polling the destination the whole time
never opens a half-written store: it gets "not converted" / "incomplete, rerun convert" errors
until the store is complete, and the right data after.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from reliability_support import PREFIX

import neuropixels_dask as npd
from neuropixels_dask import zarrstore as zs
from neuropixels_dask.errors import CacheNotFoundError, InvalidFileError

CLI = str(Path(sys.executable).with_name("neuropixels-dask"))
LATENCY = (0.001, 0.006)  # spreads the conversion over a few seconds


def _env(rel_server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROPIXELS_DASK__")}
    return {**env, **rel_server.env()}


def _spawn(rel_server, dst: Path, sid: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([CLI, "convert", rel_server.url(PREFIX), str(dst), "--sessions",
                             str(sid), "--no-progress", *extra],
                            env=_env(rel_server), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_started(proc: subprocess.Popen, dst: Path, timeout: float = 60) -> float:
    """Wait until the converter has written the cache files (the conversion proper began)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (dst / "manifest.json").exists():
            return time.monotonic()
        time.sleep(0.005)
    return time.monotonic()


def _arrays(store_url: str) -> dict[str, bytes]:
    group = zarr.open_group(store_url, mode="r")
    return {name: arr[...].tobytes() for name, arr in group.members(max_depth=None)
            if isinstance(arr, zarr.Array)}


@pytest.fixture(scope="module")
def reference(rel_server, ids, tmp_path_factory):
    """One uninterrupted CLI run: the store to compare with, and how long converting takes."""
    from reliability_support import NO_FAULTS

    sid, _ = ids
    dst = tmp_path_factory.mktemp("uninterrupted") / "zarr"
    rel_server.configure(**{**NO_FAULTS, "latency": LATENCY})
    try:
        proc = _spawn(rel_server, dst, sid)
        started = _wait_started(proc, dst)
        out, err = proc.communicate(timeout=120)
        duration = time.monotonic() - started
    finally:
        rel_server.configure(**NO_FAULTS)
    assert proc.returncode == 0, out + err
    store = zs.store_url(str(dst / f"session_{sid}"), sid)
    print(f"uninterrupted conversion: {duration:.2f} s after the cache files")
    return _arrays(store), duration


class Reader(threading.Thread):
    """Opens the session from the destination over and over while the converter runs."""

    #: what an InvalidFileError may say while a store is being written. The last one is
    #: misleading (convert creates the root group, then sets its attributes: a reader in
    #: between, or after a kill right there, is told the store is foreign) but still refuses.
    MESSAGES = ("is incomplete", "not valid JSON", "not a session store written by")

    def __init__(self, dst: Path, sid: int, source: str) -> None:
        super().__init__(daemon=True)
        self.dst, self.sid, self.source = str(dst), sid, source
        self.stop = threading.Event()
        self.outcomes: dict[str, int] = {}
        self.problems: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                session = npd.open_cache(self.dst).get_session_data(self.sid)
            except (CacheNotFoundError, InvalidFileError) as exc:
                kind = type(exc).__name__
                if isinstance(exc, InvalidFileError) and not any(
                        sign in str(exc) for sign in self.MESSAGES):
                    self.problems.append(f"unexpected message: {exc}")
            except Exception as exc:  # noqa: BLE001 - anything else is a failure of the test
                kind = "other"
                self.problems.append(f"{type(exc).__name__}: {exc}")
            else:
                kind = "opened"
                self.check_complete(session)
            self.outcomes[kind] = self.outcomes.get(kind, 0) + 1
            time.sleep(0.05)

    def check_complete(self, session) -> None:
        """A store that opens must be complete, and hold the source's data."""
        info = session.reader._root.attrs[zs.ATTRS_KEY]
        if not (info["complete"] and session.reader._root.metadata.consolidated_metadata):
            self.problems.append("a store that is not complete was opened")
            return
        src = npd.open_cache(self.source).get_session_data(self.sid)
        if not session.units.equals(src.units):
            self.problems.append("units differ in an opened store")
        pid = int(src.probes.index[0])
        a = src.get_lfp(pid, time_range=(20.0, 21.0)).values
        b = session.get_lfp(pid, time_range=(20.0, 21.0)).values
        if a.tobytes() != b.tobytes():
            self.problems.append("LFP differs in an opened store")


def _interrupt(proc, dst: Path, rng: random.Random, duration: float, sig: int) -> float:
    started = _wait_started(proc, dst)
    delay = rng.uniform(0.0, duration)
    time.sleep(max(0.0, started + delay - time.monotonic()))
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.communicate(timeout=60)
    return delay


@pytest.mark.parametrize("seed,sig,times", [(0, signal.SIGKILL, 1), (1, signal.SIGINT, 1),
                                            (2, signal.SIGKILL, 2)])
def test_killed_converter_resumes_and_verifies(rel_server, reference, ids, tiny_cache_dir,
                                               tmp_path, faults, seed, sig, times):
    expected, duration = reference
    sid, _ = ids
    rng = random.Random(seed)
    dst = tmp_path / "zarr"
    store = zs.store_url(str(dst / f"session_{sid}"), sid)
    faults(latency=LATENCY)
    reader = Reader(dst, sid, tiny_cache_dir)
    reader.start()
    try:
        for _ in range(times):  # killed, and (once) killed again while resuming
            proc = _spawn(rel_server, dst, sid)
            _interrupt(proc, dst, rng, duration, sig)
            # 130: the CLI caught Ctrl-C; -2: Ctrl-C landed while the interpreter shut down
            assert proc.returncode in (0, -signal.SIGKILL, 130, -signal.SIGINT), proc.returncode
    finally:
        reader.stop.set()
        reader.join(30)
    assert reader.problems == []
    assert sum(reader.outcomes.values()) >= 5, reader.outcomes
    info = dict(zarr.open_group(store, mode="r").attrs.get(zs.ATTRS_KEY) or {}) \
        if os.path.exists(os.path.join(store, "zarr.json")) else {}
    if proc.returncode != 0 and not info.get("complete"):
        # interrupted before the end: refused, with the way out in the message
        with pytest.raises((InvalidFileError, CacheNotFoundError), match="convert"):
            npd.open_cache(str(dst)).get_session_data(sid)

    faults()
    out = subprocess.run([CLI, "convert", rel_server.url(PREFIX), str(dst), "--sessions",
                          str(sid), "--verify", "--no-progress"], env=_env(rel_server),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"session {sid}: " in out.stdout and "every value verified" in out.stdout
    assert not os.path.exists(os.path.join(store, zs.PROGRESS_DIR))
    assert _arrays(store) == expected
    session = npd.open_cache(str(dst)).get_session_data(sid, filter_by_validity=False)
    source = npd.open_cache(tiny_cache_dir).get_session_data(sid, filter_by_validity=False)
    assert session.units.equals(source.units)
    for uid in source.units.index:
        assert np.array_equal(session.spike_times[uid], source.spike_times[uid])
