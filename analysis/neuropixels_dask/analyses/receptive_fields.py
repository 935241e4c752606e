"""Spatial receptive fields from the Gabor-patch mapping stimulus, as AllenSDK's
``ReceptiveFieldMapping`` computes them (the release's ``azimuth_rf``, ``elevation_rf``,
``area_rf``).

The map of a unit is its spike count 0–249 ms after each Gabor onset, summed per patch position:
rows are ``y_position`` from the top of the screen down (AllenSDK flips elevation so that
``imshow`` draws the map the right way up), columns ``x_position`` left to right. The centre is
:func:`kernels.responses.rf_centre` of that map. Both are lazy, one task per group of units.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ..allen import NULL
from ..errors import InvalidSelectionError
from ..kernels import responses as R
from . import checks
from .spiking import _skipped, _trial_validity

#: the names AllenSDK looks for (``ReceptiveFieldMapping.known_stimulus_keys``), by prefix
RF_STIMULI = ("receptive_field_mapping", "gabor", "gabors")
RF_METRICS = ("azimuth_rf", "elevation_rf", "area_rf", "n_spikes")
#: AllenSDK's response window after each onset (``bin_edges = np.linspace(0, 0.249, 3)``)
RF_WINDOW_S = (0.0, 0.249)


def rf_stimulus(session, stimulus_name: str | None = None) -> str:
    """The session's receptive-field mapping stimulus: ``stimulus_name`` checked, or the first
    shown whose name starts with one of AllenSDK's keys (``gabors`` in the release)."""
    shown = list(session.stimulus_names)
    if stimulus_name is None:
        found = [n for n in shown if n.lower().startswith(RF_STIMULI)]
        if not found:
            raise InvalidSelectionError(
                f"Session {session.ecephys_session_id} shows no receptive-field mapping "
                f"stimulus (one of {list(RF_STIMULI)}); shown: {shown}.")
        return found[0]
    return checks.stimulus_names(session, [stimulus_name])[0]


def _positions(pres: pd.DataFrame, name: str, stimulus_name: str) -> np.ndarray:
    values = pd.to_numeric(pres[name], errors="coerce")
    if values.isna().any():
        raise InvalidSelectionError(f"{name} of {stimulus_name!r} is not numeric "
                                    f"({pres[name].iloc[0]!r}): not a position grid.")
    return values.to_numpy(np.float64)


def receptive_fields(session, unit_ids=None, *, stimulus_name: str | None = None,
                     exclude_invalid: bool = True) -> xr.DataArray:
    """Spike-count maps ``(unit_id, y_position, x_position)``: spikes 0–249 ms after the onset
    of each Gabor patch, summed over the presentations at each position (AllenSDK's
    ``ReceptiveFieldMapping.receptive_fields``). ``y_position`` runs from the top of the screen
    down, so ``rf.sel(unit_id=u).plot.imshow()`` or ``plt.imshow(rf.sel(unit_id=u))`` show the
    field as the mouse saw it; positions are the stimulus's degrees from the screen centre, and
    ``azimuth``/``elevation`` give the release's degrees. Coordinates ``n_presentations`` (per
    position) and attrs ``window_s``, invalid trials left out. Lazy."""
    stimulus_name = rf_stimulus(session, stimulus_name)
    pres = session.get_stimulus_table(stimulus_name)
    for name in ("x_position", "y_position"):
        checks.parameter(pres, name, stimulus_name)
    # presentations without a patch position (AllenSDK's "null") are not part of the map
    pres = pres[((pres["x_position"].astype(str) != NULL)
                 & (pres["y_position"].astype(str) != NULL)).to_numpy()]
    xs_all = _positions(pres, "x_position", stimulus_name)
    ys_all = _positions(pres, "y_position", stimulus_name)
    xs, xi = np.unique(xs_all, return_inverse=True)
    ys, yi = np.unique(-ys_all, return_inverse=True)  # top of the screen first
    ys = -ys
    units = checks.units(session, unit_ids)
    counts = session.presentationwise_spike_counts(np.array(RF_WINDOW_S), pres.index,
                                                   units.index)
    valid = _trial_validity(session, units, pres, *RF_WINDOW_S, exclude_invalid)
    n_pres = np.zeros((ys.size, xs.size), np.int64)
    np.add.at(n_pres, (yi, xi), 1)

    def kernel(c: np.ndarray, v: np.ndarray) -> np.ndarray:
        c = np.where(v[:, 0, :], c[:, 0, :], 0).astype(np.float64)
        out = np.zeros((c.shape[1], ys.size, xs.size))
        np.add.at(out, (slice(None), yi, xi), c.T)
        return out

    data = counts.data.rechunk({0: -1})
    valid_d = da.from_array(valid[:, None, :], chunks=((valid.shape[0],), (1,), data.chunks[2]))
    maps = da.map_blocks(kernel, data, valid_d, drop_axis=[0, 1], new_axis=[1, 2],
                         chunks=(data.chunks[2], (ys.size,), (xs.size,)), dtype=np.float64)
    azimuth = R.grid_degrees(xs, xs, R.RF_AZIMUTH_OFFSET)
    elevation = R.grid_degrees(ys, ys, R.RF_ELEVATION_OFFSET)
    return xr.DataArray(
        maps, dims=("unit_id", "y_position", "x_position"), name="receptive_field",
        coords={"unit_id": units.index.to_numpy(), "y_position": ys, "x_position": xs,
                "elevation": ("y_position", elevation), "azimuth": ("x_position", azimuth),
                "n_presentations": (("y_position", "x_position"), n_pres),
                "structure_acronym": ("unit_id", units["structure_acronym"].fillna("")
                                      .to_numpy(object))},
        attrs={"units": "spikes", "stimulus_name": stimulus_name,
               "window_s": list(RF_WINDOW_S), "session_id": session.ecephys_session_id,
               "positions": "stimulus degrees from the screen centre; azimuth/elevation: the "
                            "release's degrees (AllenSDK's conversion)",
               **_skipped(valid)})


