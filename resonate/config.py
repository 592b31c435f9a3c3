"""Turning plain dicts (TOML presets, UI widgets, CLI flags) into frozen stage configs."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from resonate.errors import ResonateError


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
