"""Figures a scientist would put on a slide: labelled axes, units, areas. matplotlib only."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.ticker import MaxNLocator

#: one colour family per brain system (blues: visual cortex, greens: hippocampus, reds:
#: thalamus), one shade per structure, so a legend reads by anatomy
FAMILY_MAPS = {"VIS": "Blues", "CA": "Greens", "DG": "Greens", "LG": "Reds", "LP": "Reds"}
_SHADES = {"VISp": 0.95, "VISl": 0.85, "VISal": 0.75, "VISrl": 0.65, "VISam": 0.55,
           "VISpm": 0.45, "CA1": 0.85, "DG": 0.55, "LGd": 0.85, "LP": 0.55}


def _color(structure: str):
    for prefix, cmap in FAMILY_MAPS.items():
        if structure.startswith(prefix):
            return plt.get_cmap(cmap)(_SHADES.get(structure, 0.7))
    return "tab:gray"


def plot_spectra(spectra: xr.DataArray, stimulus: str = "all", fmax: float = 100.0, ax=None):
    """PSD per structure (log power) for one stimulus; mean over sessions if present."""
    s = spectra.sel(stimulus=stimulus)
    if "session_id" in s.dims:
        s = s.mean("session_id")
    s = s.sel(frequency=slice(1.0, fmax))
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    styles = ["-", "--", ":", "-."]
    for k, st in enumerate(s.structure.values):
        ax.semilogy(s.frequency, s.sel(structure=st), label=st, color=_color(str(st)),
                    ls=styles[k % len(styles)])
    ax.set_xlabel("Frequency (Hz)")
    ax.set_ylabel("LFP power (V²/Hz)")
    ax.set_title(f"LFP power spectrum by area — {stimulus.replace('_', ' ')}")
    ax.legend(ncol=2, fontsize=8, frameon=False)
    return ax.figure


def plot_spectral_change(change: xr.DataArray, stimulus: str, fmax: float = 100.0, ax=None):
    """Power change relative to spontaneous activity (dB) per structure."""
    c = change.sel(stimulus=stimulus)
    if "session_id" in c.dims:
        c = c.mean("session_id")
    c = c.sel(frequency=slice(1.0, fmax))
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    for st in c.structure.values:
        ax.plot(c.frequency, c.sel(structure=st), label=st, color=_color(str(st)))
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("Frequency (Hz)")
    ax.set_ylabel("Power change vs spontaneous (dB)")
    ax.set_title(f"{stimulus.replace('_', ' ')} vs spontaneous")
    ax.legend(ncol=2, fontsize=8, frameon=False)
    return ax.figure


def plot_psth(rates: xr.DataArray, ax=None, title: str = "Flash response"):
    """Mean firing rate per structure around stimulus onset."""
    r = rates.mean("session_id") if "session_id" in rates.dims else rates
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    t = r.time_relative_to_stimulus_onset.values * 1000
    for st in r.structure.values:
        ax.plot(t, r.sel(structure=st), label=st, color=_color(str(st)))
    ax.axvline(0, color="k", lw=0.5, ls="--")
    ax.set_xlabel("Time from stimulus onset (ms)")
    ax.set_ylabel("Firing rate (spikes/s)")
    ax.set_title(title)
    ax.legend(ncol=2, fontsize=8, frameon=False)
    return ax.figure


def plot_tuning(curves: xr.DataArray, n_units: int = 8, parameter: str = "orientation"):
    """Tuning curves of the most selective units (polar plots)."""
    sel = ((curves.max(parameter) - curves.min(parameter)) /
           (curves.max(parameter) + curves.min(parameter)))
    order = np.argsort(-np.nan_to_num(sel.values))[:n_units]
    cols = min(4, len(order)) or 1
    rows = int(np.ceil(len(order) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, subplot_kw={"projection": "polar"},
                             figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    theta = np.deg2rad(curves[parameter].values)
    for ax, i in zip(axes.ravel(), order, strict=False):
        c = curves.isel(unit_id=i).values
        ax.plot(np.append(theta, theta[0]), np.append(c, c[0]), color="tab:blue")
        ax.set_title(f"{curves.structure_acronym.values[i]} {curves.unit_id.values[i]}",
                     fontsize=8)
        ax.tick_params(labelsize=6)
        ax.yaxis.set_major_locator(MaxNLocator(3))
    for ax in axes.ravel()[len(order):]:
        ax.set_visible(False)
    fig.suptitle(f"Firing rate (spikes/s) vs grating {parameter} (°)")
    fig.tight_layout()
    return fig


def plot_area_correlations(corr: xr.DataArray):
    """Mean noise correlation between areas, one heat map per stimulus."""
    c = corr.mean("session_id") if "session_id" in corr.dims else corr
    n = c.sizes["stimulus"]
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False)
    vmax = float(np.nanmax(np.abs(c.values))) or 0.1
    for ax, stim in zip(axes[0], c.stimulus.values, strict=True):
        m = c.sel(stimulus=stim)
        im = ax.imshow(m.values, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(m.sizes["area_b"]), m.area_b.values, rotation=90, fontsize=8)
        ax.set_yticks(range(m.sizes["area_a"]), m.area_a.values, fontsize=8)
        ax.set_title(str(stim).replace("_", " "))
    fig.colorbar(im, ax=axes[0].tolist(), label="noise correlation (r)", shrink=0.8)
    fig.suptitle("Spike-count correlations between areas (50 ms bins)")
    return fig
