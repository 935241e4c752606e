"""The ``ndx-aibs-ecephys`` 0.2.0 types the Allen files use, built with pynwb's spec API.

``probe_id`` is an integer, as in the spec AllenSDK 2.16 ships and loads when it reads the files
(later AllenSDK versions changed it to text).

The spec is generated into a private temporary folder on first use and loaded into pynwb's type map;
files written with these classes cache the namespace, as the real files do, so any NWB reader
(including AllenSDK's) can resolve ``EcephysProbe`` and ``EcephysElectrodeGroup``.
"""

from __future__ import annotations

import functools
import os
import tempfile

NAMESPACE = "ndx-aibs-ecephys"
VERSION = "0.2.0"


@functools.cache
def ecephys_types() -> dict[str, type]:
    """Return ``{"EcephysProbe": cls, "EcephysElectrodeGroup": cls, "EcephysSpecimen": cls,
    "EcephysEyeTrackingRigMetadata": cls, "EcephysCSD": cls}``."""
    from pynwb import get_class, load_namespaces
    from pynwb.spec import (
        NWBAttributeSpec,
        NWBDatasetSpec,
        NWBGroupSpec,
        NWBNamespaceBuilder,
    )

    def attr(name: str, dtype: str, doc: str) -> NWBAttributeSpec:
        return NWBAttributeSpec(name=name, dtype=dtype, doc=doc)

    probe = NWBGroupSpec(
        neurodata_type_def="EcephysProbe", neurodata_type_inc="Device",
        doc="A Neuropixels probe device",
        attributes=[attr("sampling_rate", "float64", "Sampling rate of the device (Hz)"),
                    attr("probe_id", "int", "Unique ID of the Neuropixels probe")])
    group = NWBGroupSpec(
        neurodata_type_def="EcephysElectrodeGroup", neurodata_type_inc="ElectrodeGroup",
        doc="The channels of one Neuropixels probe",
        attributes=[attr("has_lfp_data", "bool", "Whether an LFP file exists for this probe"),
                    attr("probe_id", "int", "Unique ID of the Neuropixels probe"),
                    attr("lfp_sampling_rate", "float64", "LFP sampling rate (Hz)")])
    # the subject: AllenSDK's ``session.specimen_name`` / ``age_in_days`` read these attributes
    specimen = NWBGroupSpec(
        neurodata_type_def="EcephysSpecimen", neurodata_type_inc="Subject",
        doc="Metadata for ecephys specimen",
        attributes=[attr("specimen_name", "text", "Full name of specimen"),
                    attr("age_in_days", "float", "Age of specimen in days")])
    def dataset(name: str, doc: str, dims: list | None = None, shape: list | None = None
                ) -> NWBDatasetSpec:
        return NWBDatasetSpec(name=name, dtype="float32", doc=doc, dims=dims, shape=shape,
                              attributes=[attr("unit", "text", "Unit of measurement")])

    # as AllenSDK 2.16's ndx-aibs-ecephys.extension.yaml declares them (dims [3], shape [null])
    rig = NWBGroupSpec(
        neurodata_type_def="EcephysEyeTrackingRigMetadata",
        neurodata_type_inc="NWBDataInterface", doc="Metadata for ecephys experiment rig",
        attributes=[attr("equipment", "text", "Description of rig")],
        datasets=[dataset(f"{what}_{kind}", f"{kind} of {what} (x, y, z)", [3], [None])
                  for what, kind in (("monitor", "position"), ("camera", "position"),
                                     ("led", "position"), ("monitor", "rotation"),
                                     ("camera", "rotation"))])
    csd = NWBGroupSpec(
        neurodata_type_def="EcephysCSD", neurodata_type_inc="NWBDataInterface",
        doc="A group containing current source density (CSD) data and virtual electrode "
            "locations",
        datasets=[dataset("virtual_electrode_x_positions",
                          "Virtual horizontal positions of electrodes from which CSD was "
                          "calculated", shape=[None]),
                  dataset("virtual_electrode_y_positions",
                          "Virtual vertical positions of electrodes from which CSD was "
                          "calculated", shape=[None])],
        groups=[NWBGroupSpec(neurodata_type_inc="TimeSeries",
                             doc="A timeseries containing current source density (CSD) data")])
    folder = tempfile.mkdtemp(prefix="ndx-aibs-ecephys-")
    ns = NWBNamespaceBuilder(doc="Allen Institute Ecephys Extension (synthetic mirror)",
                             name=NAMESPACE, version=VERSION,
                             author="Allen Institute for Brain Science",
                             contact="neuropixels-hub")
    ns.include_namespace("core")
    ext = f"{NAMESPACE}.extension.yaml"
    for spec in (probe, group, specimen, rig, csd):
        ns.add_spec(ext, spec)
    ns.export(f"{NAMESPACE}.namespace.yaml", outdir=folder)
    load_namespaces(os.path.join(folder, f"{NAMESPACE}.namespace.yaml"))
    return {name: get_class(name, NAMESPACE)
            for name in ("EcephysProbe", "EcephysElectrodeGroup", "EcephysSpecimen",
                         "EcephysEyeTrackingRigMetadata", "EcephysCSD")}
