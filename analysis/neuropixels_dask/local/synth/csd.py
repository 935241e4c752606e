"""The flash-evoked potential planted in the visual cortex, and its current source density.

The release's LFP files carry ``/processing/current_source_density/ecephys_csd``
(``EcephysCSD``): a ``TimeSeries`` ``current_source_density`` (time × virtual channel, the
trial-averaged response to flashes from 0.1 s before to 0.25 s after onset at 2500 Hz) and the
virtual electrodes' ``x``/``y`` positions (µm); AllenSDK's ``get_current_source_density``
returns it as a DataArray ``CSD`` (``virtual_channel_index``, ``time``). AllenSDK computes it as
the second spatial derivative of the trial-mean LFP, without smoothing.

Ground truth: after every flash the LFP of the visual-cortex channels gets
``φ(z, t) = -EVOKED_V · exp(-(z - z₄)² / 2σ²) · k(t - onset)`` with ``z₄`` = :data:`SINK_DEPTH_UM`
below the cortical surface, ``σ`` = :data:`SIGMA_UM` and ``k`` a Gaussian bump peaking at
:data:`PEAK_LATENCY_S` (width :data:`WIDTH_S`). The file holds its exact CSD ``∂²φ/∂z²`` (V/cm²,
the unit AllenSDK writes), noise-free (what the trial average converges to), zero beyond 6 σ in
depth and time and quantised to 2⁻³⁰ V/cm² (the peak is ~1 V/cm²), so that it compresses to
~100 kB and leaves the LFP file's metadata where it was. Its largest value is at depth ``z₄``
and time :data:`PEAK_LATENCY_S`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hdmf.backends.hdf5.h5_utils import H5DataIO
from pynwb import NWBFile, ProcessingModule, TimeSeries

from .extension import ecephys_types
from .layout import ProbeLayout

EVOKED_V = 100e-6
SINK_DEPTH_UM = 400.0
SIGMA_UM = 100.0
PEAK_LATENCY_S = 0.06
WIDTH_S = 0.01
QUANTUM = 2.0 ** -30  # V/cm²
#: the CSD window and grid, as in the release
PRE_S, POST_S, RATE = 0.1, 0.25, 2500.0
N_VIRTUAL = 384
VIRTUAL_SPACING_UM = 10.0
HORIZONTAL_UM = 43.0


def kernel(t: np.ndarray) -> np.ndarray:
    """The evoked time course: peak 1 at ``PEAK_LATENCY_S`` after onset, 0 beyond 6 widths
    (so 0 before the onset)."""
    x = (np.asarray(t, float) - PEAK_LATENCY_S) / WIDTH_S
    return np.where(np.abs(x) <= 6.0, np.exp(-0.5 * x * x), 0.0)


def sink_depth(probe: ProbeLayout) -> float:
    """Vertical position (µm from the tip) of the planted sink: below the cortical surface."""
    return float(probe.vertical[probe.surface_channel_index]) - SINK_DEPTH_UM


def profile(probe: ProbeLayout, vertical_um: np.ndarray) -> np.ndarray:
    """The evoked potential's spatial profile (V at the kernel's peak) at ``vertical_um``."""
    z = np.asarray(vertical_um, float) - sink_depth(probe)
    return -EVOKED_V * np.exp(-0.5 * (z / SIGMA_UM) ** 2)


def profile_second_derivative(probe: ProbeLayout, vertical_um: np.ndarray) -> np.ndarray:
    """``∂²profile/∂z²`` in V/cm²."""
    z = np.asarray(vertical_um, float) - sink_depth(probe)
    s = SIGMA_UM
    d2 = -EVOKED_V * np.exp(-0.5 * (z / s) ** 2) * (z * z / s**4 - 1.0 / s**2)  # V/µm²
    d2[np.abs(z) > 6 * s] = 0.0  # < 1e-6 of the peak: exact zeros keep the file small
    return d2 * 1e8  # 1 cm² = 1e8 µm²


def lfp_profile(probe: ProbeLayout) -> np.ndarray:
    """Profile on the probe's LFP channels (0 outside the visual cortex)."""
    idx = probe.lfp_local_indices
    prof = profile(probe, probe.vertical[idx])
    prof[~pd.Series(probe.acronyms[idx]).str.startswith("VIS").to_numpy()] = 0.0
    return prof


def planted(probe: ProbeLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(csd (time, virtual channel), times, x positions, y positions)`` of the probe."""
    times = np.arange(-PRE_S, POST_S, 1.0 / RATE)
    y = np.arange(N_VIRTUAL) * VIRTUAL_SPACING_UM
    x = np.full(N_VIRTUAL, HORIZONTAL_UM)
    csd = kernel(times)[:, None] * profile_second_derivative(probe, y)[None, :]
    return np.round(csd / QUANTUM) * QUANTUM, times, x, y


def add_to_nwb(nwb: NWBFile, probe: ProbeLayout) -> None:
    """``/processing/current_source_density/ecephys_csd`` as AllenSDK's ``Probe`` writes it."""
    csd, times, x, y = planted(probe)
    mod = ProcessingModule(name="current_source_density",
                           description="Precalculated current source density")
    nwb.add_processing_module(mod)
    ts = TimeSeries(name="current_source_density",
                    data=H5DataIO(csd, compression="gzip", shuffle=True),
                    timestamps=times, unit="V/cm^2")
    mod.add(ecephys_types()["EcephysCSD"](
        name="ecephys_csd", time_series=ts,
        virtual_electrode_x_positions=x.astype(np.float32),
        virtual_electrode_x_positions__unit="um",
        virtual_electrode_y_positions=y.astype(np.float32),
        virtual_electrode_y_positions__unit="um"))
