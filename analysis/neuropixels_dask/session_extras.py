"""A session's secondary data in AllenSDK 2.16's shapes: waveforms, amplitudes, optotagging, eye
tracking, rig geometry and current source density.

``EcephysSession`` exposes these with AllenSDK's names (thin methods at the end of its class);
the values, index, columns and dtypes are AllenSDK's (``tests/test_allensdk_data_extras.py``
compares them with AllenSDK itself on the same files). What differs is when data move:

* ``mean_waveforms``: a mapping ``unit_id → DataArray (channel_id, time)`` like AllenSDK's dict,
  but each DataArray is Dask-backed: nothing is read until it is computed (AllenSDK reads every
  unit's 384 × 82 waveform on first access, ~1 GB for a real session).
* ``spike_amplitudes``: a lazy mapping like ``spike_times``: a unit's amplitudes are one ranged
  read when it is accessed.
* ``get_current_source_density``: Dask-backed.

They read the published NWB files; a Zarr copy does not carry them, and says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from . import storage
from .errors import InvalidFileError, NoLFPError, UnknownUnitError
from .readers import nwb_extras as X

if TYPE_CHECKING:
    from .session import EcephysSession

RIG_FIELDS = ("monitor_position", "camera_position", "led_position", "monitor_rotation",
              "camera_rotation")


def session_file(session: EcephysSession) -> tuple[str, object]:
    """URL and storage options of the session's NWB file; a clear error for other formats."""
    url = getattr(session.reader, "file_url", None)
    if url is None or not str(url).endswith(".nwb"):
        raise InvalidFileError(
            f"Session {session.ecephys_session_id} is read from a {type(session.reader).__name__}"
            " copy, which holds units, spikes, stimuli and LFP only. Waveforms, amplitudes, "
            "optotagging, eye tracking and CSD are in the published NWB files: open the "
            "published cache (its URL) for them.")
    return url, session.reader.storage_options


def _unit_order(session: EcephysSession, raw: pd.DataFrame) -> pd.Index:
    """Units grouped by probe (probes in name order) and in file order within a probe: the
    order AllenSDK's ``Probes`` builds its per-unit dictionaries in."""
    channels = session.reader.channels()
    probe = channels["probe_id"].reindex(raw["peak_channel_id"].to_numpy()).to_numpy()
    names = session.probes["description"].reindex(probe).to_numpy()
    order = np.lexsort((np.arange(len(raw)), names.astype(str)))
    return raw.index[order]


class MeanWaveforms(Mapping):
    """``unit_id → xr.DataArray (channel_id, time)`` of the session's units; each value is
    Dask-backed and reads only that unit's waveform when computed."""

    def __init__(self, session: EcephysSession):
        import dask
        import dask.array as da

        self._da, self._delayed = da, dask.delayed(X.read_waveform, pure=True)
        self._url, self._so = session_file(session)
        self._shape, self._dtype, self._index = X.waveform_layout(self._url, self._so)
        raw = session.reader.units()
        self._rows = {int(u): k for k, u in enumerate(raw.index)}
        units = session.units
        self._keys = [u for u in _unit_order(session, raw) if u in units.index]
        ch = session.reader.channels()
        if session._filter_by_validity and "valid_data" in ch:
            ch = ch[ch["valid_data"].astype(bool)]
        self._channels = {int(pid): dict(zip(g["local_index"].astype(int), g.index.astype(int),
                                             strict=True))
                          for pid, g in ch.groupby("probe_id")}
        self._probe = units["probe_id"].astype(int).to_dict()
        self._rate = session.probes["sampling_rate"].astype(float).to_dict()

    def __getitem__(self, unit_id) -> xr.DataArray:
        try:
            uid = int(unit_id)
            probe_id = self._probe[uid]
        except (KeyError, TypeError, ValueError):
            raise UnknownUnitError(
                f"Unit {unit_id!r} is not among this session's units (after quality filters); "
                "see session.units.index.") from None
        row = self._rows[uid]
        if self._index is None:
            n_ch, n_t = self._shape[1:]
            task = self._delayed(self._url, self._so, row, None, None)
        else:
            start = int(self._index[row - 1]) if row else 0
            stop = int(self._index[row])
            n_ch, n_t = stop - start, self._shape[1]
            task = self._delayed(self._url, self._so, row, start, stop)
        data = self._da.from_delayed(task, shape=(n_ch, n_t), dtype=np.dtype(self._dtype))
        lut = self._channels.get(probe_id, {})
        keep = np.array([i for i in range(n_ch) if i in lut], dtype=np.int64)
        return xr.DataArray(data[keep], dims=["channel_id", "time"],
                            coords={"channel_id": np.array([lut[i] for i in keep],
                                                           dtype=np.int64),
                                    "time": np.arange(n_t) / self._rate[probe_id]}
                            ).rename(None)  # unnamed, as AllenSDK's (not the dask key)

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def spike_amplitudes(session: EcephysSession):
    """``unit_id → amplitudes (V)`` of every unit in the file (noise included, as AllenSDK),
    lazily: one ranged read per unit on access."""
    from .session import SpikeTimes

    url, so = session_file(session)
    src, ends = X.amplitude_source(url, so)
    raw = session.reader.units()
    starts = np.concatenate([[0], ends[:-1]])
    pos = {int(u): k for k, u in enumerate(raw.index)}
    ranges = {int(u): (int(starts[pos[int(u)]]), int(ends[pos[int(u)]]))
              for u in _unit_order(session, raw)}
    return SpikeTimes(src, ranges)


