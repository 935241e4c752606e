"""The generative model: what drives spikes and LFP, and the ground truth it implies.

Everything is a function of time on a coarse grid (``GRID_DT``) shared by all probes of a session,
so that areas on different probes can share latent fluctuations:

* **Visual cortex** units are orientation tuned during drifting gratings and respond to flashes;
  their LFP carries narrowband gamma (``GAMMA_HZ``) whose amplitude rises during gratings.
* **Hippocampus** (CA1, DG): theta (``THETA_HZ``) in the LFP and theta-modulated firing.
* **Thalamus** (LGd, LP): a spindle-band rhythm (``SPINDLE_HZ``) and fast flash responses.
* **Receptive fields**: visual and thalamic units fire more while a Gabor patch is shown near
  their planted receptive-field centre (a Gaussian of ``RF_SIGMA_DEG`` around it, peak gain
  ``RF_GAIN``), so the Gabor mapping stimulus recovers the centre.
* **Cross-area coupling**: during drifting gratings one latent gain signal drives *all* visual
  areas (across probes), so spike-count and gamma-power correlations between areas are high; in
  other epochs each area has its own latent, so those correlations are low.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import signal

from .layout import area_family

GRID_DT = 0.005  # s: resolution of rates and latents
THETA_HZ = 8.0
GAMMA_HZ = 40.0
SPINDLE_HZ = 12.0
#: LFP amplitude (V) of each family's rhythm; gamma amplitude is multiplied by GAMMA_GRATING_GAIN
#: during drifting gratings (power × GAIN²).
RHYTHM = {"hippocampus": (THETA_HZ, 120e-6), "visual": (GAMMA_HZ, 12e-6),
          "thalamus": (SPINDLE_HZ, 30e-6)}
GAMMA_GRATING_GAIN = 3.0
#: Strength of latent gain modulation of firing (fraction of the baseline rate).
LATENT_COUPLING = 0.6
LATENT_TAU = 0.1  # s
TUNING_GAIN = 2.5  # rate at the preferred orientation = base × (1 + TUNING_GAIN)
TUNING_KAPPA = 2.0
FLASH_GAIN = 4.0
FLASH_LATENCY = {"visual": 0.045, "thalamus": 0.030}
FLASH_WIDTH = 0.04
THETA_SPIKE_MODULATION = 0.5
#: Receptive fields: rate × (1 + RF_GAIN · exp(−d² / 2σ²)) while a Gabor patch is shown at distance
#: d (stimulus degrees) from the unit's centre; centres are drawn inside ±RF_CENTRE_RANGE_DEG.
RF_GAIN = 8.0
RF_SIGMA_DEG = 8.0
RF_CENTRE_RANGE_DEG = 30.0
RF_FAMILIES = ("visual", "thalamus")


def _latent(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance low-pass noise (AR(1) with time constant LATENT_TAU)."""
    a = np.exp(-GRID_DT / LATENT_TAU)
    x = signal.lfilter([np.sqrt(1 - a * a)], [1, -a], rng.standard_normal(n))
    return (x / (x.std() + 1e-12)).astype(np.float64)


