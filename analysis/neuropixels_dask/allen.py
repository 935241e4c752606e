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
#: (``EcephysSession.DETAILED_STIMULUS_PARAMETERS``)
DETAILED_STIMULUS_PARAMETERS = ("colorSpace", "flipHoriz", "flipVert", "depth", "interpolate",
                                "mask", "opacity", "rgbPedestal", "tex", "texRes", "units", "rgb",
                                "signalDots", "noiseDots", "fieldSize", "fieldShape", "fieldPos",
                                "nDots", "dotSize", "dotLife", "color_triplet")

#: columns ``EcephysProjectCache`` hides unless ``suppress`` is given (its ``SUPPRESS_FROM_*``)
SUPPRESS_FROM_UNITS = ("air_channel_index", "surface_channel_index", "has_nwb",
                       "lfp_temporal_subsampling_factor", "epoch_name_quality_metrics",
                       "epoch_name_waveform_metrics", "isi_experiment_id")
SUPPRESS_FROM_CHANNELS = ("air_channel_index", "surface_channel_index", "name",
                          "date_of_acquisition", "published_at", "specimen_id", "session_type",
                          "isi_experiment_id", "age_in_days", "sex", "genotype", "has_nwb",
                          "lfp_temporal_subsampling_factor")
SUPPRESS_FROM_PROBES = ("air_channel_index", "surface_channel_index", "date_of_acquisition",
                        "published_at", "specimen_id", "session_type", "isi_experiment_id",
                        "age_in_days", "sex", "genotype", "has_nwb",
                        "lfp_temporal_subsampling_factor")
SUPPRESS_FROM_SESSION_TABLE = ("has_nwb", "isi_experiment_id", "date_of_acquisition")

#: the session table's ``genotype`` is ``full_genotype`` in AllenSDK's session table
SESSION_TABLE_RENAMES = {"genotype": "full_genotype"}
#: ``get_channels()`` names the probe's ``name`` (when not suppressed) ``probe_name``
CHANNEL_TABLE_RENAMES = {"name": "probe_name"}

#: the units ``session.units`` never shows (AllenSDK drops these analysis metrics)
SESSION_UNIT_HIDDEN = ("width_rf", "height_rf", "on_screen_rf", "time_to_peak_fl",
                       "time_to_peak_rf", "time_to_peak_sg", "sustained_idx_fl",
                       "time_to_peak_dg")

#: ``session.channels``: the electrodes table's names → AllenSDK's ``Channel`` names
SESSION_CHANNEL_RENAMES = {"local_index": "probe_channel_number",
                           "x": "anterior_posterior_ccf_coordinate",
                           "y": "dorsal_ventral_ccf_coordinate",
                           "z": "left_right_ccf_coordinate"}
#: ``session.channels`` columns in AllenSDK's order (``Channel`` properties, then the cache's
#: structure and CCF columns, which replace the file's)
SESSION_CHANNEL_COLUMNS = ("filtering", "probe_channel_number", "probe_horizontal_position",
                           "probe_id", "probe_vertical_position", "structure_acronym",
                           "ecephys_structure_id", "ecephys_structure_acronym",
                           "anterior_posterior_ccf_coordinate", "dorsal_ventral_ccf_coordinate",
                           "left_right_ccf_coordinate")
#: the cache's channel columns a session takes over (AllenSDK's ``external_channel_columns``)
EXTERNAL_CHANNEL_COLUMNS = ("ecephys_structure_id", "ecephys_structure_acronym",
                            "anterior_posterior_ccf_coordinate", "dorsal_ventral_ccf_coordinate",
                            "left_right_ccf_coordinate")

#: ``get_stimulus_epochs``' default: spontaneous epochs shorter than 90 s are left out
DEFAULT_EPOCH_DURATION_THRESHOLDS = {"spontaneous_activity": 90.0}
#: stimulus-table columns that are not stimulus parameters
NON_STIMULUS_PARAMETERS = ("start_time", "stop_time", "duration", "stimulus_block",
                           "stimulus_condition_id")
#: what a presentation overlapping an invalid ``stimulus`` interval is called
INVALID_PRESENTATION = "invalid_presentation"
#: the stimulus table's first columns (AllenSDK's ``enforce_df_column_order``)
STIMULUS_LEADING_COLUMNS = ("stimulus_block", "start_time", "stop_time")
