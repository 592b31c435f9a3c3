"""Clean music we render ourselves: music21 corpus scores -> MIDI (random ensembles) -> fluidsynth.

The shared tracks are few; rendering public-domain scores with many General MIDI instruments,
tempos, stereo placements and (for some) a drum kit adds volume and timbral variety. fluidsynth's
own reverb and chorus are off, so the targets are dry.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from resonate.errors import ResonateError

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

# General MIDI programs grouped into plausible ensembles.
ENSEMBLES: dict[str, list[list[int]]] = {
    # Per part position (top voice first), the programs it may take.
    "strings": [[40, 41, 48, 49], [40, 48, 49], [41, 48], [42, 43, 48]],
    "winds": [[73, 68, 71, 56], [68, 69, 71, 60], [71, 57, 61], [70, 58, 43]],
    "brass": [[56, 59, 61], [60, 61, 56], [57, 61], [58, 57]],
    "keys": [[0, 1, 4, 5, 6], [0, 1, 4, 5], [0, 1, 2], [0, 1, 2, 32]],
    "organ_choir": [[52, 53, 19, 16], [52, 19, 16], [52, 19, 20], [19, 52, 16]],
    "band": [[24, 25, 26, 80, 81, 4, 65, 66], [25, 27, 0, 4, 16], [29, 30, 27, 89, 90], [33, 34, 35, 38, 39]],
    "synth": [[80, 81, 82, 84, 87], [88, 89, 90, 91], [81, 62, 63], [38, 39, 87]],
}
DRUM_ENSEMBLES = {"band", "synth", "keys"}


@dataclass(frozen=True)
class Note:
    start: float     # seconds
    end: float
    pitch: int
    velocity: int
    channel: int


def score_notes(path: str, rng: np.random.Generator, max_seconds: float) -> tuple[list[list[tuple]], float]:
    """Parse a corpus score into per-part (start_quarters, dur_quarters, midi_pitch) lists and a tempo."""
    from music21 import converter

    score = converter.parse(path)
    if hasattr(score, "scores"):  # an abc "opus" of several tunes: take the first
        score = score.scores[0]
    parts = []
    for part in score.parts:
        notes = []
        for el in part.flatten().notes:
            for p in getattr(el, "pitches", ()):
                notes.append((float(el.offset), max(float(el.quarterLength), 0.1), int(p.midi)))
        if notes:
            parts.append(notes)
    bpm = float(rng.uniform(70, 150))
    cut = max_seconds * bpm / 60.0
    parts = [[n for n in p if n[0] < cut] for p in parts]
    return [p for p in parts if p], bpm


def arrange(parts: list[list[tuple]], bpm: float, rng: np.random.Generator) -> tuple[list[Note], dict[int, int], dict[int, int], bool]:
    """Give every part a channel and instrument; maybe add drums. Returns notes, programs, pans, drums."""
    ensemble = str(rng.choice(sorted(ENSEMBLES)))
    choices = ENSEMBLES[ensemble]
    spq = 60.0 / bpm
    notes: list[Note] = []
    programs, pans = {}, {}
    channels = [c for c in range(16) if c != 9]
    for i, part in enumerate(parts[:15]):
        ch = channels[i]
        programs[ch] = int(rng.choice(choices[min(i, len(choices) - 1)]))
        pans[ch] = int(np.clip(64 + rng.normal(0, 30), 5, 122))
        transpose = -12 if (i == len(parts) - 1 and ensemble in ("band", "synth") and rng.random() < 0.7) else 0
        base_vel = int(rng.integers(60, 110))
        legato = float(rng.uniform(0.75, 1.0))
        for q0, dq, pitch in part:
            vel = int(np.clip(base_vel + rng.normal(0, 8), 20, 127))
            t0 = q0 * spq + float(rng.normal(0, 0.004))
            notes.append(Note(max(t0, 0.0), max(t0, 0.0) + dq * spq * legato, int(np.clip(pitch + transpose, 0, 127)), vel, ch))
    drums = ensemble in DRUM_ENSEMBLES and rng.random() < 0.7
    if drums and notes:
        end = max(n.end for n in notes)
        pattern = int(rng.integers(0, 3))
        beat = 0
        t = 0.0
        while t < end:
            kick = beat % 2 == 0 if pattern != 2 else True
            if kick:
                notes.append(Note(t, t + 0.1, 36, int(rng.integers(90, 120)), 9))
            if beat % 2 == 1:
                notes.append(Note(t, t + 0.1, 38 if pattern != 1 else 40, int(rng.integers(85, 115)), 9))
            for sub in (0.0, 0.5):
                notes.append(Note(t + sub * spq, t + sub * spq + 0.05, 42 if pattern != 2 else 51, int(rng.integers(50, 85)), 9))
            beat += 1
            t += spq
    return notes, programs, pans, drums


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, notes: list[Note], programs: dict[int, int], pans: dict[int, int]) -> None:
    """A format-0 Standard MIDI File at 120 bpm (times are already in seconds: 1 beat = 0.5 s)."""
    tpq = 480
    ticks = lambda s: int(round(s * 2 * tpq))  # noqa: E731 - 120 bpm: 2 beats per second
    events: list[tuple[int, int, bytes]] = []
    for ch, prog in programs.items():
        events.append((0, 0, bytes([0xC0 | ch, prog])))
        events.append((0, 0, bytes([0xB0 | ch, 10, pans[ch]])))
        events.append((0, 0, bytes([0xB0 | ch, 91, 0])))   # no soundfont reverb send
        events.append((0, 0, bytes([0xB0 | ch, 93, 0])))   # no chorus send
    for n in notes:
        events.append((ticks(n.start), 2, bytes([0x90 | n.channel, n.pitch, n.velocity])))
        events.append((ticks(max(n.end, n.start + 0.02)), 1, bytes([0x80 | n.channel, n.pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray(b"\x00\xff\x51\x03" + (500000).to_bytes(3, "big"))
    now = 0
    for t, _, data in events:
        track += _varlen(t - now) + data
        now = t
    track += b"\x00\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpq) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))


def fluidsynth_render(midi: Path, out_wav: Path, sample_rate: int = 44100) -> None:
    if shutil.which("fluidsynth") is None or not SOUNDFONT.exists():
        raise ResonateError("rendering needs fluidsynth and fluid-soundfont-gm (apt install fluidsynth fluid-soundfont-gm)")
    subprocess.run(
        ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(sample_rate),
         "-F", str(out_wav), str(SOUNDFONT), str(midi)],
        check=True, capture_output=True, timeout=300,
    )


def corpus_paths(composers: tuple[str, ...], per_composer: int, rng: np.random.Generator) -> list[str]:
    from music21 import corpus

    chosen = []
    for composer in composers:
        paths = sorted(str(p) for p in corpus.getComposer(composer))
        take = min(per_composer, len(paths))
        chosen += [paths[i] for i in rng.choice(len(paths), size=take, replace=False)]
    return chosen


def render_corpus(out_dir: Path, composers: tuple[str, ...], per_composer: int, seed: int,
                  max_seconds: float = 60.0, sample_rate: int = 44100, log=print) -> list[Path]:
    """Render scores to `out_dir/<name>.wav`; already rendered files are kept (resumable)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for i, path in enumerate(corpus_paths(composers, per_composer, rng)):
        name = f"{i:03d}_" + Path(path).stem.replace(" ", "_")[:40]
        wav = out_dir / f"{name}.wav"
        piece_rng = np.random.default_rng([seed, i])
        if not wav.exists():
            try:
                parts, bpm = score_notes(path, piece_rng, max_seconds)
            except Exception as exc:  # a corpus file music21 cannot parse is skipped, not fatal
                log(f"skip {path}: {exc}")
                continue
            if not parts:
                continue
            notes, programs, pans, _ = arrange(parts, bpm, piece_rng)
            with tempfile.TemporaryDirectory() as tmp:
                mid = Path(tmp) / "x.mid"
                write_midi(mid, notes, programs, pans)
                tmp_wav = Path(tmp) / "x.wav"
                fluidsynth_render(mid, tmp_wav, sample_rate)
                audio, _ = sf.read(tmp_wav, dtype="float32", always_2d=True)
            peak = float(np.abs(audio).max())
            if peak < 1e-3:
                continue
            sf.write(wav, audio / peak * 0.8, sample_rate, subtype="PCM_16")
            log(f"rendered {wav.name} ({audio.shape[0] / sample_rate:.0f} s)")
        written.append(wav)
    return written
