"""The cache-level tables (sessions, probes, channels, units), optionally at the release's size.

Why a release-scale catalog: the real cache's tables are large (units.csv ~51 MB for ~99k units,
channels.csv 332 probes × 384 rows), and how fast a catalog opens depends on that size, not on
the NWB files behind it. ``Preset(release_catalog=True)`` pads the tables of the generated
sessions with *catalog-only* sessions, until they hold what the release does
(:data:`RELEASE`): 58 sessions, 332 probes, ~99k units, 384 channels per probe, the real columns
and plausible values. Catalog-only sessions have no files: ``has_nwb`` and ``has_lfp_data`` are
false there, and opening one raises the package's "NWB file is missing" error.

The row builders are shared with the generator (``generate.py``), so generated and padded rows
are alike by construction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from . import layout as L

#: the published release (ALLEN_LAYOUT.md): sessions, probes, units (channels: 384 per probe)
RELEASE = {"sessions": 58, "probes": 332, "units": 99_180}
#: session types of the release: 32 brain_observatory_1.1, 26 functional_connectivity
RELEASE_SESSION_TYPES = {"brain_observatory_1.1": 32, "functional_connectivity": 26}
GENOTYPES = ["wt/wt", "Sst-IRES-Cre/wt;Ai32(RCL-ChR2(H134R)_EYFP)/wt",
             "Vip-IRES-Cre/wt;Ai32(RCL-ChR2(H134R)_EYFP)/wt",
             "Pvalb-IRES-Cre/wt;Ai32(RCL-ChR2(H134R)_EYFP)/wt"]
#: Unit metrics: uniform ranges, in the order the generator draws them (its random stream
#: depends on this order)
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "PT_ratio": (0.2, 0.8), "amplitude": (60, 300), "amplitude_cutoff": (0.0, 0.08),
    "cumulative_drift": (20, 300), "d_prime": (2, 8), "duration": (0.2, 0.9),
    "halfwidth": (0.1, 0.4), "isi_violations": (0.0, 0.3), "isolation_distance": (20, 120),
    "l_ratio": (0, 0.1), "max_drift": (5, 60), "nn_hit_rate": (0.6, 1.0),
    "nn_miss_rate": (0, 0.05), "presence_ratio": (0.96, 0.99),
    "recovery_slope": (-0.3, -0.02), "repolarization_slope": (0.2, 1.5),
    "silhouette_score": (0.02, 0.3), "snr": (1.5, 6.0), "spread": (30, 150),
    "velocity_above": (-1, 1), "velocity_below": (-1, 1),
}
#: noise clusters have a low SNR; a unit made to fail one default filter gets these values
NOISE_SNR = (0.2, 1.0)
FAILING = {"amplitude_cutoff": (0.15, 0.5), "presence_ratio": (0.5, 0.9),
           "isi_violations": (0.6, 3.0)}
UNITS_CSV_COLUMNS = ["id", "PT_ratio", "amplitude", "amplitude_cutoff", "cumulative_drift",
                     "d_prime", "duration", "ecephys_channel_id", "firing_rate", "halfwidth",
                     "isi_violations", "isolation_distance", "l_ratio", "max_drift",
                     "nn_hit_rate", "nn_miss_rate", "presence_ratio", "quality", "recovery_slope",
                     "repolarization_slope", "silhouette_score", "snr", "spread",
                     "velocity_above", "velocity_below"]


# ---- rows shared with the generator ----------------------------------------------------------

def session_row(session_id: int, s_index: int, meta: dict, start: datetime,
                has_nwb: bool = True) -> dict:
    return {"id": session_id, "date_of_acquisition": start.isoformat(),
            "isi_experiment_id": 700_000_000 + s_index, "published_at":
            "2019-10-03T00:00:00+00:00", "specimen_id": meta["specimen_id"],
            "session_type": meta["session_type"], "age_in_days": meta["age_in_days"],
            "sex": meta["sex"], "genotype": meta["genotype"], "has_nwb": has_nwb}


def probe_row(p: L.ProbeLayout, session_id: int, has_lfp: bool | None = None) -> dict:
    return {"id": p.probe_id, "air_channel_index": p.air_channel_index,
            "ecephys_session_id": session_id, "lfp_sampling_rate": p.lfp_sampling_rate,
            "lfp_temporal_subsampling_factor": float(L.LFP_SUBSAMPLING),
            "name": p.name, "phase": "3a", "sampling_rate": L.RAW_SAMPLING_RATE,
            "surface_channel_index": p.surface_channel_index,
            "has_lfp_data": p.has_lfp if has_lfp is None else has_lfp}


def channel_rows(p: L.ProbeLayout) -> list[dict]:
    rows = []
    for i, cid in enumerate(p.channel_ids):
        acr = p.acronyms[i]
        rows.append({
            "id": int(cid), "ecephys_probe_id": p.probe_id, "local_index": i,
            "probe_horizontal_position": int(p.horizontal[i]),
            "probe_vertical_position": int(p.vertical[i]),
            "anterior_posterior_ccf_coordinate": p.ccf[i, 0] if acr else np.nan,
            "dorsal_ventral_ccf_coordinate": p.ccf[i, 1] if acr else np.nan,
            "left_right_ccf_coordinate": p.ccf[i, 2] if acr else np.nan,
            "ecephys_structure_id": L.STRUCTURE_IDS.get(acr, np.nan),
            "ecephys_structure_acronym": acr or np.nan})
    return rows


def unit_metrics(rng: np.random.Generator, quality: str, fail: str | None) -> dict:
    """One unit's plausible metrics; ``fail`` names the default filter it is made to fail."""
    m = {name: rng.uniform(lo, hi) for name, (lo, hi) in METRIC_RANGES.items()}
    if quality == "noise":
        m["snr"] = rng.uniform(*NOISE_SNR)
    if fail in FAILING:
        m[fail] = rng.uniform(*FAILING[fail])
    return m


