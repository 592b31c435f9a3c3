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


def _clapper_band(rng: np.random.Generator, sr: int) -> np.ndarray:
    """One person's clap colour: a band-pass around 700-3000 Hz (second-order sections)."""
    centre = rng.uniform(700, 3000)
    return signal.butter(2, [centre / 1.8, min(centre * 1.8, sr / 2 - 100)], "bandpass", fs=sr, output="sos")


def _clap(rng: np.random.Generator, sos: np.ndarray, sr: int) -> np.ndarray:
    """One clap: 30 ms of band-passed noise decaying in 4-12 ms."""
    t = np.arange(int(0.03 * sr)) / sr
    return signal.sosfilt(sos, rng.standard_normal(len(t))) * np.exp(-t / rng.uniform(0.004, 0.012))


def applause(rng: np.random.Generator, n: int, sr: int, clappers: int) -> np.ndarray:
    """Dense trains of short band-passed noise bursts, one train per person."""
    out = np.zeros(n + sr // 10)
    for _ in range(clappers):
        sos = _clapper_band(rng, sr)
        rate = rng.uniform(3.0, 7.0)
        level = float(10 ** rng.uniform(-1.0, 0.0))
        pos = rng.uniform(0, 1.0 / rate)
        while pos * sr < n:
            burst = _clap(rng, sos, sr)
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


# v3 crowds: more kinds, mixed in random combinations. Some kinds are kept for the development
# set only (``concert_crowd``'s ``kinds``), so its crowds hold sounds the model never trained on.
CROWD_KINDS = ("chatter", "applause", "clapping", "cheer", "scream", "whistle", "singalong", "real_applause")


def clapping_in_time(rng: np.random.Generator, n: int, sr: int, music: np.ndarray, clappers: int) -> np.ndarray:
    """The audience clapping along on the music's beats (librosa's beat tracker), each person a
    little early or late and with a clap of their own."""
    import librosa

    mono = np.asarray(music, dtype=np.float32).mean(axis=0)
    _, beats = librosa.beat.beat_track(y=mono, sr=sr, hop_length=512, units="samples")
    if len(beats) < 2:   # no beat found: a steady 100-140 BPM
        beats = np.arange(int(rng.integers(0, sr // 2)), n, int(sr * 60 / rng.uniform(100, 140)))
    if rng.random() < 0.5:   # on 2 and 4 only
        beats = beats[int(rng.integers(2))::2]
    out = np.zeros(n + sr // 10)
    for _ in range(clappers):
        burst = _clap(rng, _clapper_band(rng, sr), sr)
        offset = rng.normal(0.0, 0.02) * sr
        level = float(10 ** rng.uniform(-1.0, 0.0))
        for b in beats:
            _place(out, burst * rng.uniform(0.7, 1.0), int(b + offset + rng.normal(0, 0.008) * sr), level)
    return out[:n]


def screams(rng: np.random.Generator, n: int, sr: int, count: int) -> np.ndarray:
    """High, rough, loud peaks: pitched voices at 600-1500 Hz with jitter and breath noise."""
    out = np.zeros(n)
    for _ in range(count):
        dur = int(rng.uniform(0.3, 1.2) * sr)
        t = np.arange(dur) / sr
        f0 = rng.uniform(600, 1500) * (1 + 0.03 * rng.standard_normal(dur).cumsum() / np.sqrt(dur))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        tone = sum(np.sin(k * phase) * rng.uniform(0.3, 1.0) / k for k in range(1, 8))
        rough = tone * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(30, 70) * t)) + 0.3 * rng.standard_normal(dur)
        sos = signal.butter(2, [800, min(6000, sr / 2 - 100)], "bandpass", fs=sr, output="sos")
        env = np.minimum(1.0, np.minimum(t / 0.05, (t[-1] - t) / 0.2))
        _place(out, signal.sosfilt(sos, rough) * env, int(rng.integers(-dur // 2, n)), float(10 ** rng.uniform(-0.5, 0.0)))
    return out


def singalong(rng: np.random.Generator, n: int, sr: int, voices: int) -> np.ndarray:
    """People singing along: a shared melody on a scale, each voice slightly off in pitch and
    time, through a vowel formant, in phrases."""
    out = np.zeros(n)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    root = rng.uniform(150, 330)
    note_s = rng.uniform(0.25, 0.6)
    notes = root * 2 ** (rng.choice(scale, size=int(n / sr / note_s) + 2) / 12)
    for _ in range(voices):
        detune = 2 ** (rng.normal(0, 0.3) / 12) * (0.5 if rng.random() < 0.3 else 1.0)
        lag = int(rng.normal(0, 0.05) * sr)
        idx = np.clip((np.arange(n) + lag) // int(note_s * sr), 0, len(notes) - 1)
        f0 = signal.lfilter([0.01], [1, -0.99], notes[idx] * detune - notes[0] * detune) + notes[0] * detune
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * np.arange(n) / sr))) / sr
        tone = sum(np.sin(k * phase) / k ** 1.3 for k in range(1, 10))
        formant = rng.uniform(500, 1100)
        sos = signal.butter(2, [formant * 0.6, formant * 1.8], "bandpass", fs=sr, output="sos")
        phrase = (np.sin(2 * np.pi * np.arange(n) / sr / rng.uniform(2.0, 4.0) + rng.uniform(0, 6.3)) > -0.3).astype(float)
        phrase = signal.lfilter([0.001], [1, -0.999], phrase)
        out += signal.sosfilt(sos, tone) * phrase * float(10 ** rng.uniform(-0.8, 0.0))
    return out


def concert_crowd(rng: np.random.Generator, n: int, sr: int, bank: list[np.ndarray], music: np.ndarray,
                  kinds: tuple[str, ...], real_applause: np.ndarray | None = None,
                  between_songs_from: int | None = None) -> tuple[np.ndarray, list[str]]:
    """A (2, n) crowd from a random subset of ``kinds`` (always at least one) and the kinds used.

    With ``between_songs_from`` the song ends there: the crowd swells into applause and cheering
    after it, as it does between songs.
    """
    chosen = [k for k in kinds if rng.random() < {"chatter": 0.7, "applause": 0.35, "clapping": 0.25,
                                                   "cheer": 0.35, "scream": 0.2, "whistle": 0.25,
                                                   "singalong": 0.2, "real_applause": 0.3}[k]]
    if not chosen:
        chosen = [kinds[int(rng.integers(len(kinds)))]]
    layers = []
    for kind in chosen:
        if kind == "chatter":
            layer = np.stack([babble(rng, n, sr, bank, int(rng.integers(3, 14))) for _ in range(2)])
        elif kind == "real_applause" and real_applause is not None:
            start = int(rng.integers(0, max(real_applause.shape[-1] - n, 1)))
            seg = real_applause[:, start: start + n]
            layer = np.pad(seg, ((0, 0), (0, n - seg.shape[-1])), mode="wrap")
        else:
            mono = {"applause": lambda: applause(rng, n, sr, int(rng.integers(10, 60))),
                    "clapping": lambda: clapping_in_time(rng, n, sr, music, int(rng.integers(5, 30))),
                    "cheer": lambda: cheer(rng, n, sr, int(rng.integers(3, 15))),
                    "scream": lambda: screams(rng, n, sr, int(rng.integers(1, 4))),
                    "whistle": lambda: whistles(rng, n, sr, int(rng.integers(1, 4))),
                    "singalong": lambda: singalong(rng, n, sr, int(rng.integers(3, 12))),
                    "real_applause": lambda: applause(rng, n, sr, int(rng.integers(10, 60)))}[kind]()
            pan = rng.uniform(0.2, 0.8)
            layer = np.stack([mono * (1 - pan), mono * pan])
        layers.append(layer / (np.std(layer) + 1e-9) * 10 ** rng.uniform(-0.6, 0.2))
    bed = np.sum(layers, axis=0)
    t = np.arange(n) / sr
    swell = 1.0 + rng.uniform(0.0, 0.8) * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    bed = bed * swell
    if between_songs_from is not None:
        # Between songs: applause and cheering rise over ~1 s after the last note.
        rise = np.clip((np.arange(n) - between_songs_from) / sr, 0.0, 1.0)
        clap = applause(rng, n, sr, int(rng.integers(20, 60))) + 0.5 * cheer(rng, n, sr, int(rng.integers(3, 10)))
        clap = np.stack([clap, np.roll(clap, int(rng.integers(sr // 10)))])
        bed = bed + clap / (np.std(clap) + 1e-9) * np.std(bed) * rng.uniform(1.0, 3.0) * rise
        chosen = chosen + ["between_songs"]
    return bed, chosen
