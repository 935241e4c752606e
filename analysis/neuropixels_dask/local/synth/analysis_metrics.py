"""The release's unit analysis metrics (``*_analysis_metrics.csv``), from the planted model.

The real release ships precomputed stimulus metrics per unit: ``session_<sid>/
session_<sid>_analysis_metrics.csv`` and ``<session_type>_analysis_metrics.csv`` at the cache root,
indexed by ``ecephys_unit_id`` (AllenSDK reads them with ``pd.read_csv(path,
index_col='ecephys_unit_id')``). Their columns are the ``METRICS_COLUMNS`` of AllenSDK's
``stimulus_analysis`` classes, ordered as the published files order them (by name length, then
name: the order the warehouse returns).

Here every value is **ground truth**: it is computed from each unit's firing *intensity* (the rate
the spikes were drawn from, ``model.unit_rate``), not from the noisy spikes, so an analysis of the
spikes should recover it within sampling error. Where the model plants a value it is written
exactly: the preferred orientation of a tuned visual unit, the analytic global OSI/DSI of its
tuning curve (0 for units without tuning), the flash latency of a flash-responsive unit, the
receptive-field centre of a visual or thalamic unit (``azimuth_rf``, ``elevation_rf``: the planted
centre in AllenSDK's degrees, :func:`rf_degrees`). Metrics the model has no ground truth for (the
thresholded RF's area and the Gaussian fit's width and height, which depend on the estimator;
Fano factors and running modulation: the model has neither) are NaN, and ``*_multi_*`` flags are
False (the model plants a single preference).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...kernels import responses as R
from . import model as M
from .layout import area_family

#: ``METRICS_COLUMNS`` of AllenSDK 2.16's drifting/static gratings, natural scenes, flashes and
#: receptive-field analyses, as brain_observatory_1.1 sessions publish them.
BOOL_COLUMNS = ["on_screen_rf", "pref_sf_multi_sg", "pref_tf_multi_dg", "pref_ori_multi_dg",
                "pref_ori_multi_sg", "pref_phase_multi_sg", "pref_image_multi_ns"]
FLOAT_COLUMNS = [
    "c50_dg", "area_rf", "fano_dg", "fano_fl", "fano_ns", "fano_rf", "fano_sg", "f1_f0_dg",
    "g_dsi_dg", "g_osi_dg", "g_osi_sg", "azimuth_rf", "mod_idx_dg", "p_value_rf", "pref_sf_sg",
    "pref_tf_dg", "run_mod_dg", "run_mod_fl", "run_mod_ns", "run_mod_rf", "run_mod_sg",
    "pref_ori_dg", "pref_ori_sg", "run_pval_dg", "run_pval_fl", "run_pval_ns", "run_pval_rf",
    "run_pval_sg", "elevation_rf", "pref_image_ns", "pref_phase_sg", "firing_rate_dg",
    "firing_rate_fl", "firing_rate_ns", "firing_rate_rf", "firing_rate_sg", "on_off_ratio_fl",
    "time_to_peak_fl", "time_to_peak_ns", "time_to_peak_rf", "time_to_peak_sg",
    "sustained_idx_fl", "image_selectivity_ns", "lifetime_sparseness_dg",
    "lifetime_sparseness_fl", "lifetime_sparseness_ns", "lifetime_sparseness_rf",
    "lifetime_sparseness_sg", "width_rf", "height_rf"]
#: The published order: by length of the name, then alphabetically.
COLUMNS = sorted(FLOAT_COLUMNS + BOOL_COLUMNS, key=lambda c: (len(c), c))
INDEX = "ecephys_unit_id"


def selectivity(orientations_deg: np.ndarray, tuning: np.ndarray, order: int) -> float:
    """Global selectivity as AllenSDK computes it: ``|Σ r·e^{i·order·θ}| / Σ r`` (order 2: OSI,
    order 1: DSI); NaN when the unit never fires."""
    total = float(np.sum(tuning))
    if total == 0.0:
        return float("nan")
    if np.ptp(tuning) == 0.0:
        return 0.0  # flat: exactly unselective (the sum below leaves ~1e-17)
    theta = np.deg2rad(orientations_deg)
    return float(np.abs(np.sum(tuning * np.exp(1j * order * theta))) / total)


def lifetime_sparseness(responses: np.ndarray) -> float:
    """AllenSDK's lifetime sparseness of per-condition responses (Vinje & Gallant)."""
    r = np.asarray(responses, float)
    if r.size < 2 or not np.any(r):
        return float("nan")
    n = r.size
    return float((1.0 - (r.sum() ** 2) / (n * np.sum(r ** 2))) / (1.0 - 1.0 / n))


def planted_tuning(orientations_deg: np.ndarray, preferred: float | None) -> np.ndarray:
    """The model's rate gain at each orientation during gratings (1 without tuning)."""
    if preferred is None:
        return np.ones(len(orientations_deg))
    d = np.deg2rad(np.asarray(orientations_deg) - preferred)
    return 1.0 + M.TUNING_GAIN * np.exp(M.TUNING_KAPPA * (np.cos(d) - 1.0))


