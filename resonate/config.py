"""Turning plain dicts (TOML presets, UI widgets, CLI flags) into frozen stage configs, and what
each setting is: its label, unit, help and valid range, declared once on the config field
(:func:`setting`). The engine checks the range (:func:`check_ranges`, from each config's
``__post_init__``); the CLI's help and the app's controls read the same declaration.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from resonate.errors import ResonateError

_SETTING = "resonate.setting"


@dataclass(frozen=True)
class Setting:
    """What people see of one config field, and the values the engine accepts for it."""

    label: str
    unit: str = ""
    help: str = ""
    range: tuple[float, float] | None = None    # inclusive; None: any value of the field's type
    step: float | None = None                   # a sensible increment for a slider

    @property
    def title(self) -> str:
        """The label with its unit, as a control shows it: "Target loudness (LUFS)"."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def describe(self) -> str:
        """One line for a command's help: the range with its unit, then the help."""
        parts = []
        if self.range is not None:
            parts.append("{:g}..{:g}".format(*self.range) + (f" {self.unit}" if self.unit else ""))
        if self.help:
            parts.append(self.help)
        return ", ".join(parts) or self.label


class SettingOutOfRange(ValueError):
    """A setting's value outside the range its field declares."""


def setting(default: Any, *, label: str, unit: str = "", help: str = "",  # noqa: A002 - the word people use
            range: tuple[float, float] | None = None, step: float | None = None) -> Any:  # noqa: A002
    """A config field with its :class:`Setting` (``field(default=..., metadata=...)``)."""
    return dataclasses.field(default=default, metadata={_SETTING: Setting(label, unit, help, range, step)})


def setting_info(config: Any, name: str) -> Setting | None:
    """The :class:`Setting` of field ``name`` of a config class or instance, None where it declares none."""
    found = next((f for f in dataclasses.fields(config) if f.name == name), None)
    return found.metadata.get(_SETTING) if found is not None else None


def settings_info(config: Any) -> dict[str, Setting]:
    """Every field of a config class or instance that declares a :class:`Setting`."""
    return {f.name: f.metadata[_SETTING] for f in dataclasses.fields(config) if _SETTING in f.metadata}


def check_ranges(config: Any) -> None:
    """Raise :class:`SettingOutOfRange` for the first field outside its declared range (None is
    left to the field's own rules; NaN is outside every range)."""
    for name, info in settings_info(config).items():
        value = getattr(config, name)
        if info.range is None or value is None:
            continue
        low, high = info.range
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            unit = f" {info.unit}" if info.unit else ""
            shown = f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else repr(value)
            raise SettingOutOfRange(f"{name} must be between {low:g} and {high:g}{unit}, got {shown}")


def config_from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are a clear error, nested dataclasses
    and tuples of dataclasses are built recursively."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ResonateError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in [{where or cls.__name__}]")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}" if where else name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except SettingOutOfRange as exc:
        # The same words whichever way the value came (a preset file, a command-line flag, the
        # app): the stage's table and the setting.
        raise ResonateError(f"invalid settings in [{where.rsplit('.', 1)[-1] if where else cls.__name__}]: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ResonateError(f"invalid settings in [{where or cls.__name__}]: {exc}") from None


def merge_config(config: Any, overrides: dict[str, Any] | None, where: str = "") -> Any:
    """A copy of ``config`` with ``overrides`` on top (same rules as :func:`config_from_dict`)."""
    if not overrides:
        return config
    base = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    base.update(overrides)
    return config_from_dict(type(config), {k: _plain(v) for k, v in base.items()}, where)


def config_to_dict(config: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return config_to_dict(v)
    if isinstance(v, tuple | list):
        return [_plain(i) for i in v]
    return v


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return config_from_dict(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if origin is dict:
        return dict(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
