"""Identifiers, probes, channels and brain structures of a synthetic session.

Geometry follows Neuropixels 1.0 as the Allen files describe it: 384 channels, local index 0 at the
tip, two columns, 20 µm vertical pitch; the deepest structures sit at low local indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_CHANNELS = 384
PROBE_NAMES = ("probeA", "probeB", "probeC", "probeD", "probeE", "probeF")
#: The visual area each probe targets in the real experiment.
PROBE_VISUAL_AREA = {
    "probeA": "VISam",
    "probeB": "VISpm",
    "probeC": "VISp",
    "probeD": "VISl",
    "probeE": "VISal",
    "probeF": "VISrl",
}
#: Thalamic nucleus under each probe's cortex (roughly as in the Allen atlas).
PROBE_THALAMUS = {
    "probeA": "LP",
    "probeB": "LP",
    "probeC": "LGd",
    "probeD": "LGd",
    "probeE": "LP",
    "probeF": "LP",
}
STRUCTURE_IDS = {"VISp": 385, "VISl": 409, "VISal": 402, "VISrl": 417, "VISam": 394,
                 "VISpm": 533, "CA1": 382, "DG": 726, "LGd": 170, "LP": 218}
RAW_SAMPLING_RATE = 30000.0
#: ``lfp_sampling_rate`` in probes.csv is the raw LFP band rate; the files hold it subsampled by 2.
RAW_LFP_SAMPLING_RATE = 2500.0
LFP_SUBSAMPLING = 2
#: h5py's automatic chunking of the real LFP datasets: one channel × ~37.6 s.
LFP_CHUNKS = (46989, 1)
LFP_VOLTS_PER_BIT = 0.195e-6


def area_family(acronym: str) -> str:
    """'visual', 'hippocampus', 'thalamus' or '' (outside the brain)."""
    if acronym.startswith("VIS"):
        return "visual"
    if acronym in ("CA1", "DG", "CA3"):
        return "hippocampus"
    if acronym in ("LGd", "LP"):
        return "thalamus"
    return ""


@dataclass(frozen=True)
class ProbeLayout:
    probe_id: int
    name: str
    channel_ids: np.ndarray  # (384,)
    acronyms: np.ndarray  # (384,) object, '' outside the brain
    vertical: np.ndarray  # µm from the tip
    horizontal: np.ndarray
    surface_channel_index: int
    air_channel_index: int
    lfp_local_indices: np.ndarray  # the channels kept in the LFP file, in column order
    lfp_sampling_rate: float  # nominal (raw-band) rate as in probes.csv
    has_lfp: bool
    ccf: np.ndarray  # (384, 3) AP, DV, LR in µm


def session_ids(n_sessions: int, seed: int) -> list[int]:
    """Nine-digit ids in the range the real sessions use (715093703, 719161530, …)."""
    rng = np.random.default_rng(seed)
    base = 715093703
    steps = rng.integers(1_000_000, 9_000_000, size=n_sessions)
    return [int(base + s) for s in np.cumsum(steps) - steps[0]]


def probe_layouts(session_index: int, n_probes: int, lfp_stride: int, without_lfp: bool,
                  rng: np.random.Generator) -> list[ProbeLayout]:
    """Probes of the ``session_index``-th session with their channel → structure map.

    Ids are unique across the cache: probes 760_0SS_00P, channels 850_SSP_LLL.
    """
    if n_probes > len(PROBE_NAMES):
        raise ValueError(f"at most {len(PROBE_NAMES)} probes per session (probeA…probeF)")
    layouts = []
    for p in range(n_probes):
        name = PROBE_NAMES[p]
        probe_id = 760_000_000 + session_index * 1000 + p * 10
        local = np.arange(N_CHANNELS)
        # Structure boundaries (local index), jittered per probe like real insertions.
        j = rng.integers(-8, 9, size=4)
        b_thal, b_dg, b_ca1, b_ctx = 70 + j[0], 130 + j[1], 175 + j[2], 275 + j[3]
        acr = np.full(N_CHANNELS, "", dtype=object)
        acr[:b_thal] = PROBE_THALAMUS[name]
        acr[b_thal:b_dg] = "DG"
        acr[b_dg:b_ca1] = "CA1"
        acr[b_ca1:b_ctx] = PROBE_VISUAL_AREA[name]
        surface = int(b_ctx)
        vertical = 20.0 + 20.0 * (local // 2)
        horizontal = np.array([43.0, 11.0, 59.0, 27.0])[local % 4]
        # LFP: every stride-th channel from the tip up to just above the brain surface.
        top = min(N_CHANNELS, surface + 2 * lfp_stride)
        lfp_local = np.arange(2 % lfp_stride if lfp_stride > 2 else 0, top, lfp_stride)
        ap = 8000.0 + 300 * p + 0.0 * local
        dv = 4500.0 - vertical
        lr = 7600.0 + 200 * p + 0.0 * local
        ccf = np.stack([ap, dv, lr], axis=1)
        ccf[acr == ""] = -1.0
        layouts.append(
            ProbeLayout(
                probe_id=probe_id,
                name=name,
                channel_ids=850_000_000 + (session_index * 10 + p) * 1000 + local,
                acronyms=acr,
                vertical=vertical,
                horizontal=horizontal,
                surface_channel_index=surface,
                air_channel_index=min(N_CHANNELS - 1, surface + 40),
                lfp_local_indices=lfp_local,
                lfp_sampling_rate=RAW_LFP_SAMPLING_RATE + float(rng.uniform(-0.02, 0.02)),
                has_lfp=not (without_lfp and p == n_probes - 1),
                ccf=ccf,
            )
        )
    return layouts
