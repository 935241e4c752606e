"""Reads of a session's secondary data from the published NWB files, with h5py.

What AllenSDK 2.16's ``EcephysNwbSessionApi`` reads besides units, stimuli and LFP, at the paths
its writer uses: ``/units/waveform_mean`` and ``/units/spike_amplitudes`` (ragged like
``spike_times``), ``/processing/optotagging/optogenetic_stimulation``,
``/processing/eye_tracking/*_ellipse_fits``, ``/processing/{raw,filtered}_gaze_mapping/*``,
``/processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata`` and, in each probe's LFP file,
``/processing/current_source_density/ecephys_csd``. Only the datasets a call needs are read; the
large ones (waveforms, amplitudes, CSD) are read inside Dask tasks by the functions at the end.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd

from ..errors import InvalidFileError
from .base import SpikeSource
from .nwb import _raw_offset, _require, open_h5, read_table

WAVEFORMS = "units/waveform_mean"
AMPLITUDES = "units/spike_amplitudes"
OPTOTAGGING = "processing/optotagging/optogenetic_stimulation"
RIG = "processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata"
CSD = "processing/current_source_density/ecephys_csd"


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def amplitude_source(url: str, storage_options) -> tuple[SpikeSource, np.ndarray]:
    """Where ``spike_amplitudes`` lives (read like spike times: exact ranged reads when raw)
    and its ragged index (end offset per unit, file order)."""
    with open_h5(url, storage_options) as f:
        ds = _require(f, AMPLITUDES, url)
        index = _require(f, f"{AMPLITUDES}_index", url)[()].astype(np.int64)
        return (SpikeSource("nwb", url, storage_options, AMPLITUDES,
                            byte_offset=_raw_offset(ds), dtype=ds.dtype.str), index)


def waveform_layout(url: str, storage_options) -> tuple[tuple[int, ...], str, np.ndarray | None]:
    """Shape and dtype of ``waveform_mean`` and its ragged index if it has one: either
    ``(units, channels, samples)`` or ragged rows ``(units × channels, samples)``."""
    with open_h5(url, storage_options) as f:
        ds = _require(f, WAVEFORMS, url)
        index = f.get(f"{WAVEFORMS}_index")
        return (tuple(int(s) for s in ds.shape), ds.dtype.str,
                None if index is None else index[()].astype(np.int64))


def read_waveform(url: str, storage_options, row: int, start: int | None,
                  stop: int | None) -> np.ndarray:
    """One unit's mean waveform (channels, samples): row ``row`` of a 3-D dataset, or rows
    ``[start, stop)`` of a ragged one (runs inside a Dask task)."""
    with open_h5(url, storage_options) as f:
        ds = f[WAVEFORMS]
        return ds[row] if start is None else ds[start:stop]


def optotagging(url: str, storage_options) -> pd.DataFrame:
    """The ``optogenetic_stimulation`` table, file columns without ``tags``/``timeseries``."""
    with open_h5(url, storage_options) as f:
        g = f.get(OPTOTAGGING)
        if g is None:
            raise InvalidFileError(
                f"{url} has no /{OPTOTAGGING}: this session file carries no optotagging "
                "stimulation (AllenSDK raises here as well).")
        return read_table(g)


def has_eye_tracking(url: str, storage_options, modules: tuple[str, ...]) -> bool:
    with open_h5(url, storage_options) as f:
        return all(f"processing/{m}" in f for m in modules)


def ellipse_fits(url: str, storage_options) -> dict[str, pd.DataFrame]:
    """``{"pupil"|"cr"|"eye": table}`` of ``/processing/eye_tracking/*_ellipse_fits``."""
    with open_h5(url, storage_options) as f:
        return {k: read_table(_require(f, f"processing/eye_tracking/{k}_ellipse_fits", url))
                for k in ("pupil", "cr", "eye")}


def gaze_series(url: str, storage_options, module: str) -> dict[str, np.ndarray]:
    """``data`` of each TimeSeries of a gaze-mapping module, plus ``timestamps`` of
    ``eye_area``."""
    with open_h5(url, storage_options) as f:
        g = _require(f, f"processing/{module}", url)
        out = {name: g[name]["data"][()] for name in ("eye_area", "pupil_area",
                                                     "screen_coordinates",
                                                     "screen_coordinates_spherical")
               if isinstance(g.get(name), h5py.Group)}
        out["timestamps"] = _require(f, f"processing/{module}/eye_area/timestamps", url)[()]
        return out


def rig_metadata(url: str, storage_options) -> dict | None:
    """``{"equipment": str, "<dataset>": (values, unit)}`` or ``None`` without a rig module."""
    with open_h5(url, storage_options) as f:
        g = f.get(RIG)
        if g is None:
            return None
        out: dict = {"equipment": _str(g.attrs.get("equipment", ""))}
        for name, ds in g.items():
            if isinstance(ds, h5py.Dataset):
                out[name] = (ds[()], _str(ds.attrs.get("unit", "")))
        return out


def csd_layout(url: str, storage_options) -> dict:
    """CSD shape, dtype, timestamps and virtual electrode positions of an LFP file."""
    with open_h5(url, storage_options) as f:
        g = f.get(CSD)
        if g is None:
            raise InvalidFileError(f"{url} has no /{CSD}: this LFP file carries no current "
                                   "source density.")
        ts = _require(f, f"{CSD}/current_source_density", url)
        data = ts["data"]
        return {"shape": tuple(int(s) for s in data.shape), "dtype": data.dtype.str,
                "time": ts["timestamps"][()],
                "x": g["virtual_electrode_x_positions"][()],
                "y": g["virtual_electrode_y_positions"][()]}


def read_csd(url: str, storage_options) -> np.ndarray:
    """The CSD as (virtual channel, time): the file stores (time, channel)."""
    with open_h5(url, storage_options) as f:
        return np.ascontiguousarray(f[f"{CSD}/current_source_density/data"][()].T)