def optogenetic_stimulation_epochs(session: EcephysSession) -> pd.DataFrame:
    url, so = session_file(session)
    table = X.optotagging(url, so).rename(columns={"name": "stimulus_name"})
    table.index = table.index.rename("id")
    return table


def _no_eye_tracking(session: EcephysSession, modules: tuple[str, ...]) -> None:
    warnings.warn(f"Session {session.ecephys_session_id} has no eye tracking data (no "
                  f"/processing/{' or '.join(modules)} in its NWB file); returning None as "
                  "AllenSDK does.", stacklevel=3)


def pupil_data(session: EcephysSession) -> pd.DataFrame | None:
    """Ellipse fits of corneal reflection, pupil and eye, full heights and widths (the file
    stores half axes), indexed by frame time."""
    url, so = session_file(session)
    if not X.has_eye_tracking(url, so, ("eye_tracking", "raw_gaze_mapping")):
        _no_eye_tracking(session, ("eye_tracking", "raw_gaze_mapping"))
        return None
    fits = X.ellipse_fits(url, so)
    out = {}
    for key, prefix in (("cr", "corneal_reflection"), ("pupil", "pupil"), ("eye", "eye")):
        t = fits[key]
        out.update({f"{prefix}_center_x": t["center_x"].to_numpy(),
                    f"{prefix}_center_y": t["center_y"].to_numpy(),
                    f"{prefix}_height": 2 * t["height"].to_numpy(),
                    f"{prefix}_width": 2 * t["width"].to_numpy(),
                    f"{prefix}_phi": t["phi"].to_numpy()})
    times = X.gaze_series(url, so, "raw_gaze_mapping")["timestamps"]
    return pd.DataFrame(out, index=pd.Index(times, name="Time (s)"))


def screen_gaze_data(session: EcephysSession, include_filtered_data: bool) -> pd.DataFrame | None:
    """Eye and pupil areas and gaze position on the screen (cm and degrees), raw and, with
    ``include_filtered_data``, filtered (NaN during likely blinks)."""
    url, so = session_file(session)
    modules = ("raw_gaze_mapping", "filtered_gaze_mapping")
    if not X.has_eye_tracking(url, so, modules):
        _no_eye_tracking(session, modules)
        return None
    out = {}
    for kind in ("raw", "filtered") if include_filtered_data else ("raw",):
        g = X.gaze_series(url, so, f"{kind}_gaze_mapping")
        out.update({f"{kind}_eye_area": g["eye_area"], f"{kind}_pupil_area": g["pupil_area"],
                    f"{kind}_screen_coordinates_x_cm": g["screen_coordinates"][:, 1],
                    f"{kind}_screen_coordinates_y_cm": g["screen_coordinates"][:, 0],
                    f"{kind}_screen_coordinates_spherical_x_deg":
                        g["screen_coordinates_spherical"][:, 1],
                    f"{kind}_screen_coordinates_spherical_y_deg":
                        g["screen_coordinates_spherical"][:, 0]})
        if kind == "raw":
            times = g["timestamps"]
    return pd.DataFrame(out, index=pd.Index(times, name="Time (s)"))


def rig_metadata(session: EcephysSession) -> dict | None:
    """``{"geometry": DataFrame (x, y, z) × <field>_<unit>, "equipment": str}`` or ``None``."""
    url, so = session_file(session)
    meta = X.rig_metadata(url, so)
    if meta is None:
        return None
    geometry = pd.DataFrame({f"{name}_{meta[name][1]}": meta[name][0] for name in RIG_FIELDS
                             if name in meta})
    geometry = geometry.rename(index={0: "x", 1: "y", 2: "z"})
    return {"geometry": geometry, "equipment": meta["equipment"]}


def current_source_density(session: EcephysSession, probe_id: int) -> xr.DataArray:
    """The probe's CSD ``CSD`` (virtual_channel_index, time), Dask-backed, from its LFP file."""
    import dask
    import dask.array as da

    row = session._probe_row(probe_id)
    pid = int(session._probe_id(probe_id))
    url = storage.join(session.reader.url, f"probe_{pid}_lfp.nwb")
    session_file(session)  # NWB only
    if not storage.exists(url, session.reader.storage_options):
        raise NoLFPError(f"Probe {pid} ({row['description']}) of session "
                         f"{session.ecephys_session_id} has no LFP file ({url}), and the CSD "
                         "is stored there; pick a probe with has_lfp_data == True.")
    so = session.reader.storage_options
    layout = X.csd_layout(url, so)
    n_t, n_ch = layout["shape"]
    data = da.from_delayed(dask.delayed(X.read_csd, pure=True)(url, so), shape=(n_ch, n_t),
                           dtype=np.dtype(layout["dtype"]))
    return xr.DataArray(
        data, name="CSD", dims=["virtual_channel_index", "time"],
        coords={"virtual_channel_index": np.arange(n_ch), "time": layout["time"],
                "vertical_position": (("virtual_channel_index",), layout["y"]),
                "horizontal_position": (("virtual_channel_index",), layout["x"])})
