"""AllenSDK's ``ReceptiveFieldMapping`` class, on this package's sessions, so that Allen's
receptive-field tutorial ports by changing its imports.

AllenSDK's class reads spike counts through the session and groups them with pandas; this one
is a thin front over :func:`analyses.receptive_fields` and
:func:`analyses.receptive_field_centres`, which compute the same maps and centres as Dask graphs
(one task per group of units), computed once on first use. The attributes and methods are the
ones the tutorial and most user code touch; AllenSDK's chi-square ``p_value_rf`` and Gaussian-fit
``width_rf``/``height_rf``/``on_screen_rf`` are not computed (``metrics`` says so by leaving
them out).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .analyses.receptive_fields import (
    receptive_field_centres,
    receptive_fields,
    rf_stimulus,
)
from .errors import UnknownUnitError


class ReceptiveFieldMapping:
    """Receptive fields of a session's units from its Gabor mapping stimulus, with AllenSDK's
    names: ``stim_table``, ``unit_ids``, ``elevations``, ``azimuths``, ``number_elevations``,
    ``number_azimuths``, ``receptive_fields`` (a Dataset with ``spike_counts``),
    ``get_receptive_field(unit_id)`` (the 9 × 9 map, top row first) and ``metrics``
    (``azimuth_rf``, ``elevation_rf``, ``area_rf``)."""

    def __init__(self, ecephys_session, col_pos_x: str = "x_position",
                 col_pos_y: str = "y_position", trial_duration: float = 0.25,
                 minimum_spike_count: float = 10.0, mask_threshold: float = 0.5,
                 stimulus_key: str | None = None):
        if (col_pos_x, col_pos_y) != ("x_position", "y_position") or trial_duration != 0.25:
            raise NotImplementedError(
                "Only AllenSDK's defaults are supported (x_position/y_position, 0.25 s "
                "trials): use neuropixels_dask.analyses.receptive_fields for other choices.")
        self.ecephys_session = ecephys_session
        self._stimulus = rf_stimulus(ecephys_session, stimulus_key)
        self._minimum_spike_count = minimum_spike_count
        self._mask_threshold = mask_threshold
        self._maps: xr.DataArray | None = None
        self._metrics: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return "Receptive Field Mapping"

    @property
    def stim_table(self) -> pd.DataFrame:
        """The presentations of the mapping stimulus."""
        return self.ecephys_session.get_stimulus_table(self._stimulus)

    @property
    def unit_ids(self) -> np.ndarray:
        return self.ecephys_session.units.index.to_numpy()

    @property
    def elevations(self) -> np.ndarray:
        """The patch's ``y_position`` values, ascending (AllenSDK's; the maps' rows run the
        other way, from the top)."""
        return np.sort(self._positions("y_position"))

    @property
    def azimuths(self) -> np.ndarray:
        return np.sort(self._positions("x_position"))

    @property
    def number_elevations(self) -> int:
        return len(self.elevations)

    @property
    def number_azimuths(self) -> int:
        return len(self.azimuths)

    def _positions(self, column: str) -> np.ndarray:
        values = pd.to_numeric(self.stim_table[column], errors="coerce")
        return values.dropna().unique().astype(np.float64)

    @property
    def receptive_fields(self) -> xr.Dataset:
        """``spike_counts`` ``(y_position, x_position, unit_id)``, rows as AllenSDK orders them
        (``40 − y_position`` ascending: the top of the screen first)."""
        maps = self._computed_maps()
        flipped = maps.assign_coords(y_position=40.0 - maps["y_position"])
        return xr.Dataset({"spike_counts": flipped.transpose("y_position", "x_position",
                                                              "unit_id")})

    def get_receptive_field(self, unit_id) -> np.ndarray:
        """One unit's map (``number_elevations`` × ``number_azimuths``), top row first."""
        maps = self._computed_maps()
        if unit_id not in maps.indexes["unit_id"]:
            raise UnknownUnitError(f"Unit {unit_id!r} is not among this session's units "
                                   f"(ReceptiveFieldMapping.unit_ids, {maps.sizes['unit_id']} "
                                   "units).")
        return maps.sel(unit_id=unit_id).to_numpy()

    @property
    def metrics(self) -> pd.DataFrame:
        """``azimuth_rf``, ``elevation_rf`` (degrees) and ``area_rf`` (degrees²) per unit,
        indexed by ``unit_id``, exactly as AllenSDK computes them (integer smoothing: see
        :func:`kernels.responses.rf_centre`)."""
        if self._metrics is None:
            centres = receptive_field_centres(
                self.ecephys_session, stimulus_name=self._stimulus,
                mask_threshold=self._mask_threshold,
                minimum_spike_count=self._minimum_spike_count,
                integer_smoothing=True).compute()
            table = centres.drop_vars("structure_acronym").to_pandas()
            self._metrics = table[["azimuth_rf", "elevation_rf", "area_rf"]].rename_axis(
                columns=None)
        return self._metrics

    def _computed_maps(self) -> xr.DataArray:
        if self._maps is None:
            self._maps = receptive_fields(self.ecephys_session,
                                          stimulus_name=self._stimulus).compute()
        return self._maps
