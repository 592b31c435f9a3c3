"""Loudness (ITU-R BS.1770 / EBU R128) and true peak, measured as a stream.

The meter keeps only one mean-square value per channel per 100 ms, so a three-hour file costs a
few hundred kilobytes. Filter coefficients follow the same RBJ formulas as pyloudnorm, so the
two agree on whole files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LRA_RELATIVE_GATE_LU = -20.0
OVERSAMPLE = 4
CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample (-0.009 dBFS)


def _biquad_high_shelf(rate: float, fc: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    a_ = 10 ** (gain_db / 40.0)
    w0 = 2 * np.pi * fc / rate
    alpha = np.sin(w0) / (2 * q)
    cw, sa = np.cos(w0), 2 * np.sqrt(a_) * alpha
    b = [a_ * ((a_ + 1) + (a_ - 1) * cw + sa), -2 * a_ * ((a_ - 1) + (a_ + 1) * cw), a_ * ((a_ + 1) + (a_ - 1) * cw - sa)]
    a = [(a_ + 1) - (a_ - 1) * cw + sa, 2 * ((a_ - 1) - (a_ + 1) * cw), (a_ + 1) - (a_ - 1) * cw - sa]
    return np.array(b) / a[0], np.array(a) / a[0]


def _biquad_high_pass(rate: float, fc: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    w0 = 2 * np.pi * fc / rate
    alpha = np.sin(w0) / (2 * q)
    cw = np.cos(w0)
    b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
    a = [1 + alpha, -2 * cw, 1 - alpha]
    return np.array(b) / a[0], np.array(a) / a[0]


def k_weighting_sos(rate: int) -> np.ndarray:
    """The BS.1770 K-weighting pre-filter (shelf + high-pass) as second-order sections."""
    b1, a1 = _biquad_high_shelf(rate, 1500.0, 4.0, 1 / np.sqrt(2))
    b2, a2 = _biquad_high_pass(rate, 38.0, 0.5)
    return np.array([np.concatenate([b1, a1]), np.concatenate([b2, a2])])


def _power_to_lufs(p: np.ndarray | float) -> np.ndarray | float:
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(p)


class LoudnessMeter:
    """Streaming integrated loudness, loudness range and (optionally) true peak."""

    def __init__(self, rate: int, channels: int, true_peak: bool = True):
        self.rate, self.channels = rate, channels
        self._sos = k_weighting_sos(rate)
        self._zi = np.zeros((channels, self._sos.shape[0], 2))
        self._hop = int(round(0.1 * rate))
        self._partial_sum = np.zeros(channels)
        self._partial_n = 0
        self._sub_blocks: list[np.ndarray] = []     # (channels,) mean squares per 100 ms
        self._total_sum = np.zeros(channels)
        self._total_n = 0
        self._tp = TruePeakMeter(rate, channels) if true_peak else None
        self.sample_peak = 0.0
        self.clipped_samples = 0

    def update(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        if block.shape[-1] == 0:
            return
        # Peaks and the true-peak envelope in the block's own precision (float32 in the chain);
        # only the K-weighting filter needs float64 (its 38 Hz poles sit very close to 1).
        peak = np.abs(block)
        self.sample_peak = max(self.sample_peak, float(peak.max()))
        self.clipped_samples += int(np.count_nonzero(peak >= CLIP_LEVEL))
        if self._tp is not None:
            self._tp.update(block)
        y, self._zi = signal.sosfilt(self._sos, block.astype(np.float64), axis=-1, zi=self._zi.transpose(1, 0, 2))
        self._zi = self._zi.transpose(1, 0, 2)
        sq = y * y
        self._total_sum += sq.sum(axis=-1)
        self._total_n += sq.shape[-1]
        i = 0
        n = sq.shape[-1]
        if self._partial_n:
            take = min(self._hop - self._partial_n, n)
            self._partial_sum += sq[:, :take].sum(axis=-1)
            self._partial_n += take
            i = take
            if self._partial_n == self._hop:
                self._sub_blocks.append(self._partial_sum / self._hop)
                self._partial_sum = np.zeros(self.channels)
                self._partial_n = 0
        full = (n - i) // self._hop
        if full:
            seg = sq[:, i: i + full * self._hop].reshape(self.channels, full, self._hop).mean(axis=-1)
            self._sub_blocks.extend(seg.T)
            i += full * self._hop
        if i < n:
            self._partial_sum += sq[:, i:].sum(axis=-1)
            self._partial_n += n - i

    @property
    def hop(self) -> int:
        """Samples per 100 ms sub-block."""
        return self._hop

    def hop_powers(self) -> np.ndarray:
        """Channel-summed K-weighted mean square of every complete 100 ms sub-block so far."""
        if not self._sub_blocks:
            return np.zeros(0)
        return np.asarray(self._sub_blocks).sum(axis=1)  # channel weights are 1 for L, R (and mono)

    def mean_power(self) -> float:
        """Channel-summed K-weighted mean square of everything so far (ungated)."""
        return float((self._total_sum / self._total_n).sum()) if self._total_n else 0.0

    def _block_powers(self, sub_per_block: int) -> np.ndarray:
        """Channel-summed mean-square power of sliding blocks of ``sub_per_block`` x 100 ms."""
        return _sliding_powers(self.hop_powers(), sub_per_block)

    def integrated_lufs(self) -> float:
        """Gated integrated loudness; clips shorter than one 400 ms block are measured ungated."""
        return gated_lufs(self.hop_powers(), self.mean_power())

    def loudness_range_lu(self) -> float:
        """EBU Tech 3342 loudness range from 3 s short-term blocks."""
        blocks = self._block_powers(30)
        if blocks.size == 0:
            return 0.0
        st = _power_to_lufs(blocks)
        st = st[st > ABSOLUTE_GATE_LUFS]
        if st.size == 0:
            return 0.0
        rel = _power_to_lufs((10 ** ((st + 0.691) / 10)).mean()) + LRA_RELATIVE_GATE_LU
        st = st[st > rel]
        if st.size < 2:
            return 0.0
        lo, hi = np.percentile(st, [10, 95])
        return float(hi - lo)

    def true_peak_dbtp(self) -> float:
        if self._tp is None:
            raise RuntimeError("meter built without true peak")
        return self._tp.dbtp()

    def summary(self) -> dict[str, float]:
        out = {
            "integrated_lufs": _round(self.integrated_lufs()),
            "loudness_range_lu": _round(self.loudness_range_lu()),
            "sample_peak_dbfs": _round(amplitude_to_db(self.sample_peak)),
            "clipped_samples": self.clipped_samples,
        }
        if self._tp is not None:
            out["true_peak_dbtp"] = _round(self.true_peak_dbtp())
        return out


def _sliding_powers(hop_powers: np.ndarray, sub_per_block: int) -> np.ndarray:
    if hop_powers.size < sub_per_block:
        return np.zeros(0)
    return np.convolve(hop_powers, np.ones(sub_per_block) / sub_per_block, mode="valid")


def gated_lufs(hop_powers: np.ndarray, mean_power: float) -> float:
    """BS.1770 integrated loudness from channel-summed 100 ms powers (400 ms blocks, 75 % overlap,
    absolute and relative gates); under one block, ``mean_power`` ungated."""
    blocks = _sliding_powers(np.asarray(hop_powers, dtype=np.float64), 4)
    if blocks.size == 0:
        return float(_power_to_lufs(mean_power)) if mean_power > 0 else float("-inf")
    lufs = _power_to_lufs(blocks)
    kept = blocks[lufs > ABSOLUTE_GATE_LUFS]
    if kept.size == 0:
        return float("-inf")
    rel = _power_to_lufs(kept.mean()) + RELATIVE_GATE_LU
    kept = kept[_power_to_lufs(kept) > rel]
    return float(_power_to_lufs(kept.mean())) if kept.size else float("-inf")


def _round(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 2)


def amplitude_to_db(a: float) -> float:
    return float(20 * np.log10(a)) if a > 0 else float("-inf")


def db_to_amplitude(db: float) -> float:
    return float(10 ** (db / 20))


# ---------------------------------------------------------------------------------------------
# True peak: 4x interpolation, streamed with a little history.

_TAPS_PER_PHASE = 24
# Odd length, cutoff at the original Nyquist: a 4x "Nyquist filter" whose every 4th tap is zero,
# so the interpolated points include the original samples exactly.
_INTERP = signal.firwin(OVERSAMPLE * _TAPS_PER_PHASE + 1, 1.0 / OVERSAMPLE, window=("kaiser", 8.0)) * OVERSAMPLE
# Polyphase form of the same filter. Phase 0 (the original sample instants) is the centre tap
# alone; phases 1..3 (the points a quarter, half and three quarters of a sample later) are 24-tap
# FIRs. Convolving the signal with these three short filters gives exactly what zero-stuffing and
# filtering with ``_INTERP`` gives, at a quarter of the work and without the 4x-long array.
_CENTRE_TAP = float(_INTERP[OVERSAMPLE * _TAPS_PER_PHASE // 2])
_PHASES = np.stack([_INTERP[p::OVERSAMPLE][:_TAPS_PER_PHASE] for p in range(1, OVERSAMPLE)]).astype(np.float32)
# Overlap-save FFT size for the phase filters: short FFTs batched over (channel, segment) stay
# in cache and beat both one long FFT per block and direct convolution.
_OLS_FFT = 8192
# The batched FFTs split over the machine's cores (pocketfft threads; the chain runs one stage at a time).
_FFT_WORKERS = max(1, min(4, os.cpu_count() or 1))


_PHASE_SPECTRA: dict[int, np.ndarray] = {}


def _phase_spectra(nfft: int) -> np.ndarray:
    spectra = _PHASE_SPECTRA.get(nfft)
    if spectra is None:
        spectra = _PHASE_SPECTRA[nfft] = sp_fft.rfft(_PHASES, nfft, axis=-1)
    return spectra


# No interpolated point can exceed max|x| over its 24 input samples times the phase filter's
# L1 norm: segments whose sample peak, so scaled, stays at or below what the caller cares about
# (the limiter's ceiling, the meter's running peak) need no filtering at all.
_PEAK_BOUND = float(np.abs(_PHASES.astype(np.float64)).sum(axis=-1).max())


# With a floor, the bound is also checked per 32 outputs; when few such stretches can reach the
# floor (a meter's running peak is usually far above most of the music), only those are
# interpolated, by direct convolution.
_SPARSE_BLOCK = 32
_SPARSE_MAX_FRACTION = 0.25
_PHASES_REVERSED = np.ascontiguousarray(_PHASES[:, ::-1].T)      # (taps, 3): window @ this = FIR outputs


def _interpolated_peaks(ctx: np.ndarray, n: int, floor: float = 0.0) -> np.ndarray:
    """max over channels and phases 1..3 of |interpolated value| for ``n`` samples of ``ctx``.

    ``ctx`` is (channels, n + 24) float32: 24 samples of history, then the block. Output k is
    for ctx sample ``k + 12`` (the filter needs 11 samples before and 12 after it). Where the
    interpolated peak provably cannot exceed ``floor``, the output is 0 instead.
    """
    if floor > 0 and n >= 4 * _SPARSE_BLOCK:
        sparse = _sparse_interpolated_peaks(ctx, n, floor)
        if sparse is not None:
            return sparse
    taps = _TAPS_PER_PHASE
    channels, length = ctx.shape
    nfft = _OLS_FFT if n >= _OLS_FFT else sp_fft.next_fast_len(length + taps - 1, real=True)
    hop = nfft - (taps - 1)
    valid = length - (taps - 1)                    # full-overlap outputs: conv index taps-1 .. length-1
    segments = -(-valid // hop)
    padded = np.zeros((channels, (segments - 1) * hop + nfft), dtype=np.float32)
    padded[:, :length] = ctx
    frames = np.lib.stride_tricks.sliding_window_view(padded, nfft, axis=-1)[:, ::hop]   # (C, segments, nfft)
    peaks = np.zeros((segments, hop), dtype=np.float32)
    needed = np.abs(frames).max(axis=(0, 2)) * _PEAK_BOUND > floor if floor > 0 else np.ones(segments, dtype=bool)
    if needed.any():
        todo = frames if needed.all() else frames[:, needed]
        spec = sp_fft.rfft(todo, axis=-1, workers=_FFT_WORKERS)[:, :, None, :] * _phase_spectra(nfft)
        y = sp_fft.irfft(spec, nfft, axis=-1, workers=_FFT_WORKERS)[..., taps - 1:]                            # (C, S, 3, hop)
        peaks[needed] = np.abs(y).max(axis=(0, 2))
    # conv index j (j >= taps-1) is centred on ctx sample j - 12; we want samples 12 .. 12 + n - 1.
    return peaks.reshape(-1)[1: n + 1]


def _sparse_interpolated_peaks(ctx: np.ndarray, n: int, floor: float) -> np.ndarray | None:
    """``_interpolated_peaks`` for the stretches of ``_SPARSE_BLOCK`` outputs that could exceed
    ``floor``; None when too many could (the batched FFTs are then cheaper)."""
    block, taps = _SPARSE_BLOCK, _TAPS_PER_PHASE
    channels, length = ctx.shape
    blocks = -(-n // block)
    # Output k is sum_i h[i] ctx[k + 24 - i]: it reads ctx[k + 1 .. k + 24], so outputs
    # [b B, b B + B) read within ctx[b B, (b + 2) B): bound by the max of two B-sample maxima.
    size = (blocks + 1) * block + taps
    padded = np.zeros((channels, size), dtype=np.float32)
    padded[:, :length] = ctx
    local = np.abs(padded[:, : (blocks + 1) * block]).max(axis=0).reshape(blocks + 1, block).max(axis=1)
    needed = np.flatnonzero(np.maximum(local[:-1], local[1:]) * _PEAK_BOUND > floor)
    out = np.zeros(blocks * block, dtype=np.float32)
    if needed.size > _SPARSE_MAX_FRACTION * blocks:
        return None
    if needed.size:
        spans = np.lib.stride_tricks.sliding_window_view(padded, block + taps - 1, axis=-1)[:, needed * block + 1]
        windows = np.lib.stride_tricks.sliding_window_view(spans, taps, axis=-1)      # (C, k, B, taps)
        y = windows @ _PHASES_REVERSED                                                  # (C, k, B, 3)
        out.reshape(blocks, block)[needed] = np.abs(y).max(axis=(0, 3))
    return out[:n]


class TruePeakEnvelope:
    """Per-sample true-peak envelope: max over channels of |x| on the 4x grid in [s, s+1).

    Output value k belongs to input sample ``k - delay``; the first ``delay`` values describe the
    silence before the start. A limiter delays its audio by the same amount to line them up.
    """

    def __init__(self, channels: int):
        self.channels = channels
        self.delay = _TAPS_PER_PHASE // 2
        self._hist = np.zeros((channels, _TAPS_PER_PHASE), dtype=np.float32)

    def update(self, block: np.ndarray, floor: float = 0.0) -> np.ndarray:
        """Return the (n,) float32 envelope for one (channels, n) block.

        Values the true peak cannot lift above ``floor`` may be left at the sample peak (a lower
        bound); everything above ``floor`` is exact.
        """
        n = block.shape[-1]
        ctx = np.concatenate([self._hist, np.asarray(block, dtype=np.float32)], axis=-1)
        self._hist = ctx[:, -_TAPS_PER_PHASE:]
        env = np.abs(ctx[:, self.delay: self.delay + n]).max(axis=0) * np.float32(_CENTRE_TAP)
        np.maximum(env, _interpolated_peaks(ctx, n, floor), out=env)
        return env

    def tail(self) -> float:
        """Envelope maximum of the last ``delay`` samples (not yet emitted), without changing state."""
        saved = self._hist
        out = float(self.update(np.zeros((self.channels, self.delay))).max())
        self._hist = saved
        return out


class TruePeakMeter:
    def __init__(self, rate: int, channels: int):
        self._env = TruePeakEnvelope(channels)
        self.peak = 0.0

    def update(self, block: np.ndarray) -> None:
        if block.shape[-1]:
            # Only stretches that could beat the running peak are interpolated.
            floor = max(self.peak, float(np.abs(block).max()) * _CENTRE_TAP)
            self.peak = max(self.peak, float(self._env.update(block, floor).max()))

    def dbtp(self) -> float:
        return amplitude_to_db(max(self.peak, self._env.tail()))


def true_peak_dbtp(x: np.ndarray, rate: int = 48000) -> float:
    """True peak of a whole (channels, n) array in dBTP (4x oversampled)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    m = TruePeakMeter(rate, x.shape[0])
    m.update(x)
    return m.dbtp()


def integrated_lufs(x: np.ndarray, rate: int) -> float:
    m = LoudnessMeter(rate, np.atleast_2d(x).shape[0], true_peak=False)
    m.update(np.atleast_2d(x))
    return m.integrated_lufs()


@dataclass(frozen=True)
class LoudnessMeasurement:
    integrated_lufs: float
    loudness_range_lu: float
    true_peak_dbtp: float
    sample_peak_dbfs: float
