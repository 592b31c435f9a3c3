"""Synthetic shows for the fusion tests: one source through several rooms, independent crowd noise
and phone filters per recording, known start offsets and clock drift. Everything is made here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal


def synth_music(seconds: float, sr: int, seed: int) -> np.ndarray:
    """(2, n) music-like signal: three voices of harmonic notes with decaying envelopes, a kick and
    a hi-hat on a slightly swinging beat. Not periodic, so every stretch has one true alignment."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros((2, n + sr))
    for voice in range(3):
        t = float(rng.uniform(0, 0.3))
        while t < seconds:
            dur = float(rng.uniform(0.15, 0.7))
            m = int(dur * sr)
            tt = np.arange(m) / sr
            f0 = 110.0 * 2 ** (rng.integers(0, 30) / 12 + voice)
            env = np.minimum(1.0, tt / 0.005) * np.exp(-tt / rng.uniform(0.08, 0.4))
            note = sum(np.sin(2 * np.pi * k * f0 * tt + rng.uniform(0, 6.3)) / k
                       for k in range(1, 9) if k * f0 < 0.45 * sr) * env
            pan = rng.uniform(0.2, 0.8)
            s = int(t * sr)
            out[0, s: s + m] += note * (1 - pan) * 0.3
            out[1, s: s + m] += note * pan * 0.3
            t += dur * rng.uniform(0.6, 1.1)
    beat = 0.5
    t = 0.0
    hat_sos = signal.butter(2, min(6000, 0.4 * sr), "highpass", fs=sr, output="sos")
    while t < seconds:
        s = int((t + rng.normal(0, 0.01)) * sr)
        m = int(0.25 * sr)
        tt = np.arange(m) / sr
        kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-tt / 0.03)) * tt) * np.exp(-tt / 0.12)
        hat = signal.sosfilt(hat_sos, rng.standard_normal(m)) * np.exp(-tt / 0.02)
        s = max(0, s)
        if rng.random() < 0.7:
            out[:, s: s + m] += 0.5 * kick
        out[:, s: s + m] += 0.2 * hat * rng.uniform(0.5, 1.0)
        t += beat * rng.uniform(0.9, 1.1)
    return out[:, :n]


def synth_room(sr: int, rng: np.random.Generator) -> np.ndarray:
    """(2, m) room response: direct sound at 0, early reflections, a decaying noise tail."""
    rt60 = rng.uniform(0.4, 0.9)
    m = int(rt60 * sr)
    t = np.arange(m) / sr
    h = np.zeros((2, m))
    h[:, 0] = 1.0
    for _ in range(6):
        h[:, int(rng.uniform(0.002, 0.03) * sr)] += rng.uniform(-0.6, 0.6)
    tail = rng.standard_normal((2, m)) * np.exp(-6.91 * t / rt60) * (t > 0.005)
    tail = signal.sosfilt(signal.butter(2, min(5000, 0.4 * sr), "lowpass", fs=sr, output="sos"), tail, axis=-1)
    drr_db = rng.uniform(-2, 4)
    tail *= np.sqrt(np.sum(h ** 2) / 2 / 10 ** (drr_db / 10) / (np.sum(tail ** 2) / 2))
    return h + tail


def synth_crowd(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """(2, n) crowd near a phone: murmur (speech-band noise, syllable-rate modulation) and claps."""
    sos = signal.butter(2, [300, min(3000, 0.4 * sr)], "bandpass", fs=sr, output="sos")
    t = np.arange(n) / sr
    out = np.zeros((2, n))
    for c in range(2):
        for _ in range(4):
            mod = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.3))
            out[c] += signal.sosfilt(sos, rng.standard_normal(n)) * mod ** 2
    for _ in range(int(n / sr * 2)):
        s, m = int(rng.integers(0, n)), int(0.03 * sr)
        burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.008 * sr))
        out[:, s: s + m] += 3 * burst[: n - s]
    return out


@dataclass
class Take:
    audio: np.ndarray     # (channels, n) float32, what the phone wrote
    clean: np.ndarray     # (channels, n) the dry source on this phone's clock and span
    start_s: float        # true time of its first sample
    drift: float          # its clock: sample n at true time start + n (1 + drift) / sr
    seconds: float


def make_take(source: np.ndarray, sr: int, start_s: float, seconds: float, drift_ppm: float, seed: int,
              snr_db: float = 3.0, mono: bool = False) -> Take:
    """One phone's recording of ``source``: its room, its crowd, its microphone, its clock."""
    rng = np.random.default_rng(seed)
    s0 = int(round(start_s * sr))
    need = int(seconds * (1 + abs(drift_ppm) * 1e-6) * sr) + sr
    dry = source[:, s0: s0 + need]
    wet = signal.fftconvolve(dry, synth_room(sr, rng), axes=-1)[:, : dry.shape[-1]]
    crowd = synth_crowd(dry.shape[-1], sr, rng)
    crowd *= np.sqrt(np.mean(wet ** 2) / np.mean(crowd ** 2) / 10 ** (snr_db / 10))
    y = wet + crowd
    hp = signal.butter(2, rng.uniform(80, 200), "highpass", fs=sr, output="sos")
    lp = signal.butter(4, min(rng.uniform(4000, 9000), 0.45 * sr), "lowpass", fs=sr, output="sos")
    y = signal.sosfilt(np.concatenate([hp, lp]), y, axis=-1) * rng.uniform(0.5, 2.0)
    drift = drift_ppm * 1e-6
    n = int(seconds * sr)

    def clock(x: np.ndarray) -> np.ndarray:
        if drift == 0:
            return x[:, :n]
        # Sample m of the output at source sample m (1 + drift): resample from sr to sr / (1 + drift).
        return soxr.resample(x.T, sr, sr / (1 + drift), quality="VHQ").T[:, :n]

    y, clean = clock(y), clock(dry)
    if mono:
        y = y.mean(axis=0, keepdims=True)
        clean = clean.mean(axis=0, keepdims=True)
    y = y / (np.abs(y).max() + 1e-9) * 0.8
    return Take(y.astype(np.float32), clean.astype(np.float32), start_s, drift, seconds)


def true_rec_time(ref: Take, take: Take, t_ref: np.ndarray | float) -> np.ndarray | float:
    """``take``'s time of the instant that is ``t_ref`` on the reference's clock."""
    true = ref.start_s + np.asarray(t_ref) * (1 + ref.drift)
    return (true - take.start_s) / (1 + take.drift)
