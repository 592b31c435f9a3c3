"""Spectral gating: noisereduce's stationary gate, reimplemented so that the noise statistics are
computed once per noise clip and the STFTs run batched on all cores (about 4x cheaper), and its
adaptive (non-stationary) gate. Used by the denoise stage and per stem by separation's remix.
"""

from __future__ import annotations

from dataclasses import dataclass

import noisereduce as nr
import numpy as np
from scipy import fft as sp_fft


@dataclass(frozen=True)
class GateParams:
    """How the gate analyses and smooths; the amount (``strength``) is given per call."""

    n_fft: int = 2048
    threshold_std: float = 1.5          # stationary threshold above the noise mean, in std devs (per bin)
    freq_smooth_bins: int = 2           # mask smoothing across frequency, in STFT bins
    time_smooth_ms: float = 50.0        # mask smoothing across time


# noisereduce's defaults that the stationary gate below reproduces.
NOISE_STATS_MAX_FRAMES = 600_000     # noisereduce ``chunk_size``: the noise clip is cut to this many samples
TOP_DB = 80.0                        # noisereduce ``_amp_to_db``: dB floor per bin, relative to its maximum


def _smoothing_kernel(n_freq: int, n_time: int) -> tuple[np.ndarray, np.ndarray]:
    """noisereduce's triangular mask-smoothing filter, as its two separable 1-D factors."""
    def tri(n: int) -> np.ndarray:
        return np.concatenate([np.linspace(0, 1, n + 1, endpoint=False), np.linspace(1, 0, n + 2)])[1:-1]
    f, t = tri(n_freq), tri(n_time)
    return (f / f.sum()).astype(np.float32), (t / t.sum()).astype(np.float32)


def _smooth_along(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Centred FIR along ``axis`` with edge values extended: a few shifted multiply-adds, which
    beats both scipy.ndimage and torch's conv2d on a one-channel image this size."""
    half = len(kernel) // 2
    if half == 0:
        return x
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)
    xp = np.pad(x, pad, mode="edge")
    out = kernel[0] * xp.take(np.arange(0, n), axis=axis)
    for k in range(1, len(kernel)):
        out += kernel[k] * np.moveaxis(np.moveaxis(xp, axis, 0)[k: k + n], 0, axis)
    return out


