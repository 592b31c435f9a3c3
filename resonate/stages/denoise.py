"""Denoise: noisereduce spectral gating, gentle by default.

Gating smears and thins music when overdone, so the default removes at most ~4 dB from bins that
sit below the noise profile's threshold (``strength`` 0.4), leaves everything above it alone,
smooths the gate over only a couple of frequency bins (so harmonics are not pulled down), and
learns the noise from the quietest stretch of the recording (or a range the user picks).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import noisereduce as nr
import numpy as np

from resonate.audio.io import read_audio, read_blocks
from resonate.chunking import OverlapAdd
from resonate.errors import ResonateError
from resonate.stages import register
from resonate.stages.base import Stage, StageContext

SILENCE_DBFS = -80.0


@dataclass(frozen=True)
class DenoiseConfig:
    strength: float = 0.4                       # noisereduce prop_decrease: 0 = off, 1 = full gating
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
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError("strength must be between 0 and 1")
        if (self.noise_start_s is None) != (self.noise_end_s is None):
            raise ValueError("give both noise_start_s and noise_end_s, or neither")
        if self.noise_start_s is not None and not 0 <= self.noise_start_s < self.noise_end_s:
            raise ValueError("noise range must satisfy 0 <= start < end")


def spectral_gate(x: np.ndarray, sr: int, strength: float, stationary: bool = True,
                  noise_clip: np.ndarray | None = None, config: DenoiseConfig | None = None) -> np.ndarray:
    """Spectral gating of a (channels, n) array. Pure function; also used per stem by separation."""
    cfg = config or DenoiseConfig()
    if strength <= 0 or x.shape[-1] < cfg.n_fft:
        return np.asarray(x, dtype=np.float32)
    hop = cfg.n_fft // 4
    out = nr.reduce_noise(
        y=x, sr=sr, stationary=stationary, y_noise=noise_clip, prop_decrease=float(strength),
        n_std_thresh_stationary=cfg.threshold_std, n_fft=cfg.n_fft, hop_length=hop,
        # noisereduce's default 500 Hz mask smoothing averages a harmonic's narrow peak with the
        # gated bins around it and pulls it down by ~6 dB: that is the "thin, smeared" sound of
        # over-gated music. A couple of bins keeps partials intact.
        freq_mask_smooth_hz=(cfg.freq_smooth_bins + 0.01) * sr / (cfg.n_fft / 2), time_mask_smooth_ms=cfg.time_smooth_ms,
        n_jobs=1, use_tqdm=False,
    )
    return np.asarray(out, dtype=np.float32)


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

    def _gate(self, window: np.ndarray) -> np.ndarray:
        cfg = self.config
        noise = self.noise_clip
        if noise is not None and noise.shape[0] != window.shape[0]:
            noise = np.broadcast_to(noise.mean(axis=0, keepdims=True), (window.shape[0], noise.shape[1]))
        return spectral_gate(window, self.ctx.sample_rate, cfg.strength, cfg.stationary, noise, cfg)

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
