"""The stage registry. Order is fixed; a stage module registers itself when imported."""

from __future__ import annotations

import importlib

from resonate.stages.base import Stage, StageContext, TwoPassStage

STAGE_ORDER: tuple[str, ...] = ("separate", "denoise", "restore", "master", "loudness")

# Modules that provide stages; each defines one Stage subclass decorated with @register.
_STAGE_MODULES = {
    "separate": "resonate.stages.separate",
    "denoise": "resonate.stages.denoise",
    "restore": "resonate.stages.restore",
    "master": "resonate.stages.master",
    "loudness": "resonate.stages.loudness",
}

REGISTRY: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    REGISTRY[cls.name] = cls
    return cls


def load_registry() -> dict[str, type[Stage]]:
    """Import every stage module that exists. A stage whose module is absent is simply not offered."""
    for name, module in _STAGE_MODULES.items():
        if name in REGISTRY:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return {name: REGISTRY[name] for name in STAGE_ORDER if name in REGISTRY}


__all__ = ["STAGE_ORDER", "REGISTRY", "Stage", "StageContext", "TwoPassStage", "register", "load_registry"]
