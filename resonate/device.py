"""The one place where the compute device is chosen: CUDA, then MPS, then CPU."""

from __future__ import annotations

import os

import torch

from resonate.errors import ResonateError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.insert(0, "cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.insert(0, "mps")
    return found


def pick_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES:
        raise ResonateError(f"unknown device '{name}' (choose one of {', '.join(DEVICE_CHOICES)})")
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif "mps" in available_devices():
            name = "mps"
        else:
            name = "cpu"
    if name not in available_devices():
        raise ResonateError(f"device '{name}' is not available here (available: {', '.join(available_devices())})")
    if name == "mps":
        # Ops without an MPS kernel run on the CPU instead of failing mid-file.
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    return torch.device(name)


def needs_fixed_shapes(device: torch.device) -> bool:
    """MPS recompiles its graphs for every new shape: model stages pad every chunk to one size there."""
    return device.type == "mps"
