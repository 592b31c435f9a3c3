"""Running Demucs over a stream in windows, so memory is bounded by the window, not the file.

``demucs.apply.apply_model`` on a whole file allocates full-length tensors (mix, every stem, the
weight sum): tens of GB for a long show. Here the stream is cut into windows of about
``window_seconds`` by the engine's shared :class:`~resonate.chunking.OverlapAdd`; each window goes
through ``apply_model``, which itself splits it into the model's segments.

Windows are placed on apply_model's own segment grid: the hop between windows is a whole number
of segment strides and neighbouring windows overlap by one segment. Every segment that lies fully
inside a window then sees exactly the samples it would see in a whole-file run, so the windowed
result is the whole-file result except in short stretches at each seam, where two valid estimates
are crossfaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from demucs.apply import apply_model

from resonate.audio.resample import StreamResampler
from resonate.chunking import OverlapAdd

OUT_BLOCK = 1 << 16          # frames per block handed downstream (the pipeline's own block size)


@dataclass(frozen=True)
class WindowPlan:
    window: int         # samples per window, at the model's rate
    overlap: int        # crossfade between neighbouring windows, in samples
    segment_length: int
    stride: int

    @property
    def hop(self) -> int:
        return self.window - self.overlap


def plan_windows(samplerate: int, segment, overlap: float, window_seconds: float) -> WindowPlan:
    """Window sizes snapped to apply_model's segment grid (see the module docstring)."""
    segment_length = int(samplerate * segment)         # the same expressions as demucs.apply
    stride = int((1 - overlap) * segment_length)
    if stride <= 0:
        raise ValueError("overlap leaves no stride between segments")
    crossfade = segment_length
    min_strides = math.ceil(crossfade / stride)          # OverlapAdd needs hop >= crossfade
    strides = max(min_strides, round((window_seconds * samplerate - crossfade) / stride))
    return WindowPlan(strides * stride + crossfade, crossfade, segment_length, stride)


def match_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Mono to stereo by copying, stereo to mono by averaging; anything else is refused."""
    have = x.shape[-2]
    if have == channels:
        return x
    if have == 1:
        return np.repeat(x, channels, axis=-2)
    if channels == 1:
        return x.mean(axis=-2, keepdims=True)
    raise ValueError(f"cannot map {have} channels to {channels}")


class WindowSeparator:
    """``fn`` for OverlapAdd: one (channels, n) window in, (stems, channels, n) out.

    Counts windows and time spent in the model for the report.
    """

    def __init__(self, model, *, segment, overlap: float, shifts: int, device: torch.device):
        self.model = model
        self.segment = segment
        self.overlap = overlap
        self.shifts = shifts
        self.device = device
        self.windows = 0
        self.seconds = 0.0

    def __call__(self, window: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        mix = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None]
        out = apply_model(self.model, mix, shifts=self.shifts, split=True, overlap=self.overlap,
                          segment=self.segment, device=self.device, progress=False)
        self.windows += 1
        self.seconds += time.perf_counter() - start
        return out[0].cpu().numpy()


def separate_stream(
    blocks: Iterable[np.ndarray],
    separate_window: Callable[[np.ndarray], np.ndarray],
    *,
    n_stems: int,
    in_rate: int,
    in_channels: int,
    model_rate: int,
    model_channels: int,
    plan: WindowPlan,
    fixed_shape: bool,
) -> Iterator[np.ndarray]:
    """(channels, n) blocks at ``in_rate`` -> (stems, channels, m) blocks at ``in_rate``.

    Converts to the model's rate and channel count only when they differ, and back afterwards.
    The total output length is the input's up to a sample or two of resampling rounding; the
    caller trims it to the exact length.
    """
    to_model = StreamResampler(in_rate, model_rate, model_channels)
    from_model = StreamResampler(model_rate, in_rate, n_stems * model_channels)
    windows = OverlapAdd(separate_window, plan.window, plan.overlap, fixed_shape=fixed_shape)

    mixes = to_model.stream(match_channels(b, model_channels) for b in blocks)
    stems = (s.reshape(n_stems * model_channels, -1) for s in _slices(windows.stream(mixes), OUT_BLOCK))
    for flat in from_model.stream(stems):
        yield match_channels(flat.reshape(n_stems, model_channels, -1), in_channels)


def _slices(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Views of at most ``size`` frames: everything downstream of a window then works on small blocks."""
    for b in blocks:
        for i in range(0, b.shape[-1], size):
            yield b[..., i: i + size]
