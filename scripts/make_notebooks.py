"""Write the example notebooks from this source (outputs are never committed).

Run ``python scripts/make_notebooks.py`` after editing the cells below.
"""

from __future__ import annotations

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent.parent / "analysis" / "notebooks"


def md(text: str):
    return nbf.v4.new_markdown_cell(text.strip())


def code(text: str):
    return nbf.v4.new_code_cell(text.strip())


QUICKSTART = [
    md("""
# Quickstart: one session, straight from S3

`npd.open_cache()` opens the cache named by the configuration: the public Allen bucket by
default, or whatever the hub (or `NEUROPIXELS_DASK__CACHE__URL`) points at. Nothing here downloads
a whole file: tables are small, LFP and spikes are read chunk by chunk when computed.
"""),
    code("""
import neuropixels_dask as npd
from neuropixels_dask.analyses import lfp_spectra, by_structure, psth, psth_by_structure
from neuropixels_dask.plots import plot_spectra, plot_psth

cache = npd.open_cache()
sessions = cache.get_session_table()
sessions[["session_type", "unit_count", "probe_count", "ecephys_structure_acronyms"]]
"""),
    md("Units passing AllenSDK's default quality filters, per brain structure:"),
    code("""
units = cache.get_units()
units.groupby("ecephys_structure_acronym").size().sort_values(ascending=False)
"""),
    code("""
session = cache.get_session_data(int(sessions.index[0]))
session.probes
"""),
    md("""
## LFP: a lazy DataArray

`get_lfp` returns `(time, channel)` backed by Dask; chunks follow the file's storage chunks, and the
channel coordinates carry depth and brain structure.
"""),
    code("""
probe_id = int(session.probes.index[session.probes["has_lfp_data"]][0])
lfp = session.get_lfp(probe_id)
lfp
"""),
    code("""
spectra = by_structure(lfp_spectra(session, probe_id, ["spontaneous", "drifting_gratings"]))
spectra = spectra.compute()
plot_spectra(spectra, "all");
"""),
    md("""
## Spikes: a PSTH around full-field flashes

Mean rate per structure ± SEM across units; `psth` also subtracts or z-scores a baseline,
smooths, and splits by a stimulus parameter (`condition_by="color"`): see `docs/analyses.md`.
"""),
    code("""
rates = psth_by_structure(psth(session, "flashes")).compute()
plot_psth(rates);
"""),
]

SCALE_OUT = [
    md("""
# Scale out: spectra and correlations across sessions

`npd.get_client()` returns the cluster this notebook should use: dask-gateway on the hub (the
chart configures it), otherwise a local cluster of processes. `npd.map_sessions` runs a
per-session analysis on every session at once and reports any session that fails.
"""),
    code("""
import numpy as np
import neuropixels_dask as npd
from neuropixels_dask.analyses import (session_structure_spectra, relative_to,
                                       spike_count_correlations)
from neuropixels_dask.plots import plot_spectra, plot_spectral_change, plot_area_correlations

client = npd.get_client()
client
"""),
    code("""
cache = npd.open_cache()
session_ids = list(cache.get_session_table().index)
spectra = npd.map_sessions(session_structure_spectra, session_ids, cache,
                           stimuli=["spontaneous", "drifting_gratings"])
spectra
"""),
    code("""
s = spectra.result.dropna("structure", how="all")
plot_spectra(s, "all")
plot_spectral_change(relative_to(s, "spontaneous"), "drifting_gratings");
"""),
    md("""
Flashes last 250 ms, too short for 1 s Welch segments: the multitaper method fits one 250 ms
segment to each flash (and tiles the other stimuli with 250 ms segments, so all share one
frequency grid, 4 Hz apart).
"""),
    code("""
short = npd.map_sessions(session_structure_spectra, session_ids, cache,
                         stimuli=["spontaneous", "flashes"], method="multitaper")
f = short.result.dropna("structure", how="all")
plot_spectral_change(relative_to(f, "spontaneous"), "flashes");
"""),
    md("""
## Cross-area noise correlations, by stimulus

Spike counts per trial minus the mean of their condition (here: grating orientation), z-scored,
then Pearson's r; spontaneous activity in 1 s pseudo-trials. Real sessions show each condition
15 times; the synthetic caches only a few, hence `min_trials=2` here (default 5).
"""),
    code("""
corr = npd.map_sessions(spike_count_correlations, session_ids, cache,
                        stimuli=["spontaneous", "drifting_gratings"],
                        condition_by="orientation", min_trials=2)
plot_area_correlations(corr.result);
"""),
    code("""
c = corr.result.mean("session_id")
vis = [a for a in c.area_a.values if a.startswith("VIS")]
{str(stim): float(np.nanmean(c.sel(stimulus=stim, area_a=vis, area_b=vis).values[
    ~np.eye(len(vis), dtype=bool)])) for stim in c.stimulus.values}
"""),
]


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for name, cells in (("quickstart.ipynb", QUICKSTART), ("scale_out.ipynb", SCALE_OUT)):
        nb = nbf.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbf.write(nb, HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