def _window_means(rate: np.ndarray, model: M.SessionModel, table: pd.DataFrame) -> np.ndarray:
    """Mean intensity (Hz) over each presentation of ``table``."""
    csum = np.concatenate([[0.0], np.cumsum(rate)])
    i0 = np.asarray(model.index(table["start_time"].to_numpy()))
    i1 = np.maximum(np.asarray(model.index(table["stop_time"].to_numpy())), i0 + 1)
    i1 = np.minimum(i1, rate.size)
    return (csum[i1] - csum[i0]) / np.maximum(i1 - i0, 1)


def _by(means: np.ndarray, table: pd.DataFrame, col: str) -> pd.Series:
    """Mean of ``means`` per value of ``table[col]`` (sorted values; bincount, not groupby:
    this runs for every unit and parameter)."""
    keys, inverse = np.unique(table[col].to_numpy(), return_inverse=True)
    return pd.Series(np.bincount(inverse, means) / np.bincount(inverse), index=keys)


def rf_degrees(x: float, y: float, table: pd.DataFrame) -> tuple[float, float]:
    """A point ``(x_position, y_position)`` of the Gabor grid in ``table``, in the release's
    ``azimuth_rf`` / ``elevation_rf`` degrees (:func:`kernels.responses.grid_degrees`)."""
    return (float(R.grid_degrees(x, table["x_position"], R.RF_AZIMUTH_OFFSET)),
            float(R.grid_degrees(y, table["y_position"], R.RF_ELEVATION_OFFSET)))


def unit_metrics(rate: np.ndarray, model: M.SessionModel, truth: M.UnitTruth) -> dict:
    """One unit's row of the analysis-metrics table (see the module docstring)."""
    row: dict = {c: np.nan for c in FLOAT_COLUMNS}
    row.update({c: False for c in BOOL_COLUMNS})
    tables = model.tables
    dg = tables.get("drifting_gratings")
    if dg is not None and len(dg):
        means = _window_means(rate, model, dg)
        row["firing_rate_dg"] = float(means.mean())
        ori = np.unique(dg["orientation"].to_numpy(float))
        tuned = truth.preferred_orientation is not None and truth.quality != "noise"
        gain = planted_tuning(ori, truth.preferred_orientation if tuned else None)
        row["g_osi_dg"] = selectivity(ori, gain, 2)
        row["g_dsi_dg"] = selectivity(ori, gain, 1)
        by_ori = _by(means, dg, "orientation")
        row["pref_ori_dg"] = (float(truth.preferred_orientation) if tuned
                              else float(by_ori.idxmax()))
        at_pref = dg["orientation"].to_numpy(float) == row["pref_ori_dg"]
        sub = dg[at_pref] if at_pref.any() else dg
        row["pref_tf_dg"] = float(_by(means[at_pref] if at_pref.any() else means, sub,
                                      "temporal_frequency").idxmax())
        row["lifetime_sparseness_dg"] = lifetime_sparseness(by_ori.to_numpy())
    sg = tables.get("static_gratings")
    if sg is not None and len(sg):
        means = _window_means(rate, model, sg)
        row["firing_rate_sg"] = float(means.mean())
        by_ori = _by(means, sg, "orientation")
        row["pref_ori_sg"] = float(by_ori.idxmax())
        row["pref_sf_sg"] = float(_by(means, sg, "spatial_frequency").idxmax())
        row["pref_phase_sg"] = float(_by(means, sg, "phase").idxmax())
        # no static-grating tuning is planted: the truth is "not selective"
        row["g_osi_sg"] = 0.0
        row["lifetime_sparseness_sg"] = lifetime_sparseness(by_ori.to_numpy())
    ns = tables.get("natural_scenes")
    if ns is not None and len(ns):
        means = _window_means(rate, model, ns)
        row["firing_rate_ns"] = float(means.mean())
        by_img = _by(means, ns, "frame")
        row["pref_image_ns"] = float(by_img.idxmax())
        row["lifetime_sparseness_ns"] = lifetime_sparseness(by_img.to_numpy())
    fl = tables.get("flashes")
    if fl is not None and len(fl):
        means = _window_means(rate, model, fl)
        row["firing_rate_fl"] = float(means.mean())
        by_col = _by(means, fl, "color")
        if {"1.0", "-1.0"} <= set(by_col.index) and by_col["-1.0"] > 0:
            row["on_off_ratio_fl"] = float(by_col["1.0"] / by_col["-1.0"])
        fam = area_family(truth.area)
        if truth.flash_responsive and truth.quality != "noise" and fam in M.FLASH_LATENCY:
            row["time_to_peak_fl"] = float(M.FLASH_LATENCY[fam])
    gb = tables.get("gabors")
    if gb is not None and len(gb):
        means = _window_means(rate, model, gb)
        row["firing_rate_rf"] = float(means.mean())
        if truth.rf_centre is not None and truth.quality != "noise":
            row["azimuth_rf"], row["elevation_rf"] = rf_degrees(*truth.rf_centre, gb)
            row["on_screen_rf"] = True
    return row


def table(rows: dict[int, dict]) -> pd.DataFrame:
    """Rows ``{unit_id: metrics}`` as the published CSV's frame (index ``ecephys_unit_id``)."""
    df = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS)
    df.index = pd.Index(np.asarray(list(rows), dtype=np.int64), name=INDEX)
    for c in BOOL_COLUMNS:
        df[c] = df[c].astype(bool)
    return df
