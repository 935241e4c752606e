"""Draw the figures of docs/analyses.md from a synthetic cache (the numbers quoted there too).

Usage: python scripts/make_analysis_figures.py [CACHE_DIR]
(default: generates the tiny preset with more units and trials into a temporary folder)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import dask
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import neuropixels_dask as npd  # noqa: E402
from neuropixels_dask.analyses import (  # noqa: E402
    grating_metrics,
    psth,
    psth_by_structure,
    receptive_field_centres,
    receptive_fields,
    relative_to,
    session_structure_spectra,
    spike_count_correlations,
    tuning_curves,
)
from neuropixels_dask.local.synth import generate_cache  # noqa: E402
from neuropixels_dask.plots import (  # noqa: E402
    plot_area_correlations,
    plot_psth,
    plot_spectra,
    plot_spectral_change,
    plot_tuning,
)

OUT = Path(__file__).resolve().parent.parent / "docs" / "img"


def main(cache_dir: str | None) -> None:
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.mkdtemp(), "cache")
        generate_cache(cache_dir, "tiny", progress=False, n_sessions=2, units_per_probe=30,
                       probe_without_lfp=False, n_flashes=40, n_drifting_gratings=32)
    OUT.mkdir(parents=True, exist_ok=True)
    cache = npd.open_cache(cache_dir)
    ids = [int(i) for i in cache.get_session_table().index]
    session = cache.get_session_data(ids[0])
    flawed = cache.get_session_data(ids[-1])

    def save(fig, name):
        fig.savefig(OUT / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        print("wrote", OUT / name)

    welch = session_structure_spectra(session, ["spontaneous", "drifting_gratings"]).compute()
    save(plot_spectra(welch, "spontaneous"), "analyses-spectra-welch.png")
    mt = session_structure_spectra(session, ["spontaneous", "drifting_gratings", "flashes"],
                                   method="multitaper").compute()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    plot_spectral_change(relative_to(welch, "spontaneous"), "drifting_gratings", ax=axes[0])
    axes[0].set_title("drifting gratings vs spontaneous — Welch, 1 s segments")
    change = relative_to(mt, "spontaneous").sel(frequency=slice(1, 100))
    for stim, ls in (("drifting_gratings", "-"), ("flashes", "--")):
        for st in ("VISp", "CA1"):
            one = change.sel(stimulus=stim, structure=st)
            line, = axes[1].plot(change.frequency, one, ls=ls,
                                 label=f"{st}, {stim.replace('_', ' ')}")
            axes[1].fill_between(change.frequency, one.ci_low, one.ci_high, alpha=0.15, lw=0,
                                 color=line.get_color())
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_xlabel("Frequency (Hz)")
    axes[1].set_ylabel("Power change vs spontaneous (dB)")
    axes[1].legend(fontsize=8, frameon=False)
    axes[1].set_title("multitaper, 250 ms segments, NW = 2 (3 tapers); bands: 95% CI",
                      fontsize=10)
    save(fig, "analyses-spectral-change.png")
    print("n_segments welch", dict(zip(welch.stimulus.values, welch.n_segments.values,
                                      strict=True)))
    print("n_segments multitaper", dict(zip(mt.stimulus.values, mt.n_segments.values,
                                           strict=True)))

    edges = np.arange(-0.1, 0.25 + 1e-9, 0.005)
    rates = psth_by_structure(psth(session, "flashes", edges, smooth_sigma_s=0.005)).compute()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    plot_psth(rates, ax=axes[0], title="Flashes: rate ± SEM across units (σ = 5 ms)")
    z = psth(session, "flashes", edges, condition_by="color", normalize="zscore",
             smooth_sigma_s=0.005)
    zs = psth_by_structure(z).compute()
    t = zs.time_relative_to_stimulus_onset.values * 1000
    for color, ls in zip(zs.color.values, ["-", "--"], strict=True):
        for st in ("VISp", "LGd"):
            if st in zs.structure.values:
                one = zs.sel(structure=st, color=color)
                axes[1].plot(t, one, ls=ls, label=f"{st}, colour {color}")
                axes[1].fill_between(t, one - one.sem, one + one.sem, alpha=0.2, lw=0)
    axes[1].axvline(0, color="k", lw=0.5, ls="--")
    axes[1].set_xlabel("Time from stimulus onset (ms)")
    axes[1].set_ylabel("z-score of the pre-onset baseline")
    axes[1].set_title("Flashes by colour, z-scored (baseline −100…0 ms)")
    axes[1].legend(fontsize=8, frameon=False)
    save(fig, "analyses-psth.png")

    curves = tuning_curves(session).compute()
    save(plot_tuning(curves), "analyses-tuning.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for sid in ids:
        got = grating_metrics(cache.get_session_data(sid), selectivity_at="all_tf")
        got = got.compute().to_pandas()
        rel = pd.read_csv(os.path.join(cache_dir, f"session_{sid}",
                                       f"session_{sid}_analysis_metrics.csv"),
                          index_col="ecephys_unit_id")
        j = got.join(rel[["g_osi_dg", "g_dsi_dg"]].add_suffix("_release"), how="inner")
        for ax, col in zip(axes, ("g_osi_dg", "g_dsi_dg"), strict=True):
            ax.scatter(j[f"{col}_release"], j[col], s=12, alpha=0.6, label=f"session {sid}")
    for ax, col in zip(axes, ("g_osi_dg", "g_dsi_dg"), strict=True):
        ax.plot([0, 0.6], [0, 0.6], color="k", lw=0.5)
        ax.set_xlabel(f"{col} in the release's table (planted)")
        ax.set_ylabel(f"{col} from the spikes")
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle("Allen's grating metrics from the spikes vs the planted values "
                 "(selectivity_at='all_tf')")
    save(fig, "analyses-grating-metrics.png")

    save(_receptive_fields_figure(cache, ids, cache_dir), "analyses-receptive-fields.png")

    corr = spike_count_correlations(flawed, ["spontaneous", "drifting_gratings"],
                                    condition_by="orientation", min_trials=3,
                                    unit_ids=flawed.units.index[
                                        flawed.units["structure_acronym"] != "LP"].tolist()
                                    + flawed.units.index[
                                        flawed.units["structure_acronym"] == "LP"][:1].tolist())
    corr = corr.compute()
    save(plot_area_correlations(corr), "analyses-correlations.png")
    print("correlations", corr.n_trials.values, corr.n_conditions.values,
          corr.n_invalid_trials.values)


def _receptive_fields_figure(cache, ids: list[int], cache_dir: str):
    """Four maps with their planted and found centres, and found vs planted for every unit."""
    fig = plt.figure(figsize=(12, 4.6))
    grid = fig.add_gridspec(2, 4, width_ratios=[1, 1, 0.15, 2.2], hspace=0.4)
    scatter = fig.add_subplot(grid[:, 3])
    for k, sid in enumerate(ids):
        s = cache.get_session_data(sid)
        found = receptive_field_centres(s).compute().drop_vars("structure_acronym").to_pandas()
        rel = pd.read_csv(os.path.join(cache_dir, f"session_{sid}",
                                       f"session_{sid}_analysis_metrics.csv"),
                          index_col="ecephys_unit_id")
        j = found.join(rel[["azimuth_rf", "elevation_rf"]].add_suffix("_planted"),
                       how="inner").dropna(subset=["azimuth_rf_planted"])
        for col, marker in (("azimuth", "o"), ("elevation", "s")):
            scatter.scatter(j[f"{col}_rf_planted"], j[f"{col}_rf"], s=14, alpha=0.6,
                            marker=marker, label=f"{col}, session {sid}")
        if k:
            continue
        maps = receptive_fields(s, j.sort_values("n_spikes").index[-4:]).compute()
        for i, uid in enumerate(maps.unit_id.values):
            ax = fig.add_subplot(grid[i // 2, i % 2])
            az, el = maps.azimuth.values, maps.elevation.values
            ax.imshow(maps.sel(unit_id=uid), cmap="Greys",
                      extent=[az[0] - 5, az[-1] + 5, el[-1] - 5, el[0] + 5])
            ax.plot(j.azimuth_rf_planted[uid], j.elevation_rf_planted[uid], "+", color="tab:red",
                    ms=12, mew=2)
            ax.plot(j.azimuth_rf[uid], j.elevation_rf[uid], "x", color="tab:blue", ms=9, mew=2)
            ax.set_title(f"{uid} ({maps.structure_acronym.values[i]})", fontsize=8)
            ax.tick_params(labelsize=7)
            if i % 2 == 0:
                ax.set_ylabel("elevation (°)", fontsize=7)
            if i // 2:
                ax.set_xlabel("azimuth (°)", fontsize=7)
    scatter.plot([-40, 100], [-40, 100], color="k", lw=0.5)
    scatter.set_xlabel("planted centre (release's degrees)")
    scatter.set_ylabel("centre found from the spikes (degrees)")
    scatter.legend(fontsize=7, frameon=False)
    fig.suptitle("Receptive fields from the Gabor stimulus (each position shown once): "
                 "+ planted, × found")
    return fig


if __name__ == "__main__":
    with dask.config.set(scheduler="sync"):
        main(sys.argv[1] if len(sys.argv) > 1 else None)
