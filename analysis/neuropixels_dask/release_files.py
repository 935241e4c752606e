"""The release's files beside the sessions: unit analysis metrics and stimulus templates.

AllenSDK 2.16's ``EcephysProjectCache`` reads them from these keys of the cache (its manifest's
``session_analysis_metrics``, ``typewise_analysis_metrics``, ``natural_scene`` and
``natural_movie`` entries):

* ``session_<sid>/session_<sid>_analysis_metrics.csv`` and ``<session_type>_analysis_metrics.csv``:
  precomputed stimulus metrics per unit (``pref_ori_dg``, ``g_osi_dg``, ``azimuth_rf``, …), index
  ``ecephys_unit_id``; with ``annotate=True`` merged (inner) onto ``get_units()``.
* ``natural_scene_templates/natural_scene_<n>.tiff``: one 2-D ``uint8`` image (AllenSDK reads it
  with SimpleITK; Pillow reads the same array here).
* ``natural_movie_templates/natural_movie_<n>.h5``: despite the suffix an ``.npy`` array of
  frames (AllenSDK: ``np.load``). :func:`natural_movie_template` returns it as a Dask array read
  with ranged requests, a few hundred frames per task (movie three is ~665 MB), so nothing is
  downloaded until it is computed or indexed.

Each CSV is fetched in one GET and parsed once per process (like the cache tables).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import storage
from .caching import ProcessCache
from .errors import CacheNotFoundError, InvalidFileError, InvalidSelectionError

if TYPE_CHECKING:
    import dask.array

    from .catalog import EcephysProjectCache

INDEX = "ecephys_unit_id"
#: parsed metrics CSVs per process, ``(cache URL, options key, file name)`` → DataFrame
metrics_tables: ProcessCache[tuple[str, str, str], pd.DataFrame] = ProcessCache(
    "analysis metrics tables", maxsize=16)
#: frames per task of a natural movie
MOVIE_FRAMES_PER_CHUNK = 256


def _fetch(url: str, storage_options, what: str) -> bytes:
    (raw,) = storage.fetch_objects([url], storage_options, missing_ok=True)
    if raw is None:
        raise CacheNotFoundError(f"{url} does not exist: this cache holds no {what}. The "
                                 "release publishes it next to the session tables; check that "
                                 "the copy of the cache is complete.")
    return raw


def read_metrics(cache: EcephysProjectCache, key: str) -> pd.DataFrame:
    """The analysis-metrics CSV at ``key`` (relative to the cache root), index
    ``ecephys_unit_id``, as AllenSDK's ``read_metrics_csv`` parses it. Callers copy."""
    def read() -> pd.DataFrame:
        url = storage.join(cache.url, key)
        raw = _fetch(url, cache.storage_options, "unit analysis metrics at this key")
        try:
            return pd.read_csv(io.BytesIO(raw), index_col=INDEX)
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InvalidFileError(f"{url} is not an analysis-metrics table indexed by "
                                   f"{INDEX} ({exc}); re-copy it from the source.") from exc

    return metrics_tables.get((cache.url, cache.storage_options.key, key), read)


def annotate(cache: EcephysProjectCache, metrics: pd.DataFrame, session_id: int | None,
             filter_by_validity: bool, unit_filters: dict[str, Any]) -> pd.DataFrame:
    """AllenSDK's ``annotate=True``: ``get_units()`` (of the session) merged onto the metrics,
    inner join on the unit id, index renamed ``ecephys_unit_id``."""
    units = cache.get_units(filter_by_validity=filter_by_validity, **unit_filters)
    if session_id is not None:
        units = units[units["ecephys_session_id"] == session_id]
    out = pd.merge(units, metrics, left_index=True, right_index=True, how="inner")
    out.index.rename(INDEX, inplace=True)
    return out


def unit_analysis_metrics_for_session(cache: EcephysProjectCache, session_id: int,
                                      annotate_units: bool, filter_by_validity: bool,
                                      unit_filters: dict[str, Any]) -> pd.DataFrame:
    from .catalog import as_id
    from .errors import UnknownSessionError

    sid = as_id(session_id, "Session id", UnknownSessionError)
    sessions = cache.get_session_table()
    if sid not in sessions.index:
        raise UnknownSessionError(f"Session {sid} is not in this cache ({cache.url}); see "
                                  "cache.get_session_table().index for the valid ids.")
    metrics = read_metrics(cache, f"session_{sid}/session_{sid}_analysis_metrics.csv").copy()
    if not annotate_units:
        return metrics
    return annotate(cache, metrics, sid, filter_by_validity, unit_filters)


