"""Optotagging: the light-stimulation epoch at the end of a session and the units it tags.

In the release every session ends with an optotagging epoch (blue light over the cortex, after all
visual stimuli); in mice expressing ChR2 in a Cre line (``Sst``/``Vip``/``Pvalb-IRES-Cre;Ai32``)
the labelled interneurons fire a spike a few milliseconds after each light pulse. The session file
holds the stimulation in ``/processing/optotagging``: a ``TimeSeries`` ``optotagging``
(timestamps = onsets, data = durations) and a ``TimeIntervals`` ``optogenetic_stimulation``
with ``start_time, stop_time, condition, level, stimulus_name, duration`` (+ ``tags`` and
``timeseries``), as AllenSDK's ``OptotaggingTable.to_nwb`` writes it.

Here the epoch starts one second after the visual schedule ends, so nothing recorded before it
changes. Ground truth: which units are tagged (a fifth of the good visual-cortex units, only in
Cre sessions) and their response latency; every tagged unit fires after each pulse with
probability :data:`PULSE_SPIKE_PROBABILITY` × min(1, level).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pynwb import NWBFile, ProcessingModule, TimeSeries
from pynwb.epoch import TimeIntervals

#: (stimulus_name, condition, duration s) cycled through the trials, as in the release
CONDITIONS = [
    ("pulse", "a single square pulse", 0.01),
    ("pulse", "a single square pulse", 0.005),
    ("fast_pulses", "2.5 ms pulses at 10 Hz", 1.0),
    ("pulse", "a single square pulse", 0.01),
    ("raised_cosine", "half-period of a cosine wave", 1.0),
    ("pulse", "a single square pulse", 0.005),
]
LEVELS = [0.5, 1.0, 1.5]
TRIAL_SPACING_S = 1.5  # onset to onset (the longest condition lasts 1 s)
FRACTION_TAGGED = 0.2
PULSE_SPIKE_PROBABILITY = 0.9
LATENCY_RANGE_S = (0.002, 0.004)
LATENCY_JITTER_S = 0.0005
COSINE_PEAK_RATE = 30.0  # Hz added at the peak of the raised cosine
FAST_PULSE_PERIOD_S = 0.1


def is_cre(genotype: str) -> bool:
    """Whether the mouse expresses ChR2 in a Cre line (only then are units tagged)."""
    return "Cre" in genotype


def schedule(start: float, n_trials: int, rng: np.random.Generator) -> pd.DataFrame:
    """The stimulation table, index ``id``: one trial every :data:`TRIAL_SPACING_S` s (plus up to
    0.2 s of jitter), conditions cycled, levels drawn."""
    rows = []
    t = start
    for k in range(n_trials):
        name, condition, duration = CONDITIONS[k % len(CONDITIONS)]
        onset = t + float(rng.uniform(0, 0.2))
        rows.append({"start_time": onset, "condition": condition,
                     "level": float(rng.choice(LEVELS)), "stop_time": onset + duration,
                     "stimulus_name": name, "duration": duration})
        t += TRIAL_SPACING_S
    table = pd.DataFrame(rows, columns=["start_time", "condition", "level", "stop_time",
                                        "stimulus_name", "duration"])
    table.index.name = "id"
    return table


def evoked_spikes(table: pd.DataFrame, latency: float, rng: np.random.Generator) -> np.ndarray:
    """A tagged unit's light-evoked spikes (sorted): one per pulse (and per 2.5 ms pulse of a
    train) with probability ``PULSE_SPIKE_PROBABILITY × min(1, level)``, and a raised-cosine
    rate increase."""
    out = []
    for onset, level, name, duration in table[["start_time", "level", "stimulus_name",
                                               "duration"]].itertuples(index=False):
        p = PULSE_SPIKE_PROBABILITY * min(1.0, level)
        if name == "raised_cosine":
            # thinning of a Poisson process with the cosine-shaped rate
            n = rng.poisson(COSINE_PEAK_RATE * min(1.0, level) * duration)
            cand = rng.uniform(0, duration, n)
            keep = rng.random(n) < 0.5 * (1 - np.cos(2 * np.pi * cand / duration))
            out.append(onset + np.sort(cand[keep]))
            continue
        pulses = (onset + np.arange(0, duration, FAST_PULSE_PERIOD_S) if name == "fast_pulses"
                  else np.array([onset]))
        hit = rng.random(pulses.size) < p
        out.append(pulses[hit] + latency + rng.normal(0, LATENCY_JITTER_S, int(hit.sum())))
    return np.sort(np.concatenate(out)) if out else np.empty(0)


def add_to_nwb(nwb: NWBFile, table: pd.DataFrame) -> None:
    """``/processing/optotagging`` as AllenSDK's ``OptotaggingTable.to_nwb`` writes it."""
    ts = TimeSeries(name="optotagging", timestamps=table["start_time"].to_numpy(),
                    data=table["duration"].to_numpy(), unit="seconds")
    mod = ProcessingModule(name="optotagging", description="optogenetic stimulution data")
    mod.add(ts)
    nwb.add_processing_module(mod)
    ti = TimeIntervals(name="optogenetic_stimulation",
                       description="Optogenetic stimulation (light pulses over the cortex)")
    for col in ("condition", "level", "stimulus_name", "duration"):
        ti.add_column(name=col, description=f"{col} of the stimulation")
    for row in table.itertuples(index=False):
        ti.add_interval(start_time=float(row.start_time), stop_time=float(row.stop_time),
                        tags=["optical_stimulation"],
                        timeseries=[ts],
                        condition=row.condition, level=float(row.level),
                        stimulus_name=row.stimulus_name, duration=float(row.duration))
    mod.add(ti)
