"""Synthetic Allen-layout ecephys caches with known ground truth.

No machine here reaches the real bucket, so tests, the demo and the benchmarks use sessions that are
laid out exactly like ``s3://allen-brain-observatory/visual-coding-neuropixels/ecephys-cache/`` and
carry real structure (tuning, rhythms, stimulus-dependent correlations) that the analyses must find.
"""

from .generate import GenerateResult, generate_cache
from .presets import PRESETS, Preset

__all__ = ["PRESETS", "GenerateResult", "Preset", "generate_cache"]
