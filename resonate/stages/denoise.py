"""Denoise: spectral gating (noisereduce's algorithm), gentle by default.

Gating smears and thins music when overdone, so the default removes at most ~4 dB from bins that
sit below the noise profile's threshold (``strength`` 0.4), leaves everything above it alone,
smooths the gate over only a couple of frequency bins (so harmonics are not pulled down), and
learns the noise from the quietest stretch of the recording (or a range the user picks).

The gate itself is :mod:`resonate.dsp.spectral_gate` (noisereduce's stationary gate reimplemented
so that the noise statistics are computed once per file; the adaptive mode still calls
noisereduce); this stage finds the noise profile and runs the gate over overlapping windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from resonate.audio.io import read_audio, read_blocks
from resonate.chunking import OverlapAdd
from resonate.config import check_ranges, setting
from resonate.dsp.spectral_gate import GateParams, StationaryGate, spectral_gate
from resonate.errors import ResonateError
from resonate.stages import register
from resonate.stages.base import Stage, StageContext

SILENCE_DBFS = -80.0


@dataclass(frozen=True)
class DenoiseConfig:
    strength: float = setting(0.4, label="Strength", range=(0.0, 1.0), step=0.05,   # noisereduce prop_decrease
                              help="spectral gating amount: 0 = off, 1 = full gating")
    stationary: bool = True                     # False: adaptive (non-stationary) noise floor
    noise_start_s: float | None = None          # user-picked noise-only range; None = find the quietest stretch
    noise_end_s: float | None = None
    profile_seconds: float = 2.0
    threshold_std: float = 1.5                  # stationary gate threshold above the noise mean, in std devs
    n_fft: int = 2048
    freq_smooth_bins: int = 2                   # mask smoothing across frequency, in STFT bins
    time_smooth_ms: float = 50.0
    window_seconds: float = 10.0
    overlap_seconds: float = 0.5

    def __post_init__(self):
        check_ranges(self)
        if (self.noise_start_s is None) != (self.noise_end_s is None):
            raise ValueError("give both noise_start_s and noise_end_s, or neither")
        if self.noise_start_s is not None and not 0 <= self.noise_start_s < self.noise_end_s:
            raise ValueError("noise range must satisfy 0 <= start < end")

    @property
    def gate(self) -> GateParams:
        """The gate's own parameters."""
        return GateParams(self.n_fft, self.threshold_std, self.freq_smooth_bins, self.time_smooth_ms)


def quietest_stretch(path, sr: int, seconds: float) -> tuple[int, int] | None:
    """Start/stop frames of the quietest ``seconds`` of a file that is not digital silence."""
    frame = max(1, int(0.25 * sr))
    rms = []
    for block in read_blocks(path, frame):
        rms.append(float(np.sqrt(np.mean(block.astype(np.float64) ** 2))))
    if not rms:
        return None
    levels = 20 * np.log10(np.maximum(np.asarray(rms), 1e-12))
    span = max(1, int(round(seconds / 0.25)))
    if len(levels) < span:
        return None
    audible = levels > SILENCE_DBFS
    window_level = np.convolve(levels, np.ones(span) / span, mode="valid")
    window_audible = np.convolve(audible.astype(float), np.ones(span), mode="valid") == span
    if not window_audible.any():
        return None
    i = int(np.argmin(np.where(window_audible, window_level, np.inf)))
    return i * frame, (i + span) * frame


@register
class DenoiseStage(Stage):
    name = "denoise"
    Config = DenoiseConfig

    def open(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.noise_clip: np.ndarray | None = None
        self._stationary_gate: StationaryGate | None = None
        self.profile: str = "none"
        cfg = self.config
        if cfg.strength <= 0 or not cfg.stationary or ctx.input_path is None:
            self.profile = "adaptive" if not cfg.stationary else "per-window"
            return
        sr = ctx.sample_rate
        if cfg.noise_start_s is not None:
            start, stop = int(cfg.noise_start_s * sr), int(cfg.noise_end_s * sr)
            if ctx.total_frames is not None and start >= ctx.total_frames:
                raise ResonateError(
                    f"noise range starts at {cfg.noise_start_s:g} s, after the end of the recording"
                )
            self.profile = f"{cfg.noise_start_s:g}-{cfg.noise_end_s:g} s"
        else:
            found = quietest_stretch(ctx.input_path, sr, cfg.profile_seconds)
            if found is None:
                self.profile = "per-window"
                return
            start, stop = found
            self.profile = f"quietest {cfg.profile_seconds:g} s at {start / sr:.1f} s"
        clip, _ = read_audio(ctx.input_path, start, stop)
        self.noise_clip = clip if clip.shape[-1] >= self.config.n_fft else None
        if self.noise_clip is not None:
            # The noise statistics are the same for every window: compute them once per file.
            self._stationary_gate = StationaryGate(self.noise_clip, sr, cfg.gate)

    def _gate(self, window: np.ndarray) -> np.ndarray:
        cfg = self.config
        if self._stationary_gate is not None:
            return self._stationary_gate(window, cfg.strength)
        # No noise clip (or the adaptive mode): each window is its own noise reference.
        return spectral_gate(window, self.ctx.sample_rate, cfg.strength, cfg.stationary, None, cfg.gate)

    def stream(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        if self.config.strength <= 0:
            yield from blocks
            return
        sr = self.ctx.sample_rate
        window = int(self.config.window_seconds * sr)
        overlap = int(self.config.overlap_seconds * sr)
        yield from OverlapAdd(self._gate, window, overlap, fixed_shape=False).stream(blocks)

    def report(self) -> dict:
        return {"strength": self.config.strength, "noise_profile": self.profile}
