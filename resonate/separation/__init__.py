"""Source separation with Demucs: model loading, windowed running, stem cache, per-stem remix.

The ``separate`` stage (resonate.stages.separate) is built from these parts. The cache helpers
are here for the Settings page and the CLI.
"""

from resonate.separation.cache import cache_size_bytes, clear_cache, default_cache_dir
from resonate.separation.models import DEFAULT_MODEL, MODEL_NAMES
from resonate.separation.remix import DEFAULT_PRESET, PRESETS, StemSettings

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRESET",
    "MODEL_NAMES",
    "PRESETS",
    "StemSettings",
    "cache_size_bytes",
    "clear_cache",
    "default_cache_dir",
]
