"""Room impulse responses: simulated halls and clubs (pyroomacoustics) and the measured OpenAIR rooms.

Image-source simulation of a 3-second hall to full order is far too slow for a CPU data build, so
a simulated RIR is the image-source early part (exact geometry, up to `max_order`) continued by a
stochastic late tail: Gaussian noise whose decay per octave band follows the hall's RT60 (high
frequencies decay faster, as air and audiences absorb them). Every RIR is returned aligned so that
its direct sound sits at sample 0; convolving with it keeps the music in time with the clean target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from resonate.audio.resample import resample

OCTAVE_EDGES = (0.0, 250.0, 1000.0, 4000.0, None)


def align_direct(rir: np.ndarray) -> np.ndarray:
    """Shift a (channels, n) RIR so that the earliest channel's direct-sound peak is at sample 0."""
    peak = int(min(np.argmax(np.abs(ch)) for ch in rir))
    return np.ascontiguousarray(rir[:, peak:])


def late_tail(rng: np.random.Generator, sr: int, rt60: float, start_s: float, channels: int) -> np.ndarray:
    """Exponentially decaying noise, faster decay at high frequencies; zero before `start_s`."""
    n = int(sr * min(rt60 * 1.2 + start_s, 4.0))
    t = np.arange(n) / sr
    tail = np.zeros((channels, n))
    for lo, hi in zip(OCTAVE_EDGES[:-1], OCTAVE_EDGES[1:]):
        if lo >= 0.45 * sr:
            continue
        if hi is not None and hi >= 0.45 * sr:
            hi = None
        noise = rng.standard_normal((channels, n))
        if lo == 0.0:
            sos = signal.butter(4, hi, "lowpass", fs=sr, output="sos")
        elif hi is None:
            sos = signal.butter(4, lo, "highpass", fs=sr, output="sos")
        else:
            sos = signal.butter(4, [lo, hi], "bandpass", fs=sr, output="sos")
        band = signal.sosfilt(sos, noise, axis=-1)
        centre = lo if hi is None else (hi if lo == 0.0 else np.sqrt(lo * hi))
        band_rt60 = rt60 * float(np.clip(1.25 - 0.12 * np.log2(max(centre, 125.0) / 500.0), 0.45, 1.3))
        tail += band * np.exp(-6.91 * t / band_rt60)
    onset = np.clip((t - start_s) / 0.02, 0.0, 1.0)  # 20 ms fade-in after the early part
    return tail * onset


def simulate_rir(rng: np.random.Generator, sr: int, rt60: float, max_order: int = 6) -> np.ndarray:
    """A stereo (2, n) RIR: two loudspeakers on a stage, a phone-sized mic pair far out in the room."""
    import pyroomacoustics as pra

    big = rt60 > 1.2
    length = rng.uniform(25, 60) if big else rng.uniform(10, 25)
    width = length * rng.uniform(0.5, 0.9)
    height = rng.uniform(10, 20) if big else rng.uniform(4, 8)
    dims = np.array([length, width, height])
    absorption, _ = pra.inverse_sabine(rt60, dims)
    absorption = float(np.clip(absorption, 0.02, 0.99))
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=max_order, air_absorption=True)
    stage_x = rng.uniform(1.5, 3.0)
    half_span = rng.uniform(0.2, 0.4) * width
    z = rng.uniform(2.0, min(5.0, height - 0.5))
    room.add_source([stage_x, width / 2 - half_span, z])
    room.add_source([stage_x, width / 2 + half_span, z])
    listener = np.array([rng.uniform(0.4, 0.9) * length, rng.uniform(0.2, 0.8) * width, rng.uniform(1.2, 1.8)])
    spacing = rng.uniform(0.02, 0.3)
    mics = np.stack([listener + [0, -spacing / 2, 0], listener + [0, spacing / 2, 0]], axis=1)
    room.add_microphone_array(mics)
    room.compute_rir()
    # Left speaker -> left mic, right speaker -> right mic (the cross paths would make the target ambiguous).
    early = [np.asarray(room.rir[m][m], dtype=np.float64) for m in range(2)]
    n = max(len(e) for e in early)
    early = np.stack([np.pad(e, (0, n - len(e))) for e in early])
    early = align_direct(early)
    direct_energy = float(np.max(np.abs(early)) ** 2)
    # The late tail starts where the simulated reflections get sparse; its level continues the
    # decay of the early part, scaled so the direct-to-reverberant ratio stays that of the geometry.
    start = min(early.shape[1] / sr, 0.08 + rng.uniform(0.0, 0.04))
    tail = late_tail(rng, sr, rt60, start, 2)
    early_energy = float(np.sum(early ** 2)) / 2
    tail_energy = float(np.sum(tail ** 2)) / 2
    # Sabine: far from the source, reverberant energy dominates; a random DRR of -8..+4 dB.
    drr_db = rng.uniform(-8.0, 4.0)
    want_reverb = direct_energy / (10 ** (drr_db / 10))
    scale = np.sqrt(max(want_reverb - (early_energy - direct_energy), 0.1 * want_reverb) / max(tail_energy, 1e-12))
    m = max(early.shape[1], tail.shape[1])
    rir = np.pad(early, ((0, 0), (0, m - early.shape[1]))) + np.pad(tail * scale, ((0, 0), (0, m - tail.shape[1])))
    return (rir / np.max(np.abs(rir))).astype(np.float32)


def load_measured_rir(path: Path, sr: int) -> np.ndarray:
    """A measured B-format RIR -> (2, n): the omnidirectional W channel for both sides, direct at 0."""
    audio, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    w = audio[:, 0][None, :]
    w = resample(w, file_sr, sr)
    rir = align_direct(np.concatenate([w, w]))
    # Drop the measurement noise floor: keep until the energy decay curve falls 60 dB.
    edc = np.cumsum((rir[0] ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0] + 1e-12)
    end = int(np.searchsorted(-edc_db, 60.0)) or rir.shape[1]
    return (rir[:, :end] / np.max(np.abs(rir))).astype(np.float32)


def rt60_of(rir: np.ndarray, sr: int) -> float:
    """T30 estimate from the Schroeder decay (-5 to -35 dB, extrapolated to 60 dB)."""
    edc = np.cumsum((rir[0].astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0] + 1e-12)
    i5, i35 = int(np.searchsorted(-edc_db, 5.0)), int(np.searchsorted(-edc_db, 35.0))
    if i35 <= i5:
        return 0.0
    return 2.0 * (i35 - i5) / sr
