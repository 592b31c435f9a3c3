"""Audience sound: babble from many quiet espeak-ng voices, applause, cheering swells, whistles.

Everything here is synthesised (plus, for training only, excerpts of the one real applause clip),
so the crowds in the validation set are not recordings the model has heard.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from resonate.audio.resample import resample
from resonate.errors import ResonateError

VOICES = ("en", "en-us", "en-gb-scotland", "de", "fr", "es", "it", "nl", "pt", "sv", "pl", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "klatt", "klatt2")
WORDS = (
    "yeah this is amazing did you hear that song again tonight where are the drinks look at the stage "
    "I love this band so much they played it last year too my friend is over there wait what was that "
    "one more time come on louder turn it up what a night best concert ever let us move closer here "
    "oh my god the drummer is incredible I can not see anything can you hold my jacket for a second"
).split()


def render_babble_bank(out_dir: Path, count: int, seed: int, sr: int) -> list[Path]:
    """Speak `count` random sentences with random espeak-ng voices into `out_dir` (resumable)."""
    if shutil.which("espeak-ng") is None:
        raise ResonateError("building crowd sounds needs espeak-ng (apt install espeak-ng)")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = out_dir / f"voice_{i:03d}.wav"
        voice = f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}"
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(8, 25))))
        speed, pitch = int(rng.integers(120, 210)), int(rng.integers(10, 90))
        if not path.exists():
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / "v.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), words],
                               check=True, capture_output=True, timeout=60)
                audio, file_sr = sf.read(raw, dtype="float32", always_2d=True)
            audio = resample(audio.T[:1], file_sr, sr)[0]
            sf.write(path, audio / (np.abs(audio).max() + 1e-9) * 0.9, sr, subtype="PCM_16")
        paths.append(path)
    return paths


def load_bank(paths: list[Path]) -> list[np.ndarray]:
    return [sf.read(p, dtype="float32")[0] for p in paths]


def _place(out: np.ndarray, clip: np.ndarray, start: int, gain: float) -> None:
    """Add `clip` into `out` at `start` (may be negative), clipped to the bounds."""
    a, b = max(start, 0), min(start + len(clip), len(out))
    if b > a:
        out[a:b] += gain * clip[a - start: b - start]


def babble(rng: np.random.Generator, n: int, sr: int, bank: list[np.ndarray], talkers: int) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(talkers):
        start = -int(rng.integers(0, sr))
        while start < n:
            clip = bank[int(rng.integers(len(bank)))]
            _place(out, clip, start, float(10 ** rng.uniform(-1.2, 0.0)))
            start += len(clip) + int(rng.integers(0, sr // 2))
    return out


def applause(rng: np.random.Generator, n: int, sr: int, clappers: int) -> np.ndarray:
    """Dense trains of short band-passed noise bursts, one train per person."""
    out = np.zeros(n + sr // 10)
    clap_len = int(0.03 * sr)
    t = np.arange(clap_len) / sr
    for _ in range(clappers):
        centre = rng.uniform(700, 3000)
        sos = signal.butter(2, [centre / 1.8, min(centre * 1.8, sr / 2 - 100)], "bandpass", fs=sr, output="sos")
        rate = rng.uniform(3.0, 7.0)
        level = float(10 ** rng.uniform(-1.0, 0.0))
        pos = rng.uniform(0, 1.0 / rate)
        while pos * sr < n:
            burst = signal.sosfilt(sos, rng.standard_normal(clap_len)) * np.exp(-t / rng.uniform(0.004, 0.012))
            _place(out, burst, int(pos * sr), level * rng.uniform(0.6, 1.0))
            pos += rng.normal(1.0 / rate, 0.08 / rate)
    return out[:n]


def cheer(rng: np.random.Generator, n: int, sr: int, voices: int) -> np.ndarray:
    """'Woo' voices: harmonic tones with gliding pitch through a vowel formant filter, in swells."""
    out = np.zeros(n)
    for _ in range(voices):
        dur = int(rng.uniform(0.4, 1.8) * sr)
        start = int(rng.integers(-dur // 2, n))
        t = np.arange(dur) / sr
        f0 = rng.uniform(180, 650) * (1 + rng.uniform(-0.15, 0.35) * np.sin(np.pi * t / t[-1]))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        tone = sum(np.sin(k * phase) / k for k in range(1, 12))
        formant = rng.uniform(300, 900)
        sos = signal.butter(2, [formant * 0.7, formant * 1.6], "bandpass", fs=sr, output="sos")
        voiced = signal.sosfilt(sos, tone) + 0.05 * rng.standard_normal(dur)
        env = np.sin(np.pi * t / t[-1]) ** 2
        _place(out, voiced * env, start, float(10 ** rng.uniform(-1.0, 0.0)))
    return out


def whistles(rng: np.random.Generator, n: int, sr: int, count: int) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(count):
        dur = int(rng.uniform(0.3, 1.5) * sr)
        t = np.arange(dur) / sr
        f = rng.uniform(1500, 4000) * (1 + rng.uniform(-0.2, 0.2) * t / t[-1]) + rng.uniform(5, 40) * np.sin(2 * np.pi * rng.uniform(4, 8) * t)
        tone = np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.02 * rng.standard_normal(dur)
        env = np.minimum(1.0, np.minimum(t / 0.03, (t[-1] - t) / 0.05))
        _place(out, tone * env, int(rng.integers(-dur // 2, n)), float(10 ** rng.uniform(-1.0, 0.0)))
    return out


def crowd_bed(rng: np.random.Generator, n: int, sr: int, bank: list[np.ndarray],
              real_applause: np.ndarray | None = None) -> np.ndarray:
    """A (2, n) crowd: always some chatter, plus randomly applause, cheers, whistles (and real applause)."""
    layers = []
    for _ in range(2):  # left and right hear different people
        mix = babble(rng, n, sr, bank, int(rng.integers(3, 14)))
        mix = mix / (np.std(mix) + 1e-9) * 10 ** rng.uniform(-0.6, 0.0)
        layers.append(mix)
    bed = np.stack(layers)
    extras = []
    if rng.random() < 0.5:
        extras.append(applause(rng, n, sr, int(rng.integers(10, 60))))
    if rng.random() < 0.35:
        extras.append(cheer(rng, n, sr, int(rng.integers(3, 15))))
    if rng.random() < 0.2:
        extras.append(whistles(rng, n, sr, int(rng.integers(1, 4))))
    for e in extras:
        e = e / (np.std(e) + 1e-9) * 10 ** rng.uniform(-0.5, 0.3)
        pan = rng.uniform(0.3, 0.7)
        bed += np.stack([e * (1 - pan), e * pan]) * 2
    if real_applause is not None and rng.random() < 0.3:
        start = int(rng.integers(0, max(real_applause.shape[-1] - n, 1)))
        clip = real_applause[:, start: start + n]
        clip = np.pad(clip, ((0, 0), (0, n - clip.shape[-1])))
        bed += clip / (np.std(clip) + 1e-9) * 10 ** rng.uniform(-0.3, 0.3)
    # Swells: the crowd gets louder and quieter over a few seconds.
    t = np.arange(n) / sr
    swell = 1.0 + rng.uniform(0.0, 0.8) * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    return bed * swell
