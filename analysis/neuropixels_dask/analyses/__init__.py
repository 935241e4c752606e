"""Analyses people ran on this dataset, as one-liners over lazy Dask graphs.

Kernels (``neuropixels_dask.kernels``) are plain numpy; these modules map them over blocks,
units, probes and sessions.
"""

from ..tasks.sessions import SessionResults, map_sessions
from .correlations import spike_count_correlations
from .receptive_fields import receptive_field_centres, receptive_fields
from .spectra import (
    by_structure,
    lfp_spectra,
    peak_frequency,
    relative_to,
    session_structure_spectra,
)
from .spiking import (
    grating_metrics,
    preferred,
    psth,
    psth_by_structure,
    tuning_contrast,
    tuning_curves,
)

__all__ = ["SessionResults", "by_structure", "grating_metrics", "lfp_spectra", "map_sessions",
           "peak_frequency", "preferred", "psth", "psth_by_structure", "receptive_field_centres",
           "receptive_fields", "relative_to",
           "session_structure_spectra", "spike_count_correlations", "tuning_contrast",
           "tuning_curves"]
