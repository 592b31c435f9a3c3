"""Named presets: TOML files in assets/presets/, one table per stage, user overrides on top."""

from __future__ import annotations

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
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ResonateError(f"preset {path.name} is not valid TOML: {exc}") from None
