"""Generate a whole synthetic cache: tables, manifest, NWB files and the ground-truth sidecar.

Sessions are generated in parallel processes (one session each) with bounded memory: LFP is
synthesised and compressed a few storage chunks at a time, never a whole probe at once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import analysis_metrics as AM
from . import catalog as C
from . import csd as CSD
from . import eye_tracking as EYE
from . import invalid_times as IT
from . import layout as L
from . import model as M
from . import optotagging as OPTO
from . import templates as TPL
from .nwb_writer import UNIT_METRICS, session_start, write_lfp_nwb, write_session_nwb
from .presets import PRESETS, Preset
from .stimulus import build_schedule, session_end

GROUND_TRUTH_FILE = "synthetic_ground_truth.json"
STIMULUS_START = 20.0  # s; LFP timestamps start near 13.6 s as in the real files


def manifest() -> dict:
    """``manifest.json`` exactly as AllenSDK 2.16's ``EcephysProjectCache`` writes it (version
    0.3.0): every key its cache resolves paths with, in its order."""
    def entry(key: str, kind: str, spec: str, parent: str = "BASEDIR") -> dict:
        return {"key": key, "type": kind, "spec": spec, "parent_key": parent}

    return {"manifest": [
        {"type": "manifest_version", "value": "0.3.0"},
        {"key": "BASEDIR", "type": "dir", "spec": "."},
        *(entry(k, "file", f"{k}.csv") for k in ("sessions", "probes", "channels", "units")),
        entry("session_data", "dir", "session_%d"),
        entry("session_nwb", "file", "session_%d.nwb", "session_data"),
        entry("session_analysis_metrics", "file", "session_%d_analysis_metrics.csv",
              "session_data"),
        entry("probe_lfp_nwb", "file", "probe_%d_lfp.nwb", "session_data"),
        entry("movie_dir", "dir", "natural_movie_templates"),
        entry("typewise_analysis_metrics", "file", "%s_analysis_metrics.csv"),
        entry("natural_movie", "file", "natural_movie_%d.h5", "movie_dir"),
        entry("natural_scene_dir", "dir", "natural_scene_templates"),
        entry("natural_scene", "file", "natural_scene_%d.tiff", "natural_scene_dir"),
    ]}


def _mean_waveform(peak: int, amplitude_uv: float) -> np.ndarray:
    """``(384 channels, 82 samples)`` float32 volts: a spike shape that decays away from the peak
    channel, as ``waveform_mean`` holds one per unit."""
    from .nwb_writer import WAVEFORM_SAMPLES

    t = np.arange(WAVEFORM_SAMPLES) / 30.0  # ms at 30 kHz
    shape = -np.exp(-0.5 * ((t - 1.0) / 0.15) ** 2) + 0.35 * np.exp(-0.5 * ((t - 1.5) / 0.3) ** 2)
    dist = np.abs(np.arange(L.N_CHANNELS) - peak)
    gain = np.exp(-dist / 6.0)
    return (amplitude_uv * 1e-6 * gain[:, None] * shape[None, :]).astype(np.float32)


def _session_task(args: tuple) -> dict:
    """Generate and write one session; returns its table rows and ground truth."""
    preset, s_index, session_id, out_dir, show_progress = args
    rng = np.random.default_rng([preset.seed, s_index])
    probes = L.probe_layouts(s_index, preset.n_probes, preset.lfp_channel_stride,
                             preset.probe_without_lfp, rng)
    tables = build_schedule(preset, STIMULUS_START, rng)
    duration = session_end(tables) + 5.0
    areas = sorted({a for p in probes for a in p.acronyms if a})
    model = M.SessionModel(t0=0.0, n_grid=int(np.ceil(duration / M.GRID_DT)), tables=tables,
                           areas=areas, rng_seed=int(rng.integers(2**31)))
    meta = {
        "specimen_id": int(700_000_000 + s_index * 1000 + rng.integers(1000)),
        "session_type": "brain_observatory_1.1",
        "age_in_days": float(rng.integers(90, 140)),
        "sex": str(rng.choice(["M", "F"])),
        "genotype": str(rng.choice(C.GENOTYPES)),
    }
    start = session_start(s_index)
    # invalid intervals in the last session of a multi-session cache (the first stays clean)
    invalid = (IT.plant(session_id, probes, tables)
               if preset.n_sessions > 1 and s_index == preset.n_sessions - 1 else None)
    # the extras draw from their own streams: what the main stream draws stays as it was
    inv_rng = np.random.default_rng([preset.seed, s_index, 24])
    opto_rng = np.random.default_rng([preset.seed, s_index, 25])
    rf_rng = np.random.default_rng([preset.seed, s_index, 27])
    # optotagging after the visual schedule: the recording runs on past the model's grid
    opto = OPTO.schedule(duration + 1.0, preset.n_opto_trials, opto_rng)
    end = (float(opto["stop_time"].max()) + 2.0) if len(opto) else duration
    cre = OPTO.is_cre(meta["genotype"])

    # ---- units and spikes
    flash = {fam: model.flash_drive(fam) for fam in ("visual", "thalamus", "hippocampus")}
    unit_rows, spikes, amps, waves, truths, metric_rows = [], [], [], [], {}, {}
    uid = 950_000_000 + s_index * 100_000
    for p_i, p in enumerate(probes):
        in_brain = np.flatnonzero(p.acronyms != "")
        peaks = np.sort(rng.choice(in_brain, size=preset.units_per_probe,
                                   replace=len(in_brain) < preset.units_per_probe))
        for local_unit, ch in enumerate(peaks):
            area = str(p.acronyms[ch])
            fam = L.area_family(area)
            quality = "noise" if rng.random() < 0.1 else "good"
            fail = None
            if quality == "good" and rng.random() < 0.25:
                fail = str(rng.choice(["amplitude_cutoff", "presence_ratio", "isi_violations"]))
            truth = M.UnitTruth(
                unit_id=uid, area=area, base_rate=float(np.exp(rng.normal(1.3, 0.5))),
                preferred_orientation=(float(rng.choice(L_ORI)) if fam == "visual" else None),
                flash_responsive=fam in M.FLASH_LATENCY and rng.random() < 0.8, quality=quality,
                rf_centre=(tuple(float(v) for v in rf_rng.uniform(-M.RF_CENTRE_RANGE_DEG,
                                                                  M.RF_CENTRE_RANGE_DEG, 2))
                           if fam in M.RF_FAMILIES else None))
            rate = M.unit_rate(model, truth, flash[fam or "hippocampus"])
            st = M.spikes_from_rate(rate, model.t0, rng)
            if quality == "good":
                metric_rows[uid] = AM.unit_metrics(rate, model, truth)
            del rate
            metrics = C.unit_metrics(rng, quality, fail)
            amp = metrics["amplitude"] * 1e-6 * rng.lognormal(0, 0.2, st.size)
            # after the grid: baseline firing, plus light-evoked spikes of tagged units
            tagged = bool(cre and fam == "visual" and quality == "good"
                          and opto_rng.random() < OPTO.FRACTION_TAGGED)
            latency = float(opto_rng.uniform(*OPTO.LATENCY_RANGE_S)) if tagged else None
            extra = duration + np.sort(opto_rng.uniform(0, end - duration,
                                                        opto_rng.poisson(truth.base_rate
                                                                         * (end - duration))))
            if tagged:
                extra = np.sort(np.concatenate([extra, OPTO.evoked_spikes(opto, latency,
                                                                           opto_rng)]))
            st = np.concatenate([st, extra])
            amp = np.concatenate([amp, metrics["amplitude"] * 1e-6
                                  * opto_rng.lognormal(0, 0.2, extra.size)])
            if invalid is not None:
                keep = IT.spike_mask(st, IT.probe_intervals(invalid, p), inv_rng)
                st, amp = st[keep], amp[keep]
            metrics["firing_rate"] = st.size / end
            unit_rows.append({"id": uid, "cluster_id": local_unit + 3 * p_i,
                              "local_index": local_unit, "peak_channel_id": int(p.channel_ids[ch]),
                              "quality": quality, **metrics})
            spikes.append(st)
            amps.append(amp)
            waves.append(_mean_waveform(ch, metrics["amplitude"]))
            truths[str(uid)] = {**asdict(truth), "probe_id": p.probe_id, "fails_filter": fail,
                                "n_spikes": int(st.size), "optotagged": tagged,
                                "opto_latency_s": latency,
                                "waveform_peak_channel_id": int(p.channel_ids[ch])}
            uid += 1
    units = pd.DataFrame(unit_rows).set_index("id")

    # ---- running speed, 60 Hz
    rt = np.arange(0.0, duration, 1 / 60.0)
    walk = np.cumsum(rng.normal(0, 0.5, rt.size))
    # on through the optotagging epoch (own stream)
    rt_tail = np.arange(rt[-1] + 1 / 60.0, end, 1 / 60.0)
    walk = np.concatenate([walk, walk[-1] + np.cumsum(opto_rng.normal(0, 0.5, rt_tail.size))])
    rt = np.concatenate([rt, rt_tail])
    speed = np.abs(walk) % 40.0
    eye = EYE.simulate(end, (rt, speed), np.random.default_rng([preset.seed, s_index, 26]))

    folder = os.path.join(out_dir, f"session_{session_id}")
    os.makedirs(folder, exist_ok=True)
    write_session_nwb(os.path.join(folder, f"session_{session_id}.nwb"), session_id, meta,
                      probes, units, spikes, amps, waves, tables, (rt, speed), start,
                      invalid_times=invalid, optotagging=opto, eye_tracking=eye)
    del spikes, amps, waves
    metrics = AM.table(metric_rows)
    metrics.to_csv(os.path.join(folder, f"session_{session_id}_analysis_metrics.csv"))

    lfp_truth = {}
    for p in probes:
        if not p.has_lfp:
            continue
        fs = p.lfp_sampling_rate / L.LFP_SUBSAMPLING
        t0 = 13.6 + float(rng.uniform(-0.05, 0.05))
        # the LFP ends with the visual schedule, as before the optotagging epoch existed: its
        # files keep their size and chunk count (tests budget requests on their B-trees)
        n = int((duration - t0) * fs)
        ts = t0 + np.arange(n) / fs
        synth = M.LFPSynthesizer(model, p.acronyms[p.lfp_local_indices], t0, fs,
                                 seed=int(rng.integers(2**31)),
                                 corrupt=IT.lfp_corruption(IT.probe_intervals(invalid, p)),
                                 evoked=CSD.lfp_profile(p))
        write_lfp_nwb(os.path.join(folder, f"probe_{p.probe_id}_lfp.nwb"), session_id, meta, p,
                      synth, ts, start)
        lfp_truth[str(p.probe_id)] = {"sampling_rate": fs, "n_samples": n, "t0": t0,
                                      "n_channels": len(p.lfp_local_indices)}

    # ---- rows for the cache tables
    session_row = C.session_row(session_id, s_index, meta, start)
    probe_rows = [C.probe_row(p, session_id) for p in probes]
    channel_rows = [row for p in probes for row in C.channel_rows(p)]
    unit_csv = units.reset_index().rename(columns={"peak_channel_id": "ecephys_channel_id"})
    unit_csv = unit_csv[C.UNITS_CSV_COLUMNS]
    return {
        "session": session_row, "probes": probe_rows, "channels": channel_rows,
        "units": unit_csv.to_dict("records"), "session_type": meta["session_type"],
        "analysis_metrics": metrics,
        "truth": {"session_id": session_id, "duration": end, "areas": areas,
                  "visual_schedule_end": duration,
                  "optotagging": {"cre": cre, "trials": int(len(opto)),
                                  "start": float(opto["start_time"].min()) if len(opto)
                                  else None},
                  "csd_sink_depth_um": {str(p.probe_id): CSD.sink_depth(p) for p in probes
                                        if p.has_lfp},
                  "units": truths, "lfp": lfp_truth,
                  "invalid_times": ([] if invalid is None else
                                    invalid.to_dict("records")),
                  "stimulus_counts": {k: int(len(v)) for k, v in tables.items()}},
    }


L_ORI = [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0]
assert set(C.UNITS_CSV_COLUMNS) >= set(UNIT_METRICS) - {"firing_rate"} | {"firing_rate"}


def _ground_truth_header(preset: Preset) -> dict:
    knobs = asdict(preset)
    if not preset.release_catalog:  # caches generated before the knob existed stay reusable
        knobs.pop("release_catalog")
    return {
        "generator": {"preset": knobs, "format_version": 11},
        "rhythms": {fam: {"frequency_hz": f, "amplitude_v": a}
                    for fam, (f, a) in M.RHYTHM.items()},
        "gamma_grating_power_gain": M.GAMMA_GRATING_GAIN ** 2,
        "tuning": {"gain": M.TUNING_GAIN, "kappa": M.TUNING_KAPPA,
                   "stimulus": "drifting_gratings", "parameter": "orientation"},
        "flash_latency_s": M.FLASH_LATENCY,
        "receptive_fields": {
            "stimulus": "gabors", "gain": M.RF_GAIN, "sigma_deg": M.RF_SIGMA_DEG,
            "families": list(M.RF_FAMILIES),
            "description": "units[...]['rf_centre'] is (x_position, y_position) in the "
                           "stimulus's degrees; the release's azimuth_rf = x + 50, "
                           "elevation_rf = y + 10 (AllenSDK's conversion of the 9 × 9 grid)"},
        "correlations": {
            "description": "During drifting_gratings one latent gain drives all visual areas "
                           "(spike counts and gamma power co-fluctuate across probes); in other "
                           "epochs each area has its own latent.",
            "high_between_visual_areas_during": "drifting_gratings",
            "low_between_visual_areas_during": "spontaneous",
            "latent_coupling": M.LATENT_COUPLING, "latent_tau_s": M.LATENT_TAU,
        },
        "families": {"visual": "VIS*", "hippocampus": ["CA1", "DG"], "thalamus": ["LGd", "LP"]},
    }


@dataclass
class GenerateResult:
    url: str
    session_ids: list[int]
    reused: bool


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def generate_cache(url: str, preset: str | Preset = "tiny", *, reuse: bool = True,
                   jobs: int | None = None, progress: bool = True,
                   storage_options: dict | None = None, **overrides) -> GenerateResult:
    """Write a synthetic cache at ``url`` (a local folder or any fsspec URL such as ``s3://…``).

    ``reuse=True`` returns at once when ``url`` already holds a complete cache generated with the
    same parameters (the ground-truth sidecar, written last, records them).
    """
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset] if isinstance(preset, str) else preset
    p = p.with_overrides(**overrides)
    header = _ground_truth_header(p)
    ids = L.session_ids(p.n_sessions, p.seed)

    import fsspec

    from ...config import storage_options_from_config

    so = storage_options if storage_options is not None else storage_options_from_config(url)
    fs, root = fsspec.core.url_to_fs(url, **so)
    gt_path = f"{root.rstrip('/')}/{GROUND_TRUTH_FILE}"
    if reuse and fs.exists(gt_path):
        with fs.open(gt_path) as f:
            old = json.load(f)
        if old.get("generator") == header["generator"]:
            return GenerateResult(url, ids, True)

    remote = _is_remote(url)
    out_dir = tempfile.mkdtemp(prefix="npd-gen-") if remote else root
    os.makedirs(out_dir, exist_ok=True)
    if not remote and os.path.exists(os.path.join(out_dir, GROUND_TRUTH_FILE)):
        os.remove(os.path.join(out_dir, GROUND_TRUTH_FILE))  # incomplete until rewritten
    try:
        jobs = jobs or min(len(ids), os.cpu_count() or 1)
        tasks = [(p, i, sid, out_dir, False) for i, sid in enumerate(ids)]
        results = []
        bar = tqdm(total=len(tasks), desc="generating sessions", unit="session",
                   disable=not progress)
        if jobs > 1:
            with ProcessPoolExecutor(max_workers=jobs) as ex:
                for r in ex.map(_session_task, tasks):
                    results.append(r)
                    bar.update()
        else:
            for t in tasks:
                results.append(_session_task(t))
                bar.update()
        bar.close()
        rows = {"sessions": [r["session"] for r in results],
                **{key: [row for r in results for row in r[key]]
                   for key in ("probes", "channels", "units")}}
        if p.release_catalog:  # pad the tables with catalog-only sessions (catalog.py)
            *tables, units = C.pad_to_release(rows["sessions"], rows["probes"],
                                              rows["channels"], rows["units"], p.seed)
            rows = dict(zip(("sessions", "probes", "channels"), tables, strict=True))
            rows["units"] = units
        for key, table in rows.items():
            pd.DataFrame(table).to_csv(os.path.join(out_dir, f"{key}.csv"), index=False)
        # <session_type>_analysis_metrics.csv: one per session type in the sessions table
        for kind in sorted({str(r["session_type"]) for r in rows["sessions"]}):
            parts = [r["analysis_metrics"] for r in results if r["session_type"] == kind]
            typewise = pd.concat(parts) if parts else AM.table({})
            typewise.to_csv(os.path.join(out_dir, f"{kind}_analysis_metrics.csv"))
        TPL.write_all(out_dir, p.template_scale)
        with open(os.path.join(out_dir, "manifest.json"), "w") as f:
            json.dump(manifest(), f, indent=2)
        truth = {**header, "sessions": {str(r["truth"]["session_id"]): r["truth"]
                                        for r in results}}
        gt_local = os.path.join(out_dir, GROUND_TRUTH_FILE)
        if remote:
            # upload everything but the sidecar first: the sidecar marks the cache complete
            fs.put(out_dir.rstrip("/") + "/", root.rstrip("/") + "/", recursive=True)
            with open(gt_local, "w") as f:
                json.dump(truth, f, indent=1)
            fs.put_file(gt_local, gt_path)
        else:
            with open(gt_local + ".tmp", "w") as f:
                json.dump(truth, f, indent=1)
            os.replace(gt_local + ".tmp", gt_local)
    finally:
        if remote:
            shutil.rmtree(out_dir, ignore_errors=True)
    return GenerateResult(url, ids, False)


def load_ground_truth(url: str, storage_options: dict | None = None) -> dict:
    """Read the ground-truth sidecar of a synthetic cache."""
    import fsspec

    from ...config import storage_options_from_config

    so = storage_options if storage_options is not None else storage_options_from_config(url)
    with fsspec.open(f"{url.rstrip('/')}/{GROUND_TRUTH_FILE}", **so) as f:
        return json.load(f)
