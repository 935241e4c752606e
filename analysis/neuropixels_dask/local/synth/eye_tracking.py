"""Eye tracking: ellipse fits, gaze mapping and the rig geometry, as the session files hold them.

Layout (AllenSDK 2.16 ``write_nwb`` / ``EcephysNwbSessionApi``):

* ``/processing/eye_tracking/{pupil,cr,eye}_ellipse_fits``: DynamicTables ``center_x, center_y,
  height, width, phi, timestamps`` (pixels; height and width are *half* axes, radians);
* ``/processing/raw_gaze_mapping`` and ``/processing/filtered_gaze_mapping``: TimeSeries
  ``pupil_area``, ``eye_area`` (pixels²), ``screen_coordinates`` (cm) and
  ``screen_coordinates_spherical`` (degrees), the two columns (y, x); the filtered copy is NaN
  during likely blinks;
* ``/processing/eye_tracking_rig_metadata/eye_tracking_rig_metadata``
  (``EcephysEyeTrackingRigMetadata``): equipment name, monitor/camera/LED positions (mm) and
  monitor/camera rotations (degrees).

Ground truth: the pupil dilates with running (its area is a fixed affine function of the
running speed smoothed over 1 s, plus 2 % noise); gaze wanders slowly with a few saccades;
blinks (:data:`BLINKS_PER_MINUTE`) are where the filtered data are NaN. Frames come at
:data:`FRAME_RATE` Hz over the whole recording.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pynwb import NWBFile, ProcessingModule, TimeSeries
from pynwb.core import DynamicTable
from scipy import ndimage, signal

from .extension import ecephys_types

FRAME_RATE = 30.0
BLINKS_PER_MINUTE = 4.0
BLINK_S = 0.2
#: pupil area (pixels²) = PUPIL_AREA_BASE × (1 + PUPIL_RUNNING_GAIN × speed / 40 cm/s)
PUPIL_AREA_BASE = 600.0
PUPIL_RUNNING_GAIN = 0.8
EYE_CENTER = (320.0, 240.0)  # pixels in the camera image
EYE_HALF_AXES = (120.0, 80.0)
SCREEN_DISTANCE_CM = 15.0  # eye to monitor
#: the rig (values of the real NP rigs' order of magnitude)
RIG = {"equipment": "NP.1 (synthetic)",
       "monitor_position_mm": [170.0, 0.0, 0.0], "camera_position_mm": [130.0, 0.0, 0.0],
       "led_position": [265.1, -39.3, 1.0], "monitor_rotation_deg": [0.0, 0.0, 0.0],
       "camera_rotation_deg": [0.0, 0.0, 2.8]}


def simulate(end: float, running: tuple[np.ndarray, np.ndarray],
             rng: np.random.Generator) -> dict:
    """Frames over ``[0, end)``: ellipse fits (``pupil``, ``cr``, ``eye``: DataFrames), gaze
    (``raw``/``filtered`` dicts of arrays), ``timestamps`` and the ``blink`` mask."""
    t = np.arange(0.0, end, 1.0 / FRAME_RATE)
    n = t.size
    rt, speed = running
    smooth = ndimage.uniform_filter1d(np.interp(t, rt, speed), size=int(FRAME_RATE))
    pupil_area = PUPIL_AREA_BASE * (1 + PUPIL_RUNNING_GAIN * smooth / 40.0)
    pupil_area *= 1 + 0.02 * rng.standard_normal(n)
    # gaze: slow drift pulled back to the centre (AR(1)), kicked by saccades
    saccades = rng.random((n, 1)) < 0.5 / FRAME_RATE
    kicks = rng.normal(0, 0.05, (n, 2)) + np.where(saccades, rng.normal(0, 2.0, (n, 2)), 0.0)
    gaze = signal.lfilter([1.0], [1.0, -0.995], kicks, axis=0)
    deg = gaze  # (x, y) in degrees of visual angle
    cm = SCREEN_DISTANCE_CM * np.tan(np.deg2rad(deg))
    blink = np.zeros(n, bool)
    for onset in rng.uniform(0, end, int(BLINKS_PER_MINUTE * end / 60.0)):
        blink[(t >= onset) & (t < onset + BLINK_S)] = True
    # ellipse fits: pupil and corneal reflection move with gaze (5 px per degree)
    cx, cy = EYE_CENTER
    px, py = cx + 5.0 * deg[:, 0], cy - 5.0 * deg[:, 1]
    r = np.sqrt(pupil_area / np.pi)
    pupil = pd.DataFrame({"center_x": px, "center_y": py, "height": r * 0.97, "width": r,
                          "phi": 0.05 * rng.standard_normal(n)})
    cr = pd.DataFrame({"center_x": cx + 1.5 * deg[:, 0], "center_y": cy - 20.0 - 1.5 * deg[:, 1],
                       "height": np.full(n, 4.0), "width": np.full(n, 4.5),
                       "phi": np.zeros(n)})
    eye = pd.DataFrame({"center_x": np.full(n, cx), "center_y": np.full(n, cy),
                        "height": np.full(n, EYE_HALF_AXES[1]),
                        "width": np.full(n, EYE_HALF_AXES[0]), "phi": np.zeros(n)})
    eye_area = np.pi * eye["height"].to_numpy() * eye["width"].to_numpy()
    raw_pupil_area = np.pi * pupil["height"].to_numpy() * pupil["width"].to_numpy()
    raw = {"pupil_area": raw_pupil_area, "eye_area": eye_area,
           "screen_coordinates": np.stack([cm[:, 1], cm[:, 0]], axis=1),
           "screen_coordinates_spherical": np.stack([deg[:, 1], deg[:, 0]], axis=1)}
    filtered = {k: np.where(blink if v.ndim == 1 else blink[:, None], np.nan, v)
                for k, v in raw.items()}
    return {"timestamps": t, "pupil": pupil, "cr": cr, "eye": eye, "raw": raw,
            "filtered": filtered, "blink": blink}


def add_to_nwb(nwb: NWBFile, eye: dict) -> None:
    """The eye-tracking, gaze-mapping and rig-metadata processing modules."""
    t = eye["timestamps"]
    mod = ProcessingModule(name="eye_tracking", description="Eye tracking processing module")
    for key in ("pupil", "cr", "eye"):
        df = eye[key].assign(timestamps=t)
        mod.add(DynamicTable.from_dataframe(df=df, name=f"{key}_ellipse_fits"))
    nwb.add_processing_module(mod)
    units = {"pupil_area": "Pixels ^ 2", "eye_area": "Pixels ^ 2",
             "screen_coordinates": "Centimeters", "screen_coordinates_spherical": "Degrees"}
    for name, desc in (("raw", "Gaze mapping processing module raw outputs"),
                       ("filtered", "Gaze mapping processing module filtered outputs")):
        gm = ProcessingModule(name=f"{name}_gaze_mapping", description=desc)
        for series in ("pupil_area", "eye_area", "screen_coordinates",
                       "screen_coordinates_spherical"):
            gm.add(TimeSeries(name=series, data=eye[name][series], timestamps=t,
                              unit=units[series]))
        nwb.add_processing_module(gm)
    rig_mod = ProcessingModule(name="eye_tracking_rig_metadata",
                               description="Eye tracking rig metadata module")
    rig_mod.add(ecephys_types()["EcephysEyeTrackingRigMetadata"](
        name="eye_tracking_rig_metadata", equipment=RIG["equipment"],
        monitor_position=RIG["monitor_position_mm"], monitor_position__unit="mm",
        camera_position=RIG["camera_position_mm"], camera_position__unit="mm",
        led_position=RIG["led_position"], led_position__unit="mm",
        monitor_rotation=RIG["monitor_rotation_deg"], monitor_rotation__unit="deg",
        camera_rotation=RIG["camera_rotation_deg"], camera_rotation__unit="deg"))
    nwb.add_processing_module(rig_mod)
