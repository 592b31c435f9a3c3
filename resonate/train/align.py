"""Aligning a concert recording to its studio master (real pairs: `{song}_0.wav` vs `{song}_{k}.wav`).

Two steps on a 4 kHz mono copy: the global offset by FFT cross-correlation of the whole signals,
then local offsets in overlapping windows around it. A straight line through the local offsets
(robust: refit without outliers) gives offset and clock drift; the recording is then resampled
by the drift ratio (soxr) and shifted, and both are cut to their common span.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

ANALYSIS_SR = 4000


@dataclass(frozen=True)
class Alignment:
    offset_s: float       # the recording's time of the master's t = 0
    drift: float          # recording seconds per master second - 1 (e.g. 1e-4 = 100 ppm fast)
    confidence: float     # normalised peak of the global cross-correlation (0..1)
    windows_used: int


def _analysis(x: np.ndarray, sr: int) -> np.ndarray:
    mono = np.atleast_2d(x).mean(axis=0).astype(np.float64)
    y = soxr.resample(mono, sr, ANALYSIS_SR, quality="HQ")
    # Whitening-ish: the first difference de-emphasises the boomy low end that rooms exaggerate.
    y = np.diff(y, prepend=y[:1])
    return y / (np.std(y) + 1e-12)


def _xcorr_lag(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    """Lag L maximising sum a[t] * b[t + L] (b delayed by L), and the normalised peak."""
    corr = signal.fftconvolve(b, a[::-1], mode="full")
    i = int(np.argmax(np.abs(corr)))
    norm = np.sqrt(np.sum(a ** 2) * np.sum(b ** 2)) + 1e-12
    return i - (len(a) - 1), float(np.abs(corr[i]) / norm)


def estimate_alignment(master: np.ndarray, recording: np.ndarray, sr: int, window_s: float = 3.0,
                       hop_s: float = 1.5, search_s: float = 0.5) -> Alignment:
    a, b = _analysis(master, sr), _analysis(recording, sr)
    lag, conf = _xcorr_lag(a, b)
    win, hop, search = int(window_s * ANALYSIS_SR), int(hop_s * ANALYSIS_SR), int(search_s * ANALYSIS_SR)
    times, lags = [], []
    for start in range(0, max(len(a) - win, 0) + 1, hop):
        seg = a[start: start + win]
        lo = start + lag - search
        hi = start + lag + win + search
        if lo < 0 or hi > len(b) or np.std(seg) < 1e-6:
            continue
        local, c = _xcorr_lag(seg, b[lo:hi])
        if c < 0.05:
            continue
        times.append((start + win / 2) / ANALYSIS_SR)
        lags.append((lo + local - start) / ANALYSIS_SR)
    if len(times) >= 3:
        t, lag_s = np.array(times), np.array(lags)
        slope, intercept = np.polyfit(t, lag_s, 1)
        keep = np.abs(lag_s - (slope * t + intercept)) < 3.0 / ANALYSIS_SR + 0.002
        if keep.sum() >= 3:
            slope, intercept = np.polyfit(t[keep], lag_s[keep], 1)
        return Alignment(float(intercept), float(slope), conf, int(keep.sum()))
    return Alignment(lag / ANALYSIS_SR, 0.0, conf, 0)


def apply_alignment(master: np.ndarray, recording: np.ndarray, sr: int, al: Alignment) -> tuple[np.ndarray, np.ndarray]:
    """Warp and shift the recording onto the master's timeline; cut both to the common span."""
    rec = np.atleast_2d(recording)
    if abs(al.drift) > 1e-6:
        # Recording time = master time * (1 + drift) + offset: resample so one master second is one second.
        rate_in = sr * (1.0 + al.drift)
        rec = soxr.resample(rec.T.astype(np.float64), rate_in, sr, quality="VHQ").T
    shift = int(round(al.offset_s / (1.0 + al.drift) * sr))
    master = np.atleast_2d(master)
    if shift >= 0:
        rec = rec[:, shift:]
    else:
        master = master[:, -shift:]
    n = min(master.shape[-1], rec.shape[-1])
    return np.ascontiguousarray(master[:, :n], dtype=np.float32), np.ascontiguousarray(rec[:, :n], dtype=np.float32)


def align_pair(master: np.ndarray, recording: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, Alignment]:
    al = estimate_alignment(master, recording, sr)
    m, r = apply_alignment(master, recording, sr, al)
    return m, r, al
