"""Models load once per server process through ``st.cache_resource``.

The engine's stages load their models in ``open()`` for every file, which is right for the CLI
(one process, one job) but wasteful in a server that restores file after file. The stages look
up a module-level ``load_model`` when they open; here that name is pointed at a cached version,
once, at app start.
Cached models are shared by every session and never mutated: the stages only run them in eval
mode (moving to the device they already sit on is a no-op).

A model that cannot be loaded (no weights offline) is cached as the failure too, so that each
run does not wait for the download retries again; Settings has a button that clears the cache.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import streamlit as st

from resonate.errors import ResonateError

# (module, attribute) of each model loader the app caches, where it exists: the separate stage
# calls its module's load_model, the restore stage imports resonate.models.io's when it opens.
LOADERS = (("resonate.stages.separate", "load_model"), ("resonate.models.io", "load_model"))
_ORIGINALS: dict[str, Any] = {}


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _cached(module: str, args: tuple, kwargs: tuple) -> tuple[Any, ResonateError | None]:
    loader = _ORIGINALS[module]
    try:
        return loader(*args, **dict(kwargs)), None
    except ResonateError as exc:
        return None, exc


def _hashable(v: Any) -> Any:
    return str(v) if isinstance(v, Path) or hasattr(v, "type") else v


def _wrap(module: str):
    def load_model(*args, **kwargs):
        model, error = _cached(module, tuple(_hashable(a) for a in args),
                               tuple(sorted((k, _hashable(v)) for k, v in kwargs.items())))
        if error is not None:
            raise error
        return model
    load_model.__wrapped__ = _ORIGINALS[module]
    return load_model


def install_model_cache() -> None:
    """Route the stages' model loading through the cache (idempotent)."""
    for module_name, attr in LOADERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        current = getattr(module, attr, None)
        if current is None or hasattr(current, "__wrapped__"):
            continue
        _ORIGINALS[module_name] = current
        setattr(module, attr, _wrap(module_name))


def uninstall_model_cache() -> None:
    """Give the stages their own loaders back (tests that run the app in-process call this)."""
    for module_name, attr in LOADERS:
        original = _ORIGINALS.pop(module_name, None)
        if original is not None:
            setattr(importlib.import_module(module_name), attr, original)
    _cached.clear()


def clear_model_cache() -> None:
    _cached.clear()