@dataclass
class SessionModel:
    """Time courses shared by every probe of one session."""

    t0: float
    n_grid: int
    tables: dict[str, pd.DataFrame]
    areas: list[str]
    rng_seed: int
    in_gratings: np.ndarray = field(init=False)
    orientation: np.ndarray = field(init=False)
    flash_onsets: np.ndarray = field(init=False)
    latent_shared: np.ndarray = field(init=False)
    latent_area: dict[str, np.ndarray] = field(init=False)
    theta_phase: np.ndarray = field(init=False)
    #: position (stimulus degrees) of the Gabor patch on screen at each grid step; NaN: none
    gabor_x: np.ndarray = field(init=False)
    gabor_y: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.rng_seed)
        self.in_gratings = np.zeros(self.n_grid, bool)
        self.orientation = np.full(self.n_grid, np.nan)
        dg = self.tables.get("drifting_gratings")
        if dg is not None:
            for start, stop, ori in dg[["start_time", "stop_time", "orientation"]].itertuples(
                    index=False):
                i0, i1 = self.index(start), self.index(stop)
                self.in_gratings[i0:i1] = True
                self.orientation[i0:i1] = ori
        self.gabor_x = np.full(self.n_grid, np.nan)
        self.gabor_y = np.full(self.n_grid, np.nan)
        gb = self.tables.get("gabors")
        if gb is not None:
            for start, stop, x, y in gb[["start_time", "stop_time", "x_position",
                                         "y_position"]].itertuples(index=False):
                i0, i1 = self.index(start), self.index(stop)
                self.gabor_x[i0:i1], self.gabor_y[i0:i1] = x, y
        fl = self.tables.get("flashes")
        self.flash_onsets = (fl["start_time"].to_numpy() if fl is not None else np.array([]))
        self.latent_shared = _latent(self.n_grid, rng)
        self.latent_area = {a: _latent(self.n_grid, rng) for a in self.areas}
        # theta phase drifts (loses coherence over ~1 s), so spikes are theta-modulated without
        # phase-locking to a stimulus schedule that happens to be periodic
        dphi = 2 * np.pi * THETA_HZ * GRID_DT + 0.15 * rng.standard_normal(self.n_grid)
        self.theta_phase = rng.uniform(0, 2 * np.pi) + np.cumsum(dphi)

    def index(self, t: float | np.ndarray) -> np.ndarray | int:
        return np.clip(np.round((np.asarray(t) - self.t0) / GRID_DT).astype(int), 0, self.n_grid)

    @property
    def grid_times(self) -> np.ndarray:
        return self.t0 + GRID_DT * np.arange(self.n_grid)

    def modulation(self, area: str) -> np.ndarray:
        """Latent gain of ``area``: shared across visual areas during gratings, private otherwise."""
        own = self.latent_area[area]
        if area_family(area) == "visual":
            return np.where(self.in_gratings, self.latent_shared, own)
        return own

    def flash_drive(self, family: str) -> np.ndarray:
        """Sum of Gaussian transients after each flash onset (0 for families that don't respond)."""
        out = np.zeros(self.n_grid)
        if family not in FLASH_LATENCY or self.flash_onsets.size == 0:
            return out
        kernel_t = np.arange(0, 0.2, GRID_DT)
        kernel = np.exp(-0.5 * ((kernel_t - FLASH_LATENCY[family]) / (FLASH_WIDTH / 2)) ** 2)
        for onset in self.flash_onsets:
            i0 = int(self.index(onset))
            n = min(kernel.size, self.n_grid - i0)
            out[i0:i0 + n] += kernel[:n]
        return out


@dataclass(frozen=True)
class UnitTruth:
    unit_id: int
    area: str
    base_rate: float
    preferred_orientation: float | None
    flash_responsive: bool
    quality: str
    #: receptive-field centre ``(x_position, y_position)`` in the Gabor stimulus's degrees
    rf_centre: tuple[float, float] | None = None


def rf_drive(model: SessionModel, centre: tuple[float, float]) -> np.ndarray:
    """``RF_GAIN · exp(−d²/2σ²)`` on the session grid: 0 where no Gabor patch is shown."""
    d2 = (model.gabor_x - centre[0]) ** 2 + (model.gabor_y - centre[1]) ** 2
    return np.nan_to_num(RF_GAIN * np.exp(-d2 / (2 * RF_SIGMA_DEG ** 2)))


def unit_rate(model: SessionModel, truth: UnitTruth, flash: np.ndarray) -> np.ndarray:
    """Firing rate (Hz) of one unit on the session grid."""
    fam = area_family(truth.area)
    gain = 1.0 + LATENT_COUPLING * model.modulation(truth.area)
    rate = truth.base_rate * np.ones(model.n_grid)
    if truth.quality == "noise":
        return rate  # noise clusters: flat, unstructured
    if fam == "visual" and truth.preferred_orientation is not None:
        d = np.deg2rad(np.nan_to_num(model.orientation) - truth.preferred_orientation)
        tune = TUNING_GAIN * np.exp(TUNING_KAPPA * (np.cos(d) - 1.0))
        rate = rate * (1.0 + np.where(model.in_gratings, tune, 0.0))
    if fam == "hippocampus":
        rate = rate * (1.0 + THETA_SPIKE_MODULATION * np.sin(model.theta_phase))
    if truth.flash_responsive:
        rate = rate * (1.0 + FLASH_GAIN * flash)
    if truth.rf_centre is not None:
        rate = rate * (1.0 + rf_drive(model, truth.rf_centre))
    return np.clip(rate * gain, 0.0, None)


def spikes_from_rate(rate: np.ndarray, t0: float, rng: np.random.Generator) -> np.ndarray:
    """Inhomogeneous Poisson spike times from a piecewise-constant rate, sorted float64."""
    counts = rng.poisson(rate * GRID_DT)
    idx = np.repeat(np.arange(rate.size), counts)
    times = t0 + (idx + rng.random(idx.size)) * GRID_DT
    times.sort()
    return times


