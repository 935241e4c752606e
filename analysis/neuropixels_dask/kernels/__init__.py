"""Pure numpy/scipy kernels that the Dask layer maps over chunks, sessions and probes.

No I/O, no Dask and no xarray in here: plain arrays (and, where AllenSDK returns tables, pandas
DataFrames) in and out, so each kernel is tested on its own and runs unchanged inside a task.

- :mod:`.spikes` — AllenSDK ``EcephysSession`` spike counting, presentation-wise spike tables,
  stimulus conditions and condition statistics; continuous binning; PSTH.
- :mod:`.spectra` — block-wise Welch PSD (partials that add up to ``scipy.signal.welch``), segment
  plans, interval-restricted spectra, band power, band-limited power envelopes.
- :mod:`.correlation` — Pearson correlations, area averages, block-wise accumulation.
"""

from .correlation import (
    CorrelationPartial,
    area_correlation,
    area_mean,
    combine_correlation,
    correlation_partial,
    finalize_correlation,
    pairwise_correlation,
)
from .spectra import (
    WelchPartial,
    band_limited_power,
    band_power,
    empty_partial,
    intervals_mask,
    merge_intervals,
    segment_plan,
    segment_starts,
    segments_in_intervals,
    welch,
    welch_partial,
)
from .spectra import combine as combine_welch
from .spectra import finalize as finalize_welch
from .spikes import (
    assign_condition_ids,
    bin_spike_trains,
    build_time_window_domain,
    condition_statistics,
    conditionwise_statistics,
    count_spikes_in_presentations,
    presentationwise_spike_times,
    psth,
    spike_histogram,
    spike_histogram_domain,
)

__all__ = [
    "CorrelationPartial",
    "WelchPartial",
    "area_correlation",
    "area_mean",
    "assign_condition_ids",
    "band_limited_power",
    "band_power",
    "bin_spike_trains",
    "build_time_window_domain",
    "combine_correlation",
    "combine_welch",
    "condition_statistics",
    "conditionwise_statistics",
    "correlation_partial",
    "count_spikes_in_presentations",
    "empty_partial",
    "finalize_correlation",
    "finalize_welch",
    "intervals_mask",
    "merge_intervals",
    "pairwise_correlation",
    "presentationwise_spike_times",
    "psth",
    "segment_plan",
    "segment_starts",
    "segments_in_intervals",
    "spike_histogram",
    "spike_histogram_domain",
    "welch",
    "welch_partial",
]
