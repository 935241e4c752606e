"""The other side of each row: what a user would do instead, written the way users write it.

* **fsspec defaults**: ``s3fs.S3FileSystem(...).open(path)`` with s3fs's defaults (50 MB
  ``readahead`` blocks), handed to h5py, or to pynwb through ``NWBHDF5IO(file=...)``.
* **remfile**: ``remfile.File(url)`` on a presigned HTTP URL of the same object (the DANDI way of
  streaming NWB), handed to h5py / pynwb.
* **The AllenSDK way**: AllenSDK 2.16 cannot be installed next to current numpy (it pins
  ``numpy<1.24``, pandas 1.x …). Row 6 runs it itself in its own environment where it is
  installed (``row6_spikes.py``, ``allensdk_side.py``); elsewhere, and as row 6's fallback, its
  behaviour is emulated faithfully here: the whole NWB file is
  downloaded first (its cache fetches whole files), then read with pynwb as its
  ``EcephysNwbSessionApi`` does — ``get_lfp`` loads the probe's whole ``data[:]`` and
  ``timestamps[:]`` into memory; the session's ``spike_times`` come from
  ``nwbfile.units.to_dataframe()`` — and its algorithms run on that (spike counts: the
  loop-for-loop transcription in ``tests/kernels/_allensdk_reference.py``; spectra:
  ``scipy.signal.welch``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
#: columns of ``/units`` that are ragged arrays (not part of a metadata table)
RAGGED_UNIT_COLUMNS = {"spike_times", "spike_amplitudes", "waveform_mean", "waveform_sd"}


def s3fs_defaults(server: Any):
    """A fresh s3fs filesystem on the server with s3fs's own defaults (no tuning)."""
    import s3fs

    return s3fs.S3FileSystem(**server.storage_options(), skip_instance_cache=True)


def presigned_url(server: Any, key: str) -> str:
    """A presigned GET URL of ``key`` (what remfile is given for a private S3 object)."""
    return s3fs_defaults(server).url(f"{server.bucket}/{key}", expires=3600)


def remote_file(kind: str, server: Any, key: str):
    """A file-like object for ``key``: ``"fsspec"`` (s3fs defaults) or ``"remfile"``."""
    if kind == "fsspec":
        return s3fs_defaults(server).open(f"{server.bucket}/{key}", "rb")
    if kind == "remfile":
        import remfile

        return remfile.File(presigned_url(server, key))
    raise ValueError(f"unknown remote file kind {kind!r}")


# ---- row 1: open a session with pynwb -------------------------------------------------------

def pynwb_open_session(fileobj, meter) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Open the session file with pynwb (``meter.split("open")``), then build the probes and
    units tables (``meter.split("probes + units")``), the way a pynwb user would.

    The units table leaves out the ragged columns (spike times, amplitudes): the comparison is
    about metadata, and that is the cheapest way pynwb offers.
    """
    import pynwb

    with h5py.File(fileobj, "r") as h5, \
            pynwb.NWBHDF5IO(file=h5, mode="r", load_namespaces=True) as io:
        nwb = io.read()
        meter.split("open")
        probes = pd.DataFrame([
            {"id": int(g.probe_id), "description": name, "location": g.location,
             "lfp_sampling_rate": g.lfp_sampling_rate, "has_lfp_data": bool(g.has_lfp_data)}
            for name, g in nwb.electrode_groups.items()]).set_index("id")
        units = nwb.units.to_dataframe(
            exclude=RAGGED_UNIT_COLUMNS & set(nwb.units.colnames))
        meter.split("open + probes + units")
    return probes, units


# ---- row 3: the AllenSDK way for a probe's LFP ---------------------------------------------

def download(server: Any, key: str, folder: str | os.PathLike) -> Path:
    """Download a whole object, as AllenSDK's cache does before it opens a file."""
    fs = s3fs_defaults(server)
    local = Path(folder) / Path(key).name
    fs.get_file(f"{server.bucket}/{key}", str(local))
    return local


def allensdk_get_lfp(local_path: Path, probe_id: int) -> tuple[np.ndarray, np.ndarray]:
    """AllenSDK 2.16 ``EcephysSession.get_lfp``: the probe's whole LFP and timestamps, in memory."""
    import pynwb

    with pynwb.NWBHDF5IO(str(local_path), "r", load_namespaces=True) as io:
        nwb = io.read()
        series = nwb.acquisition[f"probe_{probe_id}_lfp"].electrical_series[
            f"probe_{probe_id}_lfp_data"]
        data = series.data[:]
        timestamps = series.timestamps[:]
    return data, timestamps


def welch_per_channel(data: np.ndarray, fs: float, nperseg: int, step: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.welch`` of each channel of an in-memory ``(time, channel)`` array.

    Channel by channel, as one would write it: ``welch(data, axis=0)`` on a whole probe would need
    ~4× the probe's size again in temporaries (segments, windowed copy, spectra).
    """
    from scipy import signal

    psd = None
    freqs = None
    for c in range(data.shape[1]):
        freqs, p = signal.welch(data[:, c], fs=fs, nperseg=nperseg, noverlap=nperseg - step,
                                detrend="constant", scaling="density")
        if psd is None:
            psd = np.empty((p.size, data.shape[1]), dtype=np.float64)
        psd[:, c] = p
    return freqs, psd


# ---- row 6: the AllenSDK way for spike counts ----------------------------------------------

def allensdk_reference():
    """``tests/kernels/_allensdk_reference.py``: AllenSDK's algorithms transcribed loop for loop."""
    name = "_npd_allensdk_reference"
    if name in sys.modules:
        return sys.modules[name]
    path = REPO / "tests" / "kernels" / "_allensdk_reference.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path} is missing: the AllenSDK reference needs a source "
                                "checkout")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def allensdk_spike_counts(local_path: Path, stimulus_name: str, unit_ids: np.ndarray,
                          bin_edges: np.ndarray) -> np.ndarray:
    """AllenSDK 2.16 ``presentationwise_spike_counts`` on a downloaded session file.

    Loads what ``EcephysSession`` loads for it (the full units table with every unit's spike
    times, the stimulus presentations) and runs ``build_time_window_domain`` +
    ``build_spike_histogram`` (one ``searchsorted`` pass per unit).
    """
    import pynwb

    ref = allensdk_reference()
    with pynwb.NWBHDF5IO(str(local_path), "r", load_namespaces=True) as io:
        nwb = io.read()
        units = nwb.units.to_dataframe()
        spike_times = dict(zip(units.index.to_numpy(), units["spike_times"], strict=True))
        pres = nwb.intervals[f"{stimulus_name}_presentations"].to_dataframe()
    pres = pres.sort_index()
    domain = ref.time_window_domain(np.asarray(bin_edges, np.float64),
                                    pres["start_time"].to_numpy(np.float64))
    return ref.spike_histogram(domain, spike_times, unit_ids)
