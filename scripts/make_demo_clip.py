"""Render the app's demo clip: a degraded "audience recording" we make ourselves, end to end.

Score:   J. S. Bach, chorale "Christ unser Herr zum Jordan kam" setting from BWV 66.6, from the
         music21 corpus (``bach/bwv66.6``), played by a string quartet.
Synth:   Debian ``fluidsynth`` with the FluidR3_GM SoundFont (MIT licence).
Hall:    pyroomacoustics shoebox hall (image sources + ray-traced tail), an audience mic pair.
Crowd:   synthesised applause (filtered noise bursts) and espeak-ng babble at a low level.
Phone:   band-limited, automatic gain, clipped peaks, hiss; encoded to MP3 at 128 kb/s.

Nothing here comes from a recording or a data set, so the clip can ship with the app.
Run:  .venv/bin/python scripts/make_demo_clip.py  (writes assets/demo/concert_demo.mp3)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import soundfile as sf
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from resonate.audio.io import write_audio  # noqa: E402

SR = 44100
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
OUT = Path(__file__).resolve().parent.parent / "assets" / "demo" / "concert_demo.mp3"
# General MIDI programs for the four chorale voices: violin, violin, viola, cello.
QUARTET = (40, 40, 41, 42)
BABBLE_LINES = (
    "that was lovely, did you hear the cello",
    "I think they play the second half after the interval",
    "excuse me, is this seat taken",
    "the hall sounds wonderful tonight",
    "shall we get a drink afterwards",
    "my phone is almost out of battery",
)


def render_score(tmp: Path) -> np.ndarray:
    from music21 import corpus, instrument

    score = corpus.parse("bach/bwv66.6")
    makers = (instrument.Violin, instrument.Violin, instrument.Viola, instrument.Violoncello)
    for part, make, program in zip(score.parts, makers, QUARTET):
        for old in part.recurse().getElementsByClass(instrument.Instrument):
            part.remove(old, recurse=True)
        inst = make()
        inst.midiProgram = program
        part.insert(0, inst)
    midi = tmp / "chorale.mid"
    score.write("midi", fp=str(midi))
    wav = tmp / "chorale.wav"
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SR), "-F", str(wav), str(SOUNDFONT), str(midi)],
                   check=True, capture_output=True)
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert sr == SR
    return x.mean(axis=1)


def hall_rirs(rng: np.random.Generator) -> list[np.ndarray]:
    """Impulse responses from the stage to a pair of audience mics 20 cm apart, in a 1.6 s hall."""
    dims = [28.0, 18.0, 11.0]
    absorption, _ = pra.inverse_sabine(1.6, dims)
    room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(absorption), max_order=3, air_absorption=True)
    room.set_ray_tracing(receiver_radius=0.5, n_rays=4000)
    room.add_source([14.0, 3.0, 1.8])
    mics = np.array([[13.9, 14.1], [14.5, 14.5], [1.2, 1.2]])
    room.add_microphone_array(mics)
    room.compute_rir()
    return [np.asarray(room.rir[m][0], dtype=np.float32) for m in range(2)]


def applause(seconds: float, envelope: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Many hands: each clap a ~8 ms band-passed noise burst, claps placed at random by density."""
    n = int(seconds * SR)
    out = np.zeros(n, np.float32)
    clap_len = int(0.012 * SR)
    decay = np.exp(-np.arange(clap_len) / (0.003 * SR)).astype(np.float32)
    density = np.interp(np.arange(n), np.linspace(0, n, len(envelope)), envelope)
    count = int(density.sum() / SR * 60)
    positions = rng.choice(n - clap_len, size=count, p=density[: n - clap_len] / density[: n - clap_len].sum())
    for pos in positions:
        sos = signal.butter(2, [rng.uniform(700, 1400), rng.uniform(2200, 4000)], "bandpass", fs=SR, output="sos")
        burst = signal.sosfilt(sos, rng.standard_normal(clap_len)).astype(np.float32) * decay
        out[pos: pos + clap_len] += burst * rng.uniform(0.3, 1.0)
    return out / (np.abs(out).max() + 1e-9)


def babble(seconds: float, tmp: Path, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SR)
    out = np.zeros(n, np.float32)
    voices = ("en", "en-us", "en-gb-scotland", "en+f3", "en+m3", "en-us+f2")
    for i, line in enumerate(BABBLE_LINES):
        wav = tmp / f"talk{i}.wav"
        subprocess.run(["espeak-ng", "-v", voices[i % len(voices)], "-s", str(int(rng.uniform(140, 180))),
                        "-p", str(int(rng.uniform(30, 70))), "-w", str(wav), line], check=True, capture_output=True)
        y, sr = sf.read(wav, dtype="float32")
        y = signal.resample_poly(y, SR, sr).astype(np.float32)
        start = int(rng.uniform(0, max(1, n - len(y))))
        seg = y[: n - start]
        out[start: start + len(seg)] += seg * rng.uniform(0.5, 1.0)
    return out / (np.abs(out).max() + 1e-9)


def phone_capture(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a phone in row 20 does: thin bandwidth, pumping gain, clipped peaks, hiss."""
    sos = signal.butter(4, [180, 6500], "bandpass", fs=SR, output="sos")
    y = signal.sosfilt(sos, x, axis=-1)
    # Crude AGC: 300 ms RMS follower pulling the level towards a fixed target (audible pumping).
    rms = np.sqrt(signal.lfilter([0.0002], [1, -0.9998], (y ** 2).mean(axis=0)) + 1e-8)
    y = y * np.clip(0.12 / rms, 0.3, 6.0)
    y = np.clip(y * 1.8, -0.72, 0.72)                      # the converter overloads on loud chords
    y = y + 0.004 * rng.standard_normal(y.shape)            # preamp hiss
    return (y / np.abs(y).max() * 0.95).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    for tool in ("fluidsynth", "espeak-ng"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install {tool})")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        music = render_score(tmp)
        music = music[: int(np.nonzero(np.abs(music) > 1e-4)[0][-1]) + SR]      # drop the synth's silent tail
        lead_in, tail = 2.5, 3.5
        total = lead_in + len(music) / SR + tail
        n = int(total * SR)
        dry = np.zeros(n, np.float32)
        dry[int(lead_in * SR): int(lead_in * SR) + len(music)] = music / np.abs(music).max()
        wet = np.stack([signal.fftconvolve(dry, rir)[:n] for rir in hall_rirs(rng)])
        wet /= np.abs(wet).max()
        # Applause fades at the start and swells after the last chord; babble sits under everything.
        env = np.concatenate([np.linspace(1, 0, 6), np.zeros(int(len(music) / SR)), np.linspace(0, 1, 4), np.ones(4)])
        clap = applause(total, env + 1e-3, rng)
        talk = babble(total, tmp, rng)
        near = np.stack([clap * 0.35 + talk * 0.06, np.roll(clap, 211) * 0.35 + np.roll(talk, 97) * 0.06])
        mix = wet + near
        clip = phone_capture(mix, rng)
    fade = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / (0.05 * SR))
    write_audio(args.out, clip * fade, SR, format="mp3", mp3_bitrate=128, seed=args.seed)
    print(f"wrote {args.out} ({total:.1f} s, {args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
