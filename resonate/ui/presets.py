"""Presets the user saves from the app: TOML files in their config folder, beside ``app.json``.

A saved preset holds every stage's effective settings and the bypassed stages, in the same
format as the built-in presets (one table per stage), so the CLI takes it too
(``--preset ~/.config/resonate/presets/NAME.toml``). It is checked by loading it back before
it takes its final name: what is saved is exactly what was on screen.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from resonate.config import config_to_dict
from resonate.errors import ResonateError
from resonate.pipeline import ChainSettings, stage_configs
from resonate.presets import load_preset, preset_names
from resonate.ui.session import prefs_path

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def user_presets_dir() -> Path:
    return prefs_path().parent / "presets"


def user_presets() -> dict[str, Path]:
    """Name -> file of each preset the user saved (built-in names excluded)."""
    folder = user_presets_dir()
    builtin = set(preset_names())
    found = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    return {p.stem: p for p in found if p.stem not in builtin and NAME.match(p.stem)}


def choices() -> list[str]:
    """What the preset picker offers: built-in names, then the user's files (as paths)."""
    return [*preset_names(), *(str(p) for p in user_presets().values())]


def label(choice: str) -> str:
    if choice.endswith(".toml"):
        return f"{Path(choice).stem.replace('_', ' ')} (yours)"
    return choice.replace("_", " ").capitalize()


def clean_name(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.strip().lower()).strip("-_")[:40]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ResonateError(f"cannot save the value {v} in a preset")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)            # a TOML basic string: the same escapes as JSON
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(i) for i in v) + "]"
    raise ResonateError(f"cannot save a value of type {type(v).__name__} in a preset")


def to_toml(preset: dict[str, Any]) -> str:
    """The preset as TOML: top-level keys, then one table per stage (sub-tables, arrays of tables)."""
    lines = [f"{k} = {_value(v)}" for k, v in preset.items() if not isinstance(v, dict)]
    for stage, table in preset.items():
        if not isinstance(table, dict):
            continue
        lines += ["", f"[{stage}]"]
        nested = []
        for key, v in table.items():
            if isinstance(v, dict):
                nested.append((f"[{stage}.{key}]", [v]))
            elif isinstance(v, list | tuple) and v and all(isinstance(i, dict) for i in v):
                nested.append((f"[[{stage}.{key}]]", list(v)))
            elif v is not None:
                lines.append(f"{key} = {_value(v)}")
        for header, tables in nested:
            for t in tables:
                lines += ["", header] + [f"{json.dumps(k) if not re.match(r'^[A-Za-z0-9_-]+$', k) else k} = {_value(x)}"
                                         for k, x in t.items() if x is not None]
    return "\n".join(lines) + "\n"


def _effective(settings: ChainSettings) -> dict[str, dict[str, Any]]:
    return {name: config_to_dict(cfg) for name, cfg in stage_configs(settings).items()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if {type(a), type(b)} <= {type(None), float, int} and not {a, b} - {None, 0}:
        return True                     # "off" written as 0 (TOML has no null): the stages read it the same
    return a == b


def save_preset(name: str, settings: ChainSettings, description: str = "") -> Path:
    """Write the current settings as preset ``name``; returns its file. Raises ResonateError."""
    name = clean_name(name)
    if not NAME.match(name):
        raise ResonateError("give the preset a name (letters, digits, - or _)")
    if name in preset_names():
        raise ResonateError(f"'{name}' is a built-in preset; choose another name")
    current = _effective(settings)
    preset: dict[str, Any] = {"description": description.strip() or f"Saved from the app ({label(settings.preset)} "
                                                                         "with changes)"}
    if settings.skip:
        preset["skip"] = list(settings.skip)
    defaults = _effective(ChainSettings(preset_names()[0], {}, ()))
    for stage, values in current.items():
        table = {}
        for key, v in values.items():
            if v is None and defaults.get(stage, {}).get(key) is not None:
                v = 0.0                  # e.g. the high-pass switched off: 0 Hz is no filter
            table[key] = v
        preset[stage] = table
    folder = user_presets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".toml", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(to_toml(preset))
        saved = load_preset(tmp)
        again = _effective(ChainSettings(tmp, {}, tuple(saved.get("skip", []))))
        if not _same(again, current) or tuple(saved.get("skip", [])) != tuple(settings.skip):
            raise ResonateError("the preset did not load back as saved; nothing was written")
        target = folder / f"{name}.toml"
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
