"""Figures a scientist would put on a slide: labelled axes, units, areas. matplotlib only."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.ticker import MaxNLocator

from .analyses.checks import choice
from .analyses.spiking import tuning_contrast

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


def _band(ax, x, one: xr.DataArray, color, one_session: bool) -> str | None:
    """Shade the confidence interval of ``one`` (``ci_low``/``ci_high``) where it has one, else
    ± its SEM; what was drawn, for the title (None: nothing, e.g. a mean over sessions)."""
    if not one_session:
        return None
    if "ci_low" in one.coords and "ci_high" in one.coords:
        ax.fill_between(x, one.ci_low, one.ci_high, color=color, alpha=0.2, lw=0)
        return "ci"
    if "sem" in one.coords:
        ax.fill_between(x, one - one.sem, one + one.sem, color=color, alpha=0.2, lw=0)
        return "sem"
    return None


def _band_label(spectra: xr.DataArray, drawn: str | None) -> str:
    if drawn == "ci":
        return f" (bands: {spectra.attrs.get('ci', {}).get('level', 0.95):.0%} CI)"
    return " (bands: ± SEM)" if drawn == "sem" else ""


def plot_spectra(spectra: xr.DataArray, stimulus: str = "all", fmax: float = 100.0, ax=None):
    """PSD per structure (log power) for one stimulus; mean over sessions if present. Bands:
    the confidence interval where the spectra carry one (``lfp_spectra``'s ``ci_low`` /
    ``ci_high``), else ± SEM; none for a mean over sessions."""
    choice("stimulus", stimulus, list(spectra.stimulus.values))
    s = spectra.sel(stimulus=stimulus)
    if "session_id" in s.dims:
        s = s.mean("session_id")
    s = s.sel(frequency=slice(1.0, fmax))
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    styles = ["-", "--", ":", "-."]
    drawn = None
    for k, st in enumerate(s.structure.values):
        one = s.sel(structure=st)
        ax.semilogy(s.frequency, one, label=st, color=_color(str(st)),
                    ls=styles[k % len(styles)])
        drawn = _band(ax, s.frequency, one, _color(str(st)), "session_id" not in spectra.dims)
    ax.set_xlabel("Frequency (Hz)")
    ax.set_ylabel("LFP power (V²/Hz)")
    ax.set_title(f"LFP power spectrum by area — {stimulus.replace('_', ' ')}"
                 + _band_label(spectra, drawn), fontsize=10)
    ax.legend(ncol=2, fontsize=8, frameon=False)
    return ax.figure


def plot_spectral_change(change: xr.DataArray, stimulus: str, fmax: float = 100.0, ax=None):
    """Power change relative to spontaneous activity (dB) per structure, with the interval of
    the ratio as a band where ``relative_to`` gave one."""
    choice("stimulus", stimulus, list(change.stimulus.values))
    c = change.sel(stimulus=stimulus)
    if "session_id" in c.dims:
        c = c.mean("session_id")
    c = c.sel(frequency=slice(1.0, fmax))
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    drawn = None
    for st in c.structure.values:
        one = c.sel(structure=st)
        ax.plot(c.frequency, one, label=st, color=_color(str(st)))
        if "ci_low" in one.coords:
            drawn = _band(ax, c.frequency, one, _color(str(st)), "session_id" not in change.dims)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("Frequency (Hz)")
    ax.set_ylabel("Power change vs spontaneous (dB)")
    ax.set_title(f"{stimulus.replace('_', ' ')} vs spontaneous" + _band_label(change, drawn),
                 fontsize=10)
    ax.legend(ncol=2, fontsize=8, frameon=False)
    return ax.figure


def plot_psth(rates: xr.DataArray, ax=None, title: str = "Flash response"):
    """Mean firing rate per structure around stimulus onset, ± SEM across units as a band
    when the PSTH carries it (``psth_by_structure``) and there is one session."""
    r = rates.mean("session_id") if "session_id" in rates.dims else rates
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    t = r.time_relative_to_stimulus_onset.values * 1000
    for st in r.structure.values:
        one = r.sel(structure=st)
        ax.plot(t, one, label=st, color=_color(str(st)))
        if "sem" in one.coords and "session_id" not in rates.dims:
            ax.fill_between(t, one - one.sem, one + one.sem, color=_color(str(st)), alpha=0.2,
                            lw=0)
    ax.axvline(0, color="k", lw=0.5, ls="--")
    ax.set_xlabel("Time from stimulus onset (ms)")
    units = rates.attrs.get("units", "Hz")
    ax.set_ylabel("Firing rate (z-score of baseline)" if units == "z" else
                  "Firing rate change (spikes/s)" if rates.attrs.get("normalize") == "subtract"
                  else "Firing rate (spikes/s)")
    ax.set_title(title)
    ax.legend(ncol=2, fontsize=8, frameon=False)
    return ax.figure


def plot_tuning(curves: xr.DataArray, n_units: int = 8, parameter: str = "orientation"):
    """Tuning curves of the units with the highest tuning contrast (polar plots)."""
    sel = tuning_contrast(curves, parameter)
    order = np.argsort(-np.nan_to_num(sel.values, nan=-1.0))[:n_units]
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


#: colour of heat-map cells without a value (no unit pair): hatched grey, never a value's colour
NAN_COLOR = "#bdbdbd"


def plot_area_correlations(corr: xr.DataArray):
    """Mean noise correlation between areas, one heat map per stimulus. Cells without a value
    (an area with one unit has no pair of its own) are hatched grey and marked "n/a", never
    drawn as r = 0; cells show the number of unit pairs when the result carries it."""
    many = "session_id" in corr.dims
    c = corr.mean("session_id") if many else corr
    n = c.sizes["stimulus"]
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False)
    vmax = float(np.nanmax(np.abs(c.values))) if np.isfinite(c.values).any() else 0.1
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad=NAN_COLOR)
    for ax, stim in zip(axes[0], c.stimulus.values, strict=True):
        m = c.sel(stimulus=stim)
        values = np.ma.masked_invalid(m.values)
        im = ax.imshow(values, cmap=cmap, vmin=-(vmax or 0.1), vmax=vmax or 0.1)
        for i, j in zip(*np.nonzero(values.mask), strict=True):
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                       edgecolor="white", lw=0))
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="k")
        if "n_pairs" in m.coords and not many:
            for i, j in zip(*np.nonzero(~values.mask), strict=True):
                ax.text(j, i, f"{int(m.n_pairs.values[i, j])}", ha="center", va="center",
                        fontsize=6, color="k", alpha=0.6)
        ax.set_xticks(range(m.sizes["area_b"]), m.area_b.values, rotation=90, fontsize=8)
        ax.set_yticks(range(m.sizes["area_a"]), m.area_a.values, fontsize=8)
        trials = f", {int(m.n_trials)} trials" if "n_trials" in m.coords and not many else ""
        ax.set_title(f"{str(stim).replace('_', ' ')}{trials}", fontsize=10)
    fig.colorbar(im, ax=axes[0].tolist(), label="noise correlation (r)", shrink=0.8)
    shown = "n_pairs" in c.coords and not many
    fig.suptitle("Spike-count noise correlations between areas ("
                 + ("numbers: unit pairs; " if shown else
                    f"mean of {corr.sizes['session_id']} sessions; " if many else "")
                 + "grey n/a: no pair)", fontsize=10)
    return fig
