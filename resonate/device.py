"""The one place where the compute device is chosen: CUDA, then MPS, then CPU."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from resonate.errors import ResonateError

_T = TypeVar("_T")

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


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 512 << 20
_allocator_tuned = False


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the allocator calls below are glibc's), else None."""
    if platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tune_allocator() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel.

    Every model chunk allocates the same large activations again. By default glibc serves blocks
    that big with fresh mmaps and unmaps them on free, so each chunk page-faults its whole working
    set back in: on a 2-core machine, 60 s through the restore model took RTF 0.028-0.045 with
    385-570 k page faults, and 0.022-0.032 with 140-190 k after this (several runs each). Peak
    memory stays about the same (the same sizes are reused). Linux/glibc only; elsewhere a no-op.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    libc = _glibc()
    if libc is None:
        return False
    try:
        # Raising the mmap threshold first matters: fixing only the trim threshold turns off
        # glibc's adaptive threshold and makes every large block an mmap (much slower).
        ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(_KEEP_BYTES)) == 1
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(_KEEP_BYTES)) == 1
    except AttributeError:
        return False
    _allocator_tuned = ok
    return ok


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the kernel (glibc ``malloc_trim``); elsewhere a no-op.

    With ``tune_allocator``'s thresholds glibc keeps what a pass freed; the pipeline calls this
    between its two passes, so the loudness pass does not stack its blocks on top of the restore
    model's freed activations (20 min through the chain: peak 892-901 MB instead of 924-954 MB,
    two runs each).
    """
    libc = _glibc()
    if libc is None:
        return False
    try:
        libc.malloc_trim(0)
    except AttributeError:
        return False
    return True


class ModelThread:
    """Runs a model's forward passes on one thread of their own while the context is open.

    glibc gives each thread its own malloc arena. A CPU model allocates the same tens of MB of
    activations for every chunk; on the streaming thread those blocks interleave with the reader's,
    the meters' and the overlap-add's smaller temporaries, the heap fragments and peak memory
    climbs with the length of the file (restore stage, 60 s -> 20 min: 715 -> 944 MB). In an arena
    of their own the activations reuse the same space chunk after chunk: 838 -> 860 MB, and the
    stage ran faster too (RTF 0.041 against 0.061, job CPU seconds nearly halved; same machine and
    hour, beside a training job; docs/performance.md). Only for the CPU: on CUDA and MPS the activations live in device memory, and
    those backends are happiest driven from the thread that set them up. Not a rule for every
    model: separation (htdemucs) on such a thread grew faster (60 -> 600 s: 1667 -> 2546 MB against
    1481 -> 1934 MB), so it stays on the streaming thread.
    """

    def __init__(self, device: torch.device | str):
        self.enabled = torch.device(device).type == "cpu"
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> ModelThread:
        if self.enabled:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="resonate-model")
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def run(self, fn: Callable[..., _T], *args) -> _T:
        """``fn(*args)`` on the model thread (here when the context is not open or not needed)."""
        if self._pool is None:
            return fn(*args)
        return self._pool.submit(fn, *args).result()
