"""Pure numpy/scipy kernels that the Dask layer maps over chunks, sessions and probes.

No I/O, no Dask and no xarray in here: plain arrays (and, where AllenSDK returns tables, pandas
DataFrames) in and out, so each kernel is tested on its own and runs unchanged inside a task.
Every kernel here is called by the package (``session``, ``analyses``); there is one of each.

- :mod:`.segment_psd` — the Welch PSD: one pass over a probe's blocks gives the spectrum of the
  whole recording and of every stimulus, one FFT per segment, equal to ``scipy.signal.welch``
  whatever the blocking (``analyses.spectra``).
- :mod:`.spikes` — AllenSDK ``EcephysSession`` spike counting, presentation-wise spike tables,
  stimulus conditions and condition statistics (``session``).
- :mod:`.responses` — PSTH statistics (SEM, trials, baseline, z-score, smoothing, conditions),
  tuning tables and AllenSDK's ``g_osi_dg``/``g_dsi_dg``/preferred values (``analyses.spiking``).
- :mod:`.correlation`, :mod:`.correlation_blocks` — counts per trial, condition means removed
  (z-scored or per condition, Fisher z), Pearson correlations and their area means with pair
  counts (``analyses.correlations``).
"""

from .correlation import area_mean, area_stats, pairwise_correlation
from .correlation_blocks import (
    area_noise_correlation,
    count_in_bins,
    noise_correlation,
    remove_group_means,
    zscore_within,
)
from .responses import dsi, grating_metrics, osi, psth_stats, tuning_table
from .segment_psd import (
    Partial,
    Segmenting,
    block_partial,
    combine,
    combine_all,
    finalize,
    labelled_segmenting,
    merge_ranges,
    sample_ranges,
    welch,
)
from .spikes import (
    assign_condition_ids,
    build_time_window_domain,
    condition_statistics,
    conditionwise_statistics,
    presentationwise_spike_times,
    spike_histogram,
    spike_histogram_domain,
)

__all__ = [
    "Partial",
    "Segmenting",
    "area_mean",
    "area_stats",
    "area_noise_correlation",
    "assign_condition_ids",
    "block_partial",
    "build_time_window_domain",
    "combine",
    "combine_all",
    "condition_statistics",
    "conditionwise_statistics",
    "count_in_bins",
    "dsi",
    "finalize",
    "grating_metrics",
    "labelled_segmenting",
    "merge_ranges",
    "noise_correlation",
    "osi",
    "pairwise_correlation",
    "presentationwise_spike_times",
    "psth_stats",
    "remove_group_means",
    "sample_ranges",
    "spike_histogram",
    "spike_histogram_domain",
    "tuning_table",
    "welch",
    "zscore_within",
]