class LFPSynthesizer:
    """Produces a probe's LFP block by block, sequentially, with bounded memory.

    State (noise filters, rhythm phases) is carried from one block to the next, so the signal is
    continuous across blocks; blocks must be requested in order (``block(start, stop)``).
    """

    BACKGROUND_V = 40e-6
    COMMON_V = 25e-6

    #: Full scale of the int16 LFP (V): where gain-fluctuation artefacts saturate.
    SATURATION_V = 32767 * 0.195e-6

    def __init__(self, model: SessionModel, acronyms: np.ndarray, timestamps_t0: float,
                 fs: float, seed: int,
                 corrupt: list[tuple[float, float, str]] | None = None,
                 evoked: np.ndarray | None = None):
        self.model = model
        #: per channel: the flash-evoked potential's amplitude (V at its peak; ``csd.py``)
        self.evoked = evoked
        #: ``(start, stop, 'saturate' | 'flat')``: invalid intervals (``invalid_times.py``)
        self.corrupt = corrupt or []
        self.acronyms = acronyms
        self.fs = fs
        self.t0 = timestamps_t0
        self.rng = np.random.default_rng(seed)
        self.pos = 0
        n_ch = len(acronyms)
        self.families = np.array([area_family(a) for a in acronyms])
        # 1/f-like background: AR(1) per channel + a common component (volume conduction).
        self.a = 0.985
        self.zi = np.zeros((1, n_ch))
        self.zc = np.zeros(1)
        self.phase = {a: float(self.rng.uniform(0, 2 * np.pi)) for a in set(acronyms) if a}
        self.depth_gain = np.linspace(0.7, 1.3, n_ch)

    def block(self, start: int, stop: int) -> np.ndarray:
        if start != self.pos:
            raise ValueError(f"LFP blocks must be generated in order (expected {self.pos})")
        n = stop - start
        n_ch = len(self.acronyms)
        t = self.t0 + (start + np.arange(n)) / self.fs
        b = [np.sqrt(1 - self.a**2)]
        noise, self.zi = signal.lfilter(b, [1, -self.a], self.rng.standard_normal((n, n_ch)),
                                        axis=0, zi=self.zi)
        common, self.zc = signal.lfilter(b, [1, -self.a], self.rng.standard_normal(n),
                                         zi=self.zc)
        out = self.BACKGROUND_V * noise + self.COMMON_V * common[:, None]
        out += 3e-6 * self.rng.standard_normal((n, n_ch))  # white floor
        gi = np.clip(((t - self.model.t0) / GRID_DT).astype(int), 0, self.model.n_grid - 1)
        for area in self.phase:
            fam = area_family(area)
            if fam not in RHYTHM:
                continue
            f, amp = RHYTHM[fam]
            # phase diffusion gives the rhythm a spectral peak of finite width
            dphi = 2 * np.pi * f / self.fs + 0.02 * self.rng.standard_normal(n)
            phi = self.phase[area] + np.cumsum(dphi)
            self.phase[area] = float(phi[-1] % (2 * np.pi))
            envelope = np.ones(n)
            if fam == "visual":
                envelope = np.where(self.model.in_gratings[gi], GAMMA_GRATING_GAIN, 1.0)
                envelope = envelope * np.clip(1.0 + 0.5 * self.model.modulation(area)[gi], 0.1,
                                              None)
            rhythm = amp * envelope * np.sin(phi)
            cols = self.acronyms == area
            out[:, cols] += rhythm[:, None] * self.depth_gain[cols][None, :]
        if self.evoked is not None and np.any(self.evoked):
            from .csd import kernel

            reach = 1.0  # s after onset; the kernel is < 1e-15 of its peak by then
            near = self.model.flash_onsets[(self.model.flash_onsets < t[-1])
                                           & (self.model.flash_onsets + reach > t[0])]
            for onset in near:
                k = np.where(t - onset < reach, kernel(t - onset), 0.0)
                out += k[:, None] * self.evoked[None, :]
        for a, b, kind in self.corrupt:
            inside = (t >= a) & (t <= b)
            if inside.any():
                out[inside] = (0.0 if kind == "flat" else
                               np.clip(out[inside] * 200.0, -self.SATURATION_V,
                                       self.SATURATION_V))
        self.pos = stop
        # Real LFP is int16 × 0.195 µV stored as float32 volts: quantize the same way.
        q = 0.195e-6
        # + 0.0 turns -0.0 into 0.0: the real files, int16 counts × scale, have no negative zero
        return (np.round(out / q) * q + 0.0).astype(np.float32)