def receptive_field_centres(session, unit_ids=None, *, stimulus_name: str | None = None,
                            mask_threshold: float = 0.5, minimum_spike_count: int = 10,
                            integer_smoothing: bool = False,
                            exclude_invalid: bool = True) -> xr.DataArray:
    """Receptive-field centres, the release's ``azimuth_rf`` / ``elevation_rf`` (degrees) and
    ``area_rf`` (degrees²), with ``n_spikes`` in the map: :func:`kernels.responses.rf_centre` of
    each :func:`receptive_fields` map (AllenSDK ``ReceptiveFieldMapping``: smooth, threshold at
    max − ``mask_threshold``·SD, centre of mass of the region holding the peak). Units with
    fewer than ``minimum_spike_count`` spikes in all presentations are NaN, as upstream.
    ``integer_smoothing=True`` smooths the counts in integers, truncating, as AllenSDK does: it
    reproduces AllenSDK's and the release's numbers exactly, but sparse maps (few repeats, low
    rates) then lose their field (NaN). Lazy: ``(unit_id, metric)``."""
    maps = receptive_fields(session, unit_ids, stimulus_name=stimulus_name,
                            exclude_invalid=exclude_invalid)

    def kernel(block: np.ndarray) -> np.ndarray:
        out = np.full((block.shape[0], len(RF_METRICS)), np.nan)
        for u, rf in enumerate(block):
            out[u, 3] = rf.sum()
            if rf.sum() >= minimum_spike_count:
                out[u, :3] = R.rf_centre(rf, mask_threshold, integer_smoothing)
        return out

    arr = maps.data.map_blocks(kernel, drop_axis=[1, 2], new_axis=[1],
                               chunks=(maps.data.chunks[0], (len(RF_METRICS),)),
                               dtype=np.float64)
    return xr.DataArray(arr, dims=("unit_id", "metric"), name="receptive_field_centre",
                        coords={"unit_id": maps["unit_id"].to_numpy(),
                                "metric": list(RF_METRICS),
                                "structure_acronym": maps["structure_acronym"].variable},
                        attrs={**maps.attrs, "units": "azimuth_rf, elevation_rf: degrees, "
                               "area_rf: degrees², n_spikes: spikes",
                               "mask_threshold": mask_threshold,
                               "integer_smoothing": int(integer_smoothing),
                               "minimum_spike_count": minimum_spike_count})
