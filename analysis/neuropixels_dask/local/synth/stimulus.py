"""The stimulus schedule of a synthetic session, as the per-stimulus presentation tables.

Blocks follow the real brain_observatory_1.1 order (spontaneous, gratings, flashes, scenes, …) and
carry the real parameter columns, so stimulus-table code written for Allen data works unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ORIENTATIONS = np.array([0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0])
TEMPORAL_FREQUENCIES = np.array([1.0, 2.0, 4.0, 8.0, 15.0])
STATIC_ORIENTATIONS = np.array([0.0, 30.0, 60.0, 90.0, 120.0, 150.0])
SPATIAL_FREQUENCIES = np.array([0.02, 0.04, 0.08, 0.16, 0.32])
#: The receptive-field mapping grid: Gabor patches centred on a 9 × 9 grid of positions, 10°
#: apart (stimulus degrees relative to the screen centre), at three orientations (the release's).
GABOR_POSITIONS = np.arange(-40.0, 41.0, 10.0)
GABOR_ORIENTATIONS = np.array([0.0, 45.0, 90.0])
GABOR_S = 0.25

#: Parameter columns of each stimulus table (in addition to the common columns).
PARAMETER_COLUMNS: dict[str, list[str]] = {
    "spontaneous": [],
    "drifting_gratings": ["orientation", "temporal_frequency", "contrast", "spatial_frequency",
                          "phase", "size", "color", "mask", "opacity", "units"],
    "flashes": ["color", "contrast", "orientation", "phase", "size", "spatial_frequency",
                "mask", "opacity", "units"],
    "static_gratings": ["orientation", "spatial_frequency", "phase", "contrast", "size", "color",
                        "mask", "opacity", "units", "temporal_frequency"],
    "natural_scenes": ["frame"],
    "gabors": ["orientation", "x_position", "y_position", "contrast", "phase", "size",
               "spatial_frequency", "temporal_frequency", "color", "mask", "opacity", "units"],
}
COMMON_COLUMNS = ["start_time", "stop_time", "stimulus_name", "stimulus_block", "stimulus_index"]


def build_schedule(preset, t_start: float, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Return ``{stimulus_name: table}``; ids are global and increase with time like the real files."""
    rows: list[dict] = []
    t = t_start
    block = 0

    def add(name: str, index: int, start: float, stop: float, **params) -> None:
        rows.append(dict(start_time=start, stop_time=stop, stimulus_name=name,
                         stimulus_block=float(block), stimulus_index=float(index), **params))

    # spontaneous (grey screen)
    add("spontaneous", 0, t, t + preset.spontaneous_s)
    t += preset.spontaneous_s
    block += 1

    # drifting gratings: 2 s on, 1 s grey, orientation × temporal frequency shuffled
    n = preset.n_drifting_gratings
    ori = np.resize(ORIENTATIONS, n)
    tf = np.resize(np.repeat(TEMPORAL_FREQUENCIES, 1), n)
    order = rng.permutation(n)
    ori, tf = ori[order], tf[rng.permutation(n)]
    for k in range(n):
        add("drifting_gratings", 2, t, t + 2.0, orientation=ori[k], temporal_frequency=tf[k],
            contrast=0.8, spatial_frequency=0.04, phase="[42471.86666667, 42471.86666667]",
            size="[250.0, 250.0]", color="[1.0, 1.0, 1.0]", mask="None", opacity=1.0,
            units="deg")
        t += 3.0
    block += 1

    # flashes: 250 ms full-field, every 2 s, alternating colour
    for k in range(preset.n_flashes):
        add("flashes", 1, t, t + 0.25, color="1.0" if k % 2 == 0 else "-1.0", contrast=0.8,
            orientation=45.0, phase="[0.0, 0.0]", size="[300.0, 300.0]",
            spatial_frequency="[0.0, 0.0]", mask="None", opacity=1.0, units="deg")
        t += 2.0
    block += 1
    t += 1.0

    # natural scenes: 250 ms each, back to back
    frames = rng.integers(-1, 118, size=preset.n_natural_scenes)
    for k in range(preset.n_natural_scenes):
        add("natural_scenes", 5, t, t + 0.25, frame=float(frames[k]))
        t += 0.25
    block += 1
    t += 1.0

    # static gratings: 250 ms each
    for _ in range(preset.n_static_gratings):
        add("static_gratings", 3, t, t + 0.25, orientation=float(rng.choice(STATIC_ORIENTATIONS)),
            spatial_frequency=float(rng.choice(SPATIAL_FREQUENCIES)),
            phase=float(rng.choice([0.0, 0.25, 0.5, 0.75])), contrast=0.8,
            size="[250.0, 250.0]", color="[1.0, 1.0, 1.0]", mask="None", opacity=1.0,
            units="deg", temporal_frequency=0.0)
        t += 0.25
    block += 1

    # Gabor patches for receptive-field mapping: 250 ms each, back to back. Each run through the
    # grid shows every position once per orientation in shuffled order (3645 = 15 runs of 243
    # in the release); a preset with fewer presentations shows every position at 0° first.
    if preset.n_gabors:
        t += 1.0
        x, y = np.meshgrid(GABOR_POSITIONS, GABOR_POSITIONS, indexing="ij")
        grid = [(o, px, py) for o in GABOR_ORIENTATIONS for px, py in zip(x.ravel(), y.ravel(),
                                                                        strict=True)]
        if preset.n_gabors < len(grid):  # the grid is orientation-major: 0° first
            order = rng.permutation(preset.n_gabors)
        else:
            runs = -(-preset.n_gabors // len(grid))
            order = np.concatenate([rng.permutation(len(grid)) for _ in range(runs)])
        for k in order[:preset.n_gabors]:
            o, px, py = grid[int(k)]
            add("gabors", 4, t, t + GABOR_S, orientation=float(o), x_position=float(px),
                y_position=float(py), contrast=0.8, phase="[3644.93333333, 3644.93333333]",
                size="[20.0, 20.0]", spatial_frequency=0.08, temporal_frequency=4.0,
                color="[1.0, 1.0, 1.0]", mask="circle", opacity=1.0, units="deg")
            t += GABOR_S
        block += 1
        t += 1.0

    # a closing spontaneous block
    add("spontaneous", 0, t, t + preset.spontaneous_s)

    df = pd.DataFrame(rows)
    df.index = pd.RangeIndex(len(df), name="stimulus_presentation_id")
    tables = {}
    for name, sub in df.groupby("stimulus_name", sort=False):
        cols = COMMON_COLUMNS + PARAMETER_COLUMNS[name]
        tables[name] = sub[cols].copy()
    return tables


def session_end(tables: dict[str, pd.DataFrame]) -> float:
    return float(max(t["stop_time"].max() for t in tables.values()))
