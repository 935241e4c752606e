"""``neuropixels-dask demo``: the whole story on one machine in a few minutes.

Generates (or reuses) the demo cache, serves it from a local S3 server, starts a local Dask cluster,
runs every analysis across all sessions — each chunk read by its own task over S3 — and writes a
report (PNG figures + Markdown/HTML summary). ``--cache URL`` runs the same on another cache.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np

from .cli import needs_extra

DEFAULT_DATA = Path(os.environ.get("NEUROPIXELS_DASK_DEMO_DATA", "demo-data"))
CACHE_PREFIX = "visual-coding-neuropixels/ecephys-cache"


def _session_analyses(session):
    """Everything computed per session (lazy); map_sessions computes them in parallel."""
    import xarray as xr

    from ..analyses import (
        psth,
        psth_by_structure,
        session_structure_spectra,
        spike_count_correlations,
        tuning_curves,
    )

    # 1 s welch segments; flashes (250 ms apart) need method="multitaper" (docs/analyses.md)
    stimuli = [s for s in ("spontaneous", "drifting_gratings", "natural_scenes",
                           "static_gratings") if s in session.stimulus_names]
    spectra = session_structure_spectra(session, stimuli)
    rates = psth_by_structure(psth(session, "flashes"))
    # the demo's short sessions show each orientation only a few times
    corr = spike_count_correlations(session, ["spontaneous", "drifting_gratings"],
                                    condition_by="orientation", min_trials=2)
    curves = tuning_curves(session, "drifting_gratings", "orientation")
    parts = {"spectra": spectra, "psth": rates, "correlations": corr}
    return xr.Dataset({k: v.reset_coords(drop=True) for k, v in parts.items()}), curves


def _spectra_only(session):
    return _session_analyses(session)[0]


def flash_latencies(rates, min_ratio: float = 2.0) -> dict[str, float | None]:
    """Peak latency (ms) of each structure's PSTH, or ``None`` when the peak is not at least
    ``min_ratio`` times the pre-stimulus rate (a structure that does not respond)."""
    out: dict[str, float | None] = {}
    t = rates.time_relative_to_stimulus_onset
    for s in rates.structure.values:
        r = rates.sel(structure=s)
        base = float(r.where(t < 0, drop=True).mean())
        after = r.where(t >= 0, drop=True)
        responsive = float(after.max()) >= min_ratio * max(base, 1e-9)
        out[str(s)] = float(after.idxmax()) * 1000 if responsive else None
    return out


def run_demo(out: Path, cache_url: str | None, storage_options: dict | None, preset: str,
             n_workers: int, data_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from distributed import Client, LocalCluster

    from .. import open_cache
    from ..analyses import map_sessions, peak_frequency, preferred, relative_to, tuning_contrast
    from ..plots import (
        plot_area_correlations,
        plot_psth,
        plot_spectra,
        plot_spectral_change,
        plot_tuning,
    )

    t_start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    truth = None
    with stack:
        if cache_url is None:
            from .s3server import LocalS3Server
            from .synth import generate_cache
            from .synth.generate import load_ground_truth

            local = data_dir / f"{preset}-cache"
            print(f"==> synthetic cache ({preset}) in {local}")
            generate_cache(str(local), preset)
            server = stack.enter_context(LocalS3Server(mounts={CACHE_PREFIX: local}))
            cache_url = server.url(CACHE_PREFIX)
            storage_options = server.storage_options()
            print(f"==> local S3 server at {server.endpoint_url} serving {cache_url}")
            truth = load_ground_truth(str(local))
        if logging.getLogger().getEffectiveLevel() > logging.INFO:  # not --verbose
            # LocalCluster restores distributed's level on close: keep it quiet then too
            logging.getLogger("distributed").setLevel(logging.WARNING)
        cluster = stack.enter_context(LocalCluster(n_workers=n_workers, threads_per_worker=2,
                                                   processes=True, dashboard_address=":0"))
        client = stack.enter_context(Client(cluster))
        print(f"==> Dask cluster: {n_workers} worker processes; dashboard {client.dashboard_link}")
        cache = open_cache(cache_url, **(storage_options or {}))
        sessions = cache.get_session_table()
        print(f"==> {len(sessions)} sessions, {int(sessions['probe_count'].sum())} probes, "
              f"{len(cache.get_units())} units passing the default filters")

        res = map_sessions(_spectra_only, sessions.index, cache, client=client)
        curves = {}
        for sid in res.per_session:
            curves[sid] = _session_analyses(cache.get_session_data(sid))[1].compute()
        if res.result is None:
            raise RuntimeError(f"every session failed: {res.failed}")
        ds = res.result
        # one Dataset shares the structure axis: drop the structures a variable has no data for
        spectra = ds["spectra"].dropna("structure", how="all")
        rates = ds["psth"].dropna("structure", how="all")
        corr = ds["correlations"].dropna("stimulus", how="all")

        figs = {}
        figs["spectra_all.png"] = plot_spectra(spectra, "all")
        change = relative_to(spectra, "spontaneous")
        figs["spectra_gratings_vs_spontaneous.png"] = plot_spectral_change(
            change, "drifting_gratings")
        figs["psth_flashes.png"] = plot_psth(rates, title="Response to full-field flashes")
        figs["area_correlations.png"] = plot_area_correlations(corr)
        first = next(iter(curves))
        figs["tuning_curves.png"] = plot_tuning(curves[first])
        for name, fig in figs.items():
            fig.savefig(out / name, dpi=110, bbox_inches="tight")
            plt.close(fig)

        # ---- summary numbers (and the ground truth when the cache is synthetic)
        mean_all = spectra.sel(stimulus="all").mean("session_id")
        peaks = {str(s): float(peak_frequency(mean_all.sel(structure=s), (3, 80)))
                 for s in mean_all.structure.values}
        gamma = change.sel(stimulus="drifting_gratings", frequency=slice(30, 50)).mean(
            ["frequency", "session_id"])
        latency = flash_latencies(rates.mean("session_id"))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            c = corr.mean("session_id")
            vis = [a for a in c.area_a.values if str(a).startswith("VIS")]
            between = {str(st): float(np.nanmean(
                c.sel(stimulus=st, area_a=vis, area_b=vis).values[~np.eye(len(vis), dtype=bool)]))
                for st in c.stimulus.values} if len(vis) > 1 else {}
        sel = np.concatenate([tuning_contrast(cv).values for cv in curves.values()])
        pref_match = None
        if truth is not None:
            hits = []
            for sid, cv in curves.items():
                units = truth["sessions"][str(sid)]["units"]
                for u, p in zip(cv.unit_id.values, preferred(cv).values, strict=True):
                    t = units[str(u)]["preferred_orientation"]
                    if t is not None and np.isfinite(sel[0]):
                        hits.append(t == p)
            pref_match = float(np.mean(hits)) if hits else None
        elapsed = time.monotonic() - t_start
        lines = [
            "# Neuropixels Hub demo report", "",
            f"Cache: `{cache_url}` — {len(res.per_session)} sessions analysed"
            + (f", {len(res.failed)} failed: {res.failed}" if res.failed else "") + ".",
            f"Cluster: LocalCluster, {n_workers} worker processes. Total time {elapsed:.0f} s.",
            "", "## LFP spectra", "",
            "| structure | peak frequency (Hz) | power change in 30–50 Hz, gratings vs "
            "spontaneous (dB) |", "|---|---|---|",
            *[f"| {s} | {peaks[s]:.1f} | {float(gamma.sel(structure=s)):+.1f} |" for s in peaks],
            "", "![spectra](spectra_all.png)",
            "![gratings vs spontaneous](spectra_gratings_vs_spontaneous.png)",
            "", "## Flash responses", "",
            "| structure | PSTH peak latency (ms) |", "|---|---|",
            *[f"| {s} | {'no response' if v is None else f'{v:.0f}'} |"
              for s, v in latency.items()],
            "", "![psth](psth_flashes.png)", "", "## Orientation tuning", "",
            f"Median tuning contrast (max − min)/(max + min): {np.nanmedian(sel):.2f} "
            f"({len(sel)} units)."
            + (f" Preferred orientation equals the generator's ground truth for "
               f"{100 * pref_match:.0f}% of visual units." if pref_match is not None else ""),
            "", "![tuning](tuning_curves.png)", "", "## Cross-area correlations", "",
            *(["Mean noise correlation between visual areas: "
               + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in between.items()) + "."]
              if between else []),
            "", "![correlations](area_correlations.png)", "",
        ]
        if truth is not None:
            lines += ["## Ground truth of the synthetic cache", "",
                      f"Rhythms: {truth['rhythms']}; gamma power gain during gratings "
                      f"×{truth['gamma_grating_power_gain']:.0f}; visual areas share a latent "
                      "gain during drifting gratings only.", ""]
        md = "\n".join(lines)
        (out / "report.md").write_text(md)
        (out / "report.html").write_text(_html(md))
        print(f"==> report written to {out.resolve()}/report.md (and report.html), "
              f"{elapsed:.0f} s")
    return out


def _html(md: str) -> str:
    """A minimal Markdown → HTML for the report (headings, tables, images, paragraphs)."""
    out, table = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-"):
                table.append(cells)
            continue
        if table:
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                           for r in table)
            out.append(f"<table border=1 cellpadding=4>{rows}</table>")
            table = []
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1:-1]
            out.append(f'<img src="{html.escape(src)}" style="max-width:48%">')
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    return "<html><body style='font-family:sans-serif'>" + "\n".join(out) + "</body></html>"


@needs_extra("`neuropixels-dask demo`")
def _cmd(args: argparse.Namespace) -> int:
    so = None
    if args.anon is not None:
        so = {"anon": args.anon}
    run_demo(Path(args.out), args.cache, so, args.preset, args.workers, Path(args.data_dir))
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("demo", help="generate/serve a synthetic cache and run every analysis")
    p.add_argument("--cache", help="analyse this cache URL instead of the synthetic one")
    p.add_argument("--anon", type=lambda v: v.lower() in ("1", "true", "yes"), default=None,
                   help="anonymous S3 access for --cache (default: from config)")
    p.add_argument("--preset", default="demo", choices=["tiny", "demo", "bench"])
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.add_argument("--out", default="demo-output", help="report folder")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="where the synthetic cache "
                   "is generated (reused on later runs)")
    p.set_defaults(func=_cmd)