def unit_analysis_metrics_by_session_type(cache: EcephysProjectCache, session_type: str,
                                          annotate_units: bool, filter_by_validity: bool,
                                          unit_filters: dict[str, Any]) -> pd.DataFrame:
    known = cache.get_session_table()["session_type"].unique().tolist()
    if session_type not in known:
        raise InvalidSelectionError(f"unrecognized session type: {session_type}. Available "
                                    f"types: {known}")
    metrics = read_metrics(cache, f"{session_type}_analysis_metrics.csv").copy()
    if not annotate_units:
        return metrics
    return annotate(cache, metrics, None, filter_by_validity, unit_filters)


def _number(number: Any, what: str) -> int:
    from .catalog import as_id

    return as_id(number, what, InvalidSelectionError)


def natural_scene_template(cache: EcephysProjectCache, number: int) -> np.ndarray:
    """Scene ``number`` as the 2-D ``uint8`` array AllenSDK returns."""
    # Pillow (a dependency of matplotlib); with its TIFF plugin imported and named, opening
    # does not import every plugin first (seconds)
    from PIL import Image, TiffImagePlugin  # noqa: F401

    n = _number(number, "Natural scene number")
    url = storage.join(cache.url, "natural_scene_templates", f"natural_scene_{n}.tiff")
    raw = _fetch(url, cache.storage_options,
                 f"natural scene {n} (the release has scenes 0–117, the frame values of "
                 "natural_scenes presentations; -1 is the blank screen)")
    try:
        with Image.open(io.BytesIO(raw), formats=["TIFF"]) as img:
            return np.asarray(img)
    except OSError as exc:
        raise InvalidFileError(f"{url} is not a readable TIFF image ({exc}); re-copy it from "
                               "the source.") from exc


def _npy_header(url: str, storage_options) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of the ``.npy`` file at ``url`` (one small ranged read)."""
    (head,) = storage.fetch_ranges(url, storage_options, [0], [4096])
    buf = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(buf)
    except ValueError as exc:
        raise InvalidFileError(f"{url} is not a NumPy .npy array (AllenSDK reads the movie "
                               f"templates with np.load): {exc}") from exc
    if fortran or dtype.hasobject:
        raise InvalidFileError(f"{url} holds a Fortran-ordered or object array; a natural "
                               "movie template is C-ordered frames of uint8.")
    return tuple(shape), dtype, buf.tell()


def _read_frames(url: str, storage_options, offset: int, frame_bytes: int, dtype: str,
                 frame_shape: tuple[int, ...], f0: int, f1: int) -> np.ndarray:
    (raw,) = storage.fetch_ranges(url, storage_options, [offset + f0 * frame_bytes],
                                  [offset + f1 * frame_bytes])
    return np.frombuffer(raw, dtype).reshape((f1 - f0, *frame_shape))


def natural_movie_template(cache: EcephysProjectCache, number: int) -> dask.array.Array:
    """Movie ``number`` (frames, height, width) as a lazy Dask array of AllenSDK's values."""
    import dask
    import dask.array as da

    n = _number(number, "Natural movie number")
    url = storage.join(cache.url, "natural_movie_templates", f"natural_movie_{n}.h5")
    if not storage.exists(url, cache.storage_options):
        raise CacheNotFoundError(f"{url} does not exist: this cache holds no natural movie {n} "
                                 "(the release has movies 1 and 3).")
    shape, dtype, offset = _npy_header(url, cache.storage_options)
    frame_shape = shape[1:]
    frame_bytes = int(np.prod(frame_shape, dtype=np.int64)) * dtype.itemsize
    read = dask.delayed(_read_frames, pure=True)
    blocks = [da.from_delayed(read(url, cache.storage_options, offset, frame_bytes, dtype.str,
                                   frame_shape, f0, min(f0 + MOVIE_FRAMES_PER_CHUNK, shape[0])),
                              shape=(min(f0 + MOVIE_FRAMES_PER_CHUNK, shape[0]) - f0,
                                     *frame_shape), dtype=dtype)
              for f0 in range(0, shape[0], MOVIE_FRAMES_PER_CHUNK)]
    if not blocks:
        return da.zeros(shape, dtype=dtype)
    return da.concatenate(blocks, axis=0)
