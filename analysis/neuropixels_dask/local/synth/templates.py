"""The release's stimulus templates: natural scenes (TIFF) and natural movies.

AllenSDK 2.16's ``EcephysProjectCache`` finds them at ``natural_scene_templates/
natural_scene_<n>.tiff`` (read with SimpleITK: a 2-D ``uint8`` array, 918 × 1174 in the
release) and ``natural_movie_templates/natural_movie_<n>.h5`` (read with ``np.load``: despite
the suffix, an ``.npy`` array of ``uint8`` frames, 304 × 608; movie one has 900 frames, movie
three 3600). Scenes are numbered 0–117 (the ``frame`` of ``natural_scenes`` presentations).

Ground truth (the images are synthetic): scene ``n`` is 1/f noise with mean grey level
``SCENE_MEAN0 + n`` and standard deviation :data:`SCENE_STD`; frame ``f`` of a movie is a grey
background (:data:`MOVIE_BACKGROUND`) with a white vertical bar :data:`BAR_WIDTH` pixels wide
whose left edge is at column ``(f * BAR_STEP) % width``. ``Preset.template_scale`` shrinks the
images (not the frame counts) to keep small caches small.
"""

from __future__ import annotations

import os

import numpy as np

SCENE_COUNT = 118
SCENE_SHAPE = (918, 1174)
MOVIE_SHAPE = (304, 608)
MOVIE_FRAMES = {1: 900, 3: 3600}
SCENE_MEAN0 = 64.0
SCENE_STD = 20.0
MOVIE_BACKGROUND = 127
BAR_WIDTH = 2
BAR_STEP = 1


def scaled(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    return tuple(max(8, int(round(s * scale))) for s in shape)


def scene(number: int, scale: float) -> np.ndarray:
    """Scene ``number``: 1/f noise, mean ``SCENE_MEAN0 + number``, std ``SCENE_STD`` (uint8)."""
    h, w = scaled(SCENE_SHAPE, scale)
    rng = np.random.default_rng([number, SCENE_COUNT])
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f
    spec[0, 0] = 0.0
    img = np.fft.irfft2(spec, s=(h, w))
    img = (img - img.mean()) / img.std() * SCENE_STD + SCENE_MEAN0 + number
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def movie(number: int, scale: float) -> np.ndarray:
    """Movie ``number`` (1 or 3): a bar sweeping right one column per frame (uint8)."""
    h, w = scaled(MOVIE_SHAPE, scale)
    n = MOVIE_FRAMES[number]
    out = np.full((n, h, w), MOVIE_BACKGROUND, np.uint8)
    cols = np.arange(w)
    for f in range(n):
        left = (f * BAR_STEP) % w
        out[f][:, (cols >= left) & (cols < left + BAR_WIDTH)] = 255
    return out


def write_all(out_dir: str, scale: float) -> None:
    """Write every scene and movie template under ``out_dir`` (the cache root)."""
    # Pillow (a dependency of matplotlib); importing its TIFF plugin spares Image.init()
    # importing every plugin (seconds)
    from PIL import Image, TiffImagePlugin  # noqa: F401

    scenes = os.path.join(out_dir, "natural_scene_templates")
    movies = os.path.join(out_dir, "natural_movie_templates")
    os.makedirs(scenes, exist_ok=True)
    os.makedirs(movies, exist_ok=True)
    for n in range(SCENE_COUNT):
        Image.fromarray(scene(n, scale), mode="L").save(
            os.path.join(scenes, f"natural_scene_{n}.tiff"), format="TIFF")
    for n in MOVIE_FRAMES:
        with open(os.path.join(movies, f"natural_movie_{n}.h5"), "wb") as f:
            np.save(f, movie(n, scale), allow_pickle=False)
