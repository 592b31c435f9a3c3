"""Named presets: TOML files in assets/presets/, one table per stage, user overrides on top.

A preset may also list stages to bypass (``skip = ["separate"]``); the engine honours it unless
the settings name their own (see :class:`resonate.pipeline.ChainSettings`).
"""

from __future__ import annotations

import copy
import functools
import tomllib
from pathlib import Path
from typing import Any

from resonate.errors import ResonateError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "presets"
DEFAULT_PRESET = "concert"


def preset_names() -> list[str]:
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
    return [DEFAULT_PRESET] + [n for n in names if n != DEFAULT_PRESET] if DEFAULT_PRESET in names else names


def load_preset(name_or_path: str) -> dict[str, Any]:
    """The raw preset table: ``{"description": ..., "skip": [...], "<stage>": {...}}``."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PRESETS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ResonateError(f"unknown preset '{name_or_path}' (available: {', '.join(preset_names())})")
    st = path.stat()
    # Read once per version of the file (the app asks for it several times on each rerun); a copy,
    # so that no caller can change what the next one gets.
    return copy.deepcopy(_read(str(path.resolve()), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=32)
def _read(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ResonateError(f"preset {Path(path).name} is not valid TOML: {exc}") from None
    skip = table.get("skip", [])
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise ResonateError(f"preset {Path(path).name}: skip must be a list of stage names")
    return table
