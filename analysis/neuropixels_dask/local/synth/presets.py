"""Sizes of the synthetic caches: tiny (unit tests), demo (a few minutes), bench (realistic scale)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Preset:
    """Every knob of the generator; presets are named instances, CLI flags override fields."""

    n_sessions: int = 2
    n_probes: int = 3
    units_per_probe: int = 30
    #: Seconds of spontaneous activity (one block at the start, one at the end).
    spontaneous_s: float = 30.0
    #: Drifting-grating trials (2 s on, 1 s grey); orientations cycle through 8 values.
    n_drifting_gratings: int = 40
    n_flashes: int = 30
    n_static_gratings: int = 60
    n_natural_scenes: int = 60
    #: Gabor patches (250 ms each) for receptive-field mapping: 81 positions × 3 orientations
    #: per run through the grid (the release shows 3645: 15 runs).
    n_gabors: int = 243
    #: LFP is kept on every ``lfp_channel_stride``-th channel (4 in the real files).
    lfp_channel_stride: int = 4
    #: A probe per session (the last) without an LFP file, as a few real probes have.
    probe_without_lfp: bool = False
    #: Pad the cache tables with catalog-only sessions to the release's size (58 sessions,
    #: 332 probes, ~99k units; ``catalog.py``): how fast a catalog opens depends on that.
    release_catalog: bool = False
    #: Optotagging trials in the epoch after the visual stimuli (``optotagging.py``).
    n_opto_trials: int = 12
    #: Size of the natural scene/movie templates relative to the release's (``templates.py``).
    template_scale: float = 0.05
    seed: int = 0

    def with_overrides(self, **kwargs: object) -> Preset:
        """Return a copy with the non-``None`` overrides applied."""
        known = {f.name for f in fields(self)}
        bad = set(kwargs) - known
        if bad:
            raise ValueError(f"unknown generator option(s) {sorted(bad)}; valid: {sorted(known)}")
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


PRESETS: dict[str, Preset] = {
    # Seconds to write; enough structure for every test (two sessions, a probe without LFP).
    "tiny": Preset(
        n_sessions=2,
        n_probes=3,
        units_per_probe=12,
        spontaneous_s=12.0,
        n_drifting_gratings=16,
        n_flashes=10,
        n_static_gratings=12,
        n_natural_scenes=12,
        n_gabors=81,
        lfp_channel_stride=16,
        probe_without_lfp=True,
    ),
    # The demo: three sessions, ~6 minutes each, real channel density.
    "demo": Preset(
        n_sessions=3,
        n_probes=3,
        units_per_probe=40,
        spontaneous_s=60.0,
        n_drifting_gratings=80,
        n_flashes=40,
        n_static_gratings=120,
        n_natural_scenes=120,
        n_gabors=243,
        n_opto_trials=60,
        template_scale=0.25,
    ),
    # Realistic scale for benchmarks: ~1 h per session, 95 LFP channels per probe (GBs in all).
    "bench": Preset(
        n_sessions=2,
        n_probes=4,
        units_per_probe=60,
        spontaneous_s=600.0,
        n_drifting_gratings=600,
        n_flashes=150,
        n_static_gratings=3000,
        n_natural_scenes=3000,
        n_gabors=729,
        n_opto_trials=300,
        template_scale=0.25,  # templates are not benchmarked
    ),
}