def unit_metrics_table(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """``n`` units' metrics at once (the same distributions as :func:`unit_metrics`), with
    ``quality`` (10 % noise) and a quarter of the good units failing one default filter."""
    t = pd.DataFrame({name: rng.uniform(lo, hi, n) for name, (lo, hi) in METRIC_RANGES.items()})
    noise = rng.random(n) < 0.1
    t["quality"] = np.where(noise, "noise", "good")
    t.loc[noise, "snr"] = rng.uniform(*NOISE_SNR, int(noise.sum()))
    failing = ~noise & (rng.random(n) < 0.25)
    which = rng.choice(list(FAILING), n)
    for name, (lo, hi) in FAILING.items():
        rows = failing & (which == name)
        t.loc[rows, name] = rng.uniform(lo, hi, int(rows.sum()))
    return t


# ---- padding to the release's size -----------------------------------------------------------

def pad_to_release(sessions: list[dict], probes: list[dict], channels: list[dict],
                   units: list[dict], seed: int) -> tuple[list[dict], list[dict], list[dict],
                                                          pd.DataFrame]:
    """The generated sessions' rows plus catalog-only sessions, to the sizes of :data:`RELEASE`.

    Returns sessions, probes and channels rows and the units table (columns
    :data:`UNITS_CSV_COLUMNS`). Fails if the generated part is already larger than the release.
    """
    n_s, n_p, n_u = (RELEASE[k] - n for k, n in
                     (("sessions", len(sessions)), ("probes", len(probes)),
                      ("units", len(units))))
    if min(n_s, n_p, n_u) < 0 or n_p > 6 * n_s or (n_s and n_p < n_s):
        raise ValueError(f"cannot pad {len(sessions)} sessions, {len(probes)} probes and "
                         f"{len(units)} units to the release's {RELEASE} (at most 6 probes "
                         "per session): generate fewer")
    rng = np.random.default_rng([seed, 15])
    taken = {int(r["id"]) for r in sessions}
    ids = [s for s in L.session_ids(RELEASE["sessions"] + len(sessions), seed)
           if s not in taken][:n_s]
    per_session = np.full(n_s, n_p // max(n_s, 1))
    per_session[:n_p - int(per_session.sum())] += 1
    kinds = [k for k, n in RELEASE_SESSION_TYPES.items() for _ in range(n)][len(sessions):]
    first = len(sessions)
    new_sessions, new_probes, new_channels, unit_channels = [], [], [], []
    for k, (sid, n_probes) in enumerate(zip(ids, per_session, strict=True)):
        s_index = first + k
        meta = {"specimen_id": int(700_000_000 + s_index * 1000 + rng.integers(1000)),
                "session_type": kinds[k % len(kinds)],
                "age_in_days": float(rng.integers(90, 140)),
                "sex": str(rng.choice(["M", "F"])), "genotype": str(rng.choice(GENOTYPES))}
        start = datetime(2019, 1, 8, 13, 30, tzinfo=UTC) + timedelta(days=s_index)
        new_sessions.append(session_row(sid, s_index, meta, start, has_nwb=False))
        for p in L.probe_layouts(s_index, int(n_probes), 4, False, rng):
            new_probes.append(probe_row(p, sid, has_lfp=False))
            new_channels += channel_rows(p)
            inside = p.channel_ids[p.acronyms != ""]
            unit_channels.append(inside)
    # units: spread over the new probes like the real ones (a few hundred per probe), each on a
    # channel inside the brain
    per_probe = np.full(len(unit_channels), n_u // max(len(unit_channels), 1))
    per_probe[:n_u - int(per_probe.sum())] += 1
    chans = np.concatenate([rng.choice(c, int(m)) for c, m in zip(unit_channels, per_probe,
                                                                   strict=True)]) \
        if n_u else np.empty(0, np.int64)
    table = unit_metrics_table(rng, n_u)
    table["firing_rate"] = np.exp(rng.normal(1.3, 0.5, n_u))
    table["ecephys_channel_id"] = chans.astype(np.int64)
    start_id = 950_000_000 + RELEASE["sessions"] * 100_000
    table["id"] = np.arange(start_id, start_id + n_u, dtype=np.int64)
    padded = pd.concat([pd.DataFrame(units, columns=UNITS_CSV_COLUMNS),
                        table[UNITS_CSV_COLUMNS]], ignore_index=True)
    return (sessions + new_sessions, probes + new_probes, channels + new_channels, padded)
