"""AllenSDK's names and conventions, in one place: what the API mirrors of ``allensdk 2.16``.

The cache's CSV tables and the NWB files use one set of column names; AllenSDK's
``EcephysProjectCache`` and ``EcephysSession`` return another. Users come with code written
against AllenSDK, so the tables this package returns use AllenSDK's names, values and defaults,
taken from here by the catalog, the session and the kernels alike.
"""

from __future__ import annotations

#: AllenSDK's text for a stimulus parameter a presentation does not have
NULL = "null"

#: AllenSDK's default unit filters (``get_unit_filter_value``); ``None`` disables one
DEFAULT_UNIT_FILTERS = {
    "amplitude_cutoff_maximum": 0.1,
    "presence_ratio_minimum": 0.95,
    "isi_violations_maximum": 0.5,
}

#: unit metric columns of units.csv / the NWB units table → AllenSDK's names (both APIs)
UNIT_METRIC_RENAMES = {
    "PT_ratio": "waveform_PT_ratio", "amplitude": "waveform_amplitude",
    "duration": "waveform_duration", "halfwidth": "waveform_halfwidth",
    "recovery_slope": "waveform_recovery_slope",
    "repolarization_slope": "waveform_repolarization_slope", "spread": "waveform_spread",
    "velocity_above": "waveform_velocity_above", "velocity_below": "waveform_velocity_below",
    "l_ratio": "L_ratio",
}

#: ``cache.get_units()``: units.csv merged with channels, probes and sessions
CACHE_UNIT_RENAMES = dict(UNIT_METRIC_RENAMES)

#: ``session.units``: the NWB units table merged with electrodes and probes
SESSION_UNIT_RENAMES = {
    **UNIT_METRIC_RENAMES,
    "description": "probe_description", "local_index_channel": "channel_local_index",
    "sampling_rate": "probe_sampling_rate", "lfp_sampling_rate": "probe_lfp_sampling_rate",
    "has_lfp_data": "probe_has_lfp_data",
}

#: stimulus parameters AllenSDK hides unless ``include_detailed_parameters=True``
DETAILED_STIMULUS_PARAMETERS = ("colorSpaceString", "depth", "flipHoriz", "flipVert",
                                "interpolate", "mask", "opacity", "pos", "rgbPedestal", "tex",
                                "texRes", "units")