class StationaryGate:
    """noisereduce's stationary spectral gate, with the noise statistics computed once.

    Same algorithm as ``noisereduce.reduce_noise(stationary=True)``: per-frequency threshold =
    mean + ``threshold_std`` x std of the noise clip's STFT in dB (with noisereduce's 80 dB floor);
    bins above it pass, bins below are scaled by ``1 - strength``; the mask is smoothed with
    noisereduce's triangular filter. What differs is how it is computed: the noise analysis once
    per file instead of once per call, float32 STFTs of all channels in one batched scipy.fft call
    on both cores, the dB test done on power (no log per bin), separable smoothing, and none of
    noisereduce's 30 000-sample zero padding per call. At the very edges of a window the mask is
    extended with its edge values rather than zeros; the overlap-add crossfade hides both.
    """

    def __init__(self, noise: np.ndarray, sr: int, params: GateParams | None = None):
        cfg = params or GateParams()
        self.sr, self.n_fft, self.hop = sr, cfg.n_fft, cfg.n_fft // 4
        # Periodic Hann, as scipy.signal.stft uses; with hop = n_fft/4 the squared windows overlap-add to 1.5.
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.n_fft) / self.n_fft)).astype(np.float32)
        # Mask smoothing in bins and frames, derived exactly as noisereduce derives them from Hz and ms.
        freq_smooth_hz = (cfg.freq_smooth_bins + 0.01) * sr / (self.n_fft / 2)
        n_freq = max(1, int(freq_smooth_hz / (sr / (self.n_fft / 2))))
        n_time = max(1, int(cfg.time_smooth_ms / (self.hop / sr * 1000)))
        self.smooth = (n_freq, n_time) != (1, 1)
        self.kernel_freq, self.kernel_time = _smoothing_kernel(n_freq, n_time)
        # Noise statistics: channels averaged, cut to noisereduce's chunk size, dB with its floor.
        clip = np.atleast_2d(np.asarray(noise, dtype=np.float32)).mean(axis=0)[:NOISE_STATS_MAX_FRAMES]
        power = self._power(self._stft(clip[None]))[0].astype(np.float64)          # (frames, bins)
        db = 10 * np.log10(power + 1e-30)
        db = np.maximum(db, db.max(axis=0, keepdims=True) - TOP_DB)
        threshold_db = db.mean(axis=0) + cfg.threshold_std * db.std(axis=0)
        self.threshold_power = (10 ** (threshold_db / 10)).astype(np.float32)      # (bins,)

    def _stft(self, x: np.ndarray) -> np.ndarray:
        """(channels, n) -> (channels, frames, bins) complex64; zero-padded centred frames, as
        scipy.signal.stft(boundary="zeros") in noisereduce."""
        half = self.n_fft // 2
        padded = np.pad(x, ((0, 0), (half, half)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=-1)[:, :: self.hop]
        return sp_fft.rfft(frames * self.window, axis=-1, workers=-1, overwrite_x=True)

    def _istft(self, spec: np.ndarray, n: int) -> np.ndarray:
        """Windowed overlap-add inverse of :meth:`_stft`, cut to ``n`` samples."""
        frames = sp_fft.irfft(spec, self.n_fft, axis=-1, workers=-1) * self.window    # (C, T, n_fft)
        channels, count, _ = frames.shape
        ratio = self.n_fft // self.hop
        out = np.zeros((channels, count + ratio - 1, self.hop), dtype=np.float32)
        norm = np.zeros((count + ratio - 1, self.hop), dtype=np.float32)
        parts = frames.reshape(channels, count, ratio, self.hop)
        squares = (self.window ** 2).reshape(ratio, self.hop)
        for j in range(ratio):
            out[:, j: j + count] += parts[:, :, j]
            norm[j: j + count] += squares[j]
        half = self.n_fft // 2
        out = out.reshape(channels, -1)[:, half: half + n]
        return out / np.maximum(norm.reshape(-1)[half: half + n], 1e-8)

    @staticmethod
    def _power(spec: np.ndarray) -> np.ndarray:
        return spec.real * spec.real + spec.imag * spec.imag

    def __call__(self, x: np.ndarray, strength: float) -> np.ndarray:
        """Gate a (channels, n) float array; returns float32 of the same shape."""
        n = x.shape[-1]
        if strength <= 0 or n < self.n_fft:
            return np.asarray(x, dtype=np.float32)
        spec = self._stft(np.asarray(x, dtype=np.float32))              # (C, frames, bins)
        power = self._power(spec)
        # noisereduce compares max(dB, bin max over time - 80 dB) with the threshold.
        floor = power.max(axis=1, keepdims=True) * np.float32(10 ** (-TOP_DB / 10))
        signal = (power > self.threshold_power) | (floor > self.threshold_power)
        gain = signal.astype(np.float32)
        gain *= np.float32(strength)
        gain += np.float32(1.0 - strength)
        if self.smooth:
            gain = _smooth_along(_smooth_along(gain, self.kernel_time, axis=1), self.kernel_freq, axis=2)
        spec *= gain
        return self._istft(spec, n)


def spectral_gate(x: np.ndarray, sr: int, strength: float, stationary: bool = True,
                  noise_clip: np.ndarray | None = None, params: GateParams | None = None) -> np.ndarray:
    """Spectral gating of a (channels, n) array. Pure function; also used per stem by separation.

    Stationary: :class:`StationaryGate` with the noise profile from ``noise_clip`` (or from ``x``
    itself, as noisereduce does). Non-stationary: noisereduce's adaptive gate.
    """
    cfg = params or GateParams()
    if strength <= 0 or x.shape[-1] < cfg.n_fft:
        return np.asarray(x, dtype=np.float32)
    if stationary:
        return StationaryGate(x if noise_clip is None else noise_clip, sr, cfg)(x, float(strength))
    hop = cfg.n_fft // 4
    out = nr.reduce_noise(
        y=x, sr=sr, stationary=False, prop_decrease=float(strength), n_fft=cfg.n_fft, hop_length=hop,
        # noisereduce's default 500 Hz mask smoothing averages a harmonic's narrow peak with the
        # gated bins around it and pulls it down by ~6 dB: that is the "thin, smeared" sound of
        # over-gated music. A couple of bins keeps partials intact.
        freq_mask_smooth_hz=(cfg.freq_smooth_bins + 0.01) * sr / (cfg.n_fft / 2), time_mask_smooth_ms=cfg.time_smooth_ms,
        n_jobs=1, use_tqdm=False,
    )
    return np.asarray(out, dtype=np.float32)
