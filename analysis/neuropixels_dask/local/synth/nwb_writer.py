"""Write a synthetic session as the Allen files are written: session NWB + one LFP NWB per probe.

Paths, names, column names and dtypes follow ``shared/ALLEN_LAYOUT.md``. What pynwb cannot reproduce
exactly (the NWB schema version, 2.2.2 in the real files) is listed in ``docs/synthetic-data.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from hdmf.backends.hdf5.h5_utils import H5DataIO
from hdmf.data_utils import GenericDataChunkIterator
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.ecephys import LFP
from pynwb.epoch import TimeIntervals
from pynwb.misc import Units

from . import csd as csd_extra
from . import eye_tracking as eye_extra
from . import optotagging as opto_extra
from .extension import ecephys_types
from .layout import LFP_CHUNKS, RAW_SAMPLING_RATE, ProbeLayout
from .model import LFPSynthesizer

#: Names of waveform metrics in the NWB units table (units.csv uses the short names).
NWB_UNIT_NAMES = {"duration": "waveform_duration", "halfwidth": "waveform_halfwidth"}
#: Samples of ``waveform_mean`` per channel (82 at 30 kHz in the real files).
WAVEFORM_SAMPLES = 82

#: Units-table scalar columns in the order the real files have them (metrics + identifiers).
UNIT_METRICS = ["PT_ratio", "amplitude", "amplitude_cutoff", "cumulative_drift", "d_prime",
                "duration", "firing_rate", "halfwidth", "isi_violations", "isolation_distance",
                "l_ratio", "max_drift", "nn_hit_rate", "nn_miss_rate", "presence_ratio",
                "recovery_slope", "repolarization_slope", "silhouette_score", "snr", "spread",
                "velocity_above", "velocity_below"]


def _new_file(session_id: int, description: str, start: datetime, meta: dict,
              identifier: str | None = None) -> NWBFile:
    # ndx-aibs-ecephys' EcephysSpecimen, as in the real files: a Subject plus the specimen's name
    # and age in days as attributes (what AllenSDK's ``session.metadata`` reads)
    subject = ecephys_types()["EcephysSpecimen"](
        subject_id=str(meta["specimen_id"]), species="Mus musculus", sex=meta["sex"],
        genotype=meta["genotype"], age=f"P{int(meta['age_in_days'])}D", strain="C57BL/6J",
        description=f"specimen {meta['specimen_id']}", specimen_name=specimen_name(meta),
        age_in_days=float(meta["age_in_days"]))
    return NWBFile(session_description=description, identifier=identifier or str(session_id),
                   session_start_time=start, session_id=str(session_id),
                   institution="Allen Institute for Brain Science (synthetic)",
                   experimenter=["Neuropixels Hub synthetic generator"],
                   experiment_description="Synthetic Visual Coding - Neuropixels session "
                   "with known ground truth (see synthetic_ground_truth.json)",
                   keywords=["ecephys", "Neuropixels", "visual coding", "synthetic"],
                   stimulus_notes=meta["session_type"], subject=subject)


def specimen_name(meta: dict) -> str:
    """The specimen's name as the release spells it: the Cre line, the reporter and a number
    (``Sst-IRES-Cre;Ai32-700000079``; wild type: ``C57BL6J-700000079``)."""
    if str(meta["genotype"]).startswith("wt"):
        return f"C57BL6J-{meta['specimen_id']}"
    lines = [g.split("/")[0].split("(")[0] for g in str(meta["genotype"]).split(";")]
    return f"{';'.join(lines)}-{meta['specimen_id']}"


def _add_probes(nwb: NWBFile, probes: list[ProbeLayout], only: ProbeLayout | None = None) -> dict:
    types = ecephys_types()
    groups = {}
    for p in probes:
        if only is not None and p.probe_id != only.probe_id:
            continue
        dev = types["EcephysProbe"](name=p.name, description="Neuropixels 1.0 Probe",
                                    manufacturer="imec", sampling_rate=RAW_SAMPLING_RATE,
                                    probe_id=int(p.probe_id))
        nwb.add_device(dev)
        grp = types["EcephysElectrodeGroup"](
            name=p.name, description="Ecephys Electrode Group", location="See electrode locations",
            device=dev, has_lfp_data=bool(p.has_lfp), probe_id=int(p.probe_id),
            lfp_sampling_rate=p.lfp_sampling_rate / 2)
        nwb.add_electrode_group(grp)
        groups[p.probe_id] = grp
    return groups


def _add_electrodes(nwb: NWBFile, probes: list[ProbeLayout], groups: dict,
                    lfp_only: ProbeLayout | None = None) -> None:
    for name, desc in [("probe_vertical_position", "Distance from the probe tip (µm)"),
                       ("probe_horizontal_position", "Horizontal position on the shank (µm)"),
                       ("probe_id", "Probe id"),
                       ("local_index", "Channel index on the probe (0 at the tip)"),
                       ("valid_data", "Whether the channel's data is usable")]:
        nwb.add_electrode_column(name=name, description=desc)
    for p in probes:
        if p.probe_id not in groups:
            continue
        idx = p.lfp_local_indices if lfp_only is not None else np.arange(len(p.channel_ids))
        for i in idx:
            # add_row, not add_electrode: pynwb refuses the empty location that the real files
            # use for channels outside the brain.
            nwb.electrodes.add_row(
                group_name=p.name, id=int(p.channel_ids[i]), x=float(p.ccf[i, 0]), y=float(p.ccf[i, 1]),
                z=float(p.ccf[i, 2]), imp=150000.0, location=str(p.acronyms[i]),
                filtering="AP band: 500 Hz high-pass; LFP band: 1000 Hz low-pass",
                group=groups[p.probe_id], probe_vertical_position=int(p.vertical[i]),
                probe_horizontal_position=int(p.horizontal[i]), probe_id=int(p.probe_id),
                local_index=int(i), valid_data=bool(i != p.air_channel_index))


def write_session_nwb(path: str, session_id: int, meta: dict, probes: list[ProbeLayout],
                      units: pd.DataFrame, spike_times: list[np.ndarray],
                      spike_amplitudes: list[np.ndarray], waveforms: list[np.ndarray],
                      tables: dict[str, pd.DataFrame],
                      running: tuple[np.ndarray, np.ndarray], start: datetime,
                      invalid_times: pd.DataFrame | None = None,
                      optotagging: pd.DataFrame | None = None,
                      eye_tracking: dict | None = None) -> None:
    """Write ``session_<id>.nwb``: probes, electrodes, units (ragged spikes), stimuli, running,
    and ``/intervals/invalid_times`` when there are any (``start_time, stop_time, tags``, as
    AllenSDK's ``add_invalid_times`` writes it), the optotagging table (``optotagging.py``) and
    eye tracking (``eye_tracking.py``)."""
    nwb = _new_file(session_id, "Data and metadata for an Ecephys session", start, meta)
    groups = _add_probes(nwb, probes)
    _add_electrodes(nwb, probes, groups)

    # /units: scalars, then ragged spike_times (float64, uncompressed, as published)
    nwb.units = Units(name="units", description="Sorted units (noise clusters included)",
                      resolution=1.0 / RAW_SAMPLING_RATE)
    nwb.add_unit_column(name="cluster_id", description="Kilosort cluster id")
    nwb.add_unit_column(name="local_index", description="Unit index within its probe")
    nwb.add_unit_column(name="peak_channel_id", description="Channel with the largest waveform")
    nwb.add_unit_column(name="quality", description="'good' or 'noise'")
    for m in UNIT_METRICS:
        nwb.add_unit_column(name=NWB_UNIT_NAMES.get(m, m),
                            description=f"Quality/waveform metric {m}")
    nwb.add_unit_column(name="spike_amplitudes", description="Amplitude of each spike (V)",
                        index=True)
    # ragged, 384 rows of 82 samples per unit, as AllenSDK's add_ragged_data_to_dynamic_table
    # writes it (not the 3-D column pynwb would make)
    nwb.add_unit_column(name="waveform_mean", description="mean waveforms on peak channels "
                        "(over samples)", index=True)
    for k, row in enumerate(units.itertuples()):
        kw = {NWB_UNIT_NAMES.get(m, m): float(getattr(row, m)) for m in UNIT_METRICS}
        nwb.add_unit(id=int(row.Index), spike_times=spike_times[k],
                     spike_amplitudes=spike_amplitudes[k], cluster_id=int(row.cluster_id),
                     local_index=int(row.local_index), peak_channel_id=int(row.peak_channel_id),
                     quality=str(row.quality), waveform_mean=waveforms[k], **kw)

    # /intervals/<stimulus>_presentations
    for name, table in tables.items():
        ti = TimeIntervals(name=f"{name}_presentations",
                           description=f"Presentation times and stimuli details for '{name}'")
        extra = [c for c in table.columns if c not in ("start_time", "stop_time")]
        for c in extra:
            ti.add_column(name=c, description=f"{c} of the {name} presentation")
        for pid, row in table.iterrows():
            ti.add_interval(start_time=float(row["start_time"]), stop_time=float(row["stop_time"]),
                            tags=["stimulus_time_interval"], id=int(pid),
                            **{c: row[c] for c in extra})
        nwb.add_time_intervals(ti)

    if invalid_times is not None and len(invalid_times):
        container = TimeIntervals(name="invalid_times",
                                  description="Time intervals during which data is invalid")
        for a, b, tags in invalid_times.itertuples(index=False):
            container.add_interval(start_time=float(a), stop_time=float(b), tags=list(tags))
        nwb.invalid_times = container

    # /processing/running/running_speed
    ts, speed = running
    mod = nwb.create_processing_module("running", "Running speed processing module")
    mod.add(TimeSeries(name="running_speed", data=H5DataIO(speed.astype(np.float32),
                                                           compression="gzip"),
                       timestamps=H5DataIO(ts, compression="gzip"), unit="cm/s",
                       description="Running speed of the animal on the wheel"))
    # each sample's end time, as the real files keep it (AllenSDK's running_speed reads it)
    ends = np.append(ts[1:], ts[-1] + (ts[-1] - ts[-2] if ts.size > 1 else 0.0))
    mod.add(TimeSeries(name="running_speed_end_times",
                       data=H5DataIO(speed.astype(np.float32), compression="gzip"),
                       timestamps=H5DataIO(ends, compression="gzip"), unit="cm/s",
                       description="Running speed, stamped at each sample's end"))
    if optotagging is not None:
        opto_extra.add_to_nwb(nwb, optotagging)
    if eye_tracking is not None:
        eye_extra.add_to_nwb(nwb, eye_tracking)
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb, cache_spec=True)
    _legacy_electrodes_type(path)


def _legacy_electrodes_type(path: str) -> None:
    """Tag the electrodes table as the plain ``DynamicTable`` it is in NWB ≤ 2.8 (and in the real
    2.2.2 files): readers built on pynwb 2.x, AllenSDK 2.16 among them, do not know NWB 2.9's
    ``ElectrodesTable`` type; pynwb 4 reads either."""
    import h5py

    with h5py.File(path, "a") as f:
        g = f["general/extracellular_ephys/electrodes"]
        g.attrs["neurodata_type"] = "DynamicTable"
        g.attrs["namespace"] = "hdmf-common"


class _LFPIterator(GenericDataChunkIterator):
    """Feeds LFP blocks from an ``LFPSynthesizer`` to h5py, one buffer (k chunks × all channels)."""

    def __init__(self, synth: LFPSynthesizer, n_time: int, n_ch: int, chunks_per_buffer: int):
        self._synth, self._n, self._c = synth, n_time, n_ch
        super().__init__(chunk_shape=(min(LFP_CHUNKS[0], n_time), 1),
                         buffer_shape=(min(LFP_CHUNKS[0] * chunks_per_buffer, n_time), n_ch),
                         display_progress=False)

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        t_sel = selection[0]
        block = self._synth.block(t_sel.start, t_sel.stop)
        return block[:, selection[1]]

    def _get_maxshape(self) -> tuple[int, int]:
        return (self._n, self._c)

    def _get_dtype(self) -> np.dtype:
        return np.dtype("float32")


def write_lfp_nwb(path: str, session_id: int, meta: dict, probe: ProbeLayout,
                  synth: LFPSynthesizer, timestamps: np.ndarray, start: datetime,
                  chunks_per_buffer: int = 4) -> None:
    """Write ``probe_<pid>_lfp.nwb`` with the real dataset path, chunking and compression."""
    # identifiers must be unique per file (nwbinspector); session_id ties the files together
    nwb = _new_file(session_id, "LFP data and associated info for one probe", start, meta,
                    identifier=f"{session_id}_probe_{probe.probe_id}_lfp")
    groups = _add_probes(nwb, [probe], only=probe)
    _add_electrodes(nwb, [probe], groups, lfp_only=probe)
    n_ch = len(probe.lfp_local_indices)
    region = nwb.create_electrode_table_region(list(range(n_ch)), "LFP channels on this probe")
    data = H5DataIO(_LFPIterator(synth, len(timestamps), n_ch, chunks_per_buffer),
                    compression="gzip", compression_opts=9)
    lfp = LFP(name=f"probe_{probe.probe_id}_lfp")
    nwb.add_acquisition(lfp)  # parent first, so the region's table shares an ancestor
    lfp.create_electrical_series(
        name=f"probe_{probe.probe_id}_lfp_data", data=data,
        timestamps=H5DataIO(timestamps, compression="gzip", compression_opts=9),
        electrodes=region, conversion=1.0, resolution=-1.0,
        description="LFP (1 kHz low-pass), subsampled to ~1250 Hz")
    csd_extra.add_to_nwb(nwb, probe)
    with NWBHDF5IO(path, "w") as io:
        io.write(nwb, cache_spec=True)
    _legacy_electrodes_type(path)


def session_start(session_index: int) -> datetime:
    return datetime(2019, 1, 8 + session_index, 13, 30, tzinfo=UTC)
