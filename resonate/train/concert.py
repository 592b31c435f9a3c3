"""The v3 degradation chain: clean music -> what a phone in a concert hall records.

Steps run in the order sound travels, each one optional so that single-degradation examples
(crowd only, room only, PA only, phone only) come from the same code as the full chain:

1. PA: loudspeaker EQ (boomy low shelf, presence peak, random bumps), mild compression or
   distortion;
2. venue: a measured or simulated room response, listener far away;
3. crowd near the microphone: its own short, early room; 0-12 dB SNR against the music;
4. phone: microphone roll-off, mono, automatic gain control, limiting, clipping;
5. codec: MP3 (LAME) or AAC (PyAV's bundled FFmpeg) at 64-160 kb/s.

Returns the recording and two references: the clean music through the room's first 50 ms (what
the model is trained towards, see ``degrade.early_part``) and the dry music itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy import signal

from resonate.audio.resample import resample
from resonate.train.degrade import (
    auto_gain,
    best_lag,
    clip,
    convolve_room,
    early_part,
    mic_band_limit,
    mp3_roundtrip,
    pa_colouration,
    peaking,
)

STEPS = ("pa", "room", "crowd", "phone", "codec")


@dataclass(frozen=True)
class Recording:
    recording: np.ndarray   # (2, n) float32
    target: np.ndarray      # (2, n) music through the room's early part, at its level in the mix
    dry: np.ndarray         # (2, n) the dry music, same scale
    params: dict


def compress_rms(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A PA's bus compressor: RMS detector, ratio 2-4, fast-ish attack, slow release (static curve
    on a 10-ms smoothed level; enough for the density it adds)."""
    level = np.sqrt(signal.lfilter([1 - np.exp(-1 / (0.01 * sr))], [1, -np.exp(-1 / (0.01 * sr))],
                                   np.mean(x ** 2, axis=0)) + 1e-10)
    level_db = 20 * np.log10(level)
    threshold = np.percentile(level_db, rng.uniform(40, 80))
    ratio = rng.uniform(2, 4)
    gain_db = np.where(level_db > threshold, (threshold - level_db) * (1 - 1 / ratio), 0.0)
    gain_db = signal.lfilter([1 - np.exp(-1 / (0.1 * sr))], [1, -np.exp(-1 / (0.1 * sr))], gain_db)
    return x * 10 ** (gain_db / 20)


def pa_system(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Loudspeaker colouring plus a presence peak, then compression or a little distortion."""
    y = pa_colouration(x, sr, rng)
    y = signal.sosfilt(peaking(rng.uniform(2000, 5000), rng.uniform(2, 7), rng.uniform(0.8, 2.0), sr), y, axis=-1)
    r = rng.random()
    if r < 0.5:
        y = compress_rms(y, sr, rng)
    elif r < 0.75:
        peak = np.abs(y).max() + 1e-9
        drive = 10 ** (rng.uniform(1, 6) / 20)
        y = np.tanh(y / peak * drive) / np.tanh(drive) * peak
    return y


def short_room(rng: np.random.Generator, sr: int) -> np.ndarray:
    """The crowd's own room around the phone: direct sound plus a short (RT60 0.1-0.4 s) diffuse tail."""
    rt60 = rng.uniform(0.1, 0.4)
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal((2, n)) * np.exp(-6.91 * t / rt60)
    tail = signal.sosfilt(signal.butter(2, rng.uniform(3000, 9000), "lowpass", fs=sr, output="sos"), tail, axis=-1)
    tail *= 10 ** (rng.uniform(-12, -3) / 20) / (np.sqrt(np.sum(tail ** 2) / 2) + 1e-9)
    tail[:, 0] += 1.0
    return tail


def phone_limiter(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A phone's peak limiter: instant attack on the sample peak, release 50-300 ms."""
    ceiling = np.abs(x).max() * 10 ** (-rng.uniform(3, 12) / 20)
    peak = np.abs(x).max(axis=0)
    want = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    # Release: the gain recovers exponentially; attack is instant (running minimum with recovery).
    step = max(1, sr // 2000)
    coarse = want[: len(want) // step * step].reshape(-1, step).min(axis=1)
    rel = np.exp(-step / (rng.uniform(0.05, 0.3) * sr))
    g = np.empty_like(coarse)
    cur = 1.0
    for i, w in enumerate(coarse):
        cur = w if w < cur else rel * cur + (1 - rel) * w
        g[i] = cur
    gain = np.repeat(g, step)
    gain = np.pad(gain, (0, len(want) - len(gain)), mode="edge")
    return x * np.minimum(gain, want)


def aac_roundtrip(x: np.ndarray, sr: int, bitrate: int) -> np.ndarray:
    """Encode to AAC (FFmpeg's encoder through PyAV) at ``bitrate`` kb/s and decode, re-aligned."""
    import av

    layout = "stereo" if x.shape[0] == 2 else "mono"
    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=sr, layout=layout)
        stream.bit_rate = bitrate * 1000
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.clip(x, -1, 1), dtype=np.float32),
                                           format="fltp", layout=layout)
        frame.sample_rate, frame.pts = sr, 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, "r") as inp:
        file_sr = inp.streams.audio[0].rate
        y = np.concatenate([f.to_ndarray().reshape(x.shape[0], -1) for f in inp.decode(audio=0)], axis=1)
    y = resample(y.astype(np.float32), file_sr, sr)
    lag = best_lag(x[0], y[0], max_lag=4096)
    y = y[:, lag:] if lag >= 0 else np.pad(y, ((0, 0), (-lag, 0)))
    n = x.shape[-1]
    return np.pad(y[:, :n], ((0, 0), (0, max(0, n - y.shape[-1]))))


def fade_out_music(x: np.ndarray, sr: int, end: int, fade_s: float = 0.3) -> np.ndarray:
    """The song ends at sample ``end`` (a ``fade_s`` fade before it): silence after, as between songs."""
    y = np.array(x, dtype=np.float64)
    nf = min(int(fade_s * sr), end)
    y[:, end - nf: end] *= np.linspace(1.0, 0.0, nf)
    y[:, end:] = 0.0
    return y


def concert_recording(clean: np.ndarray, sr: int, rng: np.random.Generator, rir: np.ndarray, crowd: np.ndarray,
                      steps: tuple[str, ...] = STEPS, music_end: int | None = None,
                      snr_range_db: tuple[float, float] = (0.0, 12.0)) -> Recording:
    """Clean (2, n) music -> ``Recording`` through the ``steps`` named (a subset of ``STEPS``).

    ``crowd`` is a (2, n) crowd bed (see ``crowd.concert_crowd``); ``music_end`` ends the song
    inside the clip (the rest is crowd and reverberation only, as between songs).
    """
    params: dict = {"steps": list(steps)}
    dry = np.array(clean, dtype=np.float64)
    if music_end is not None:
        dry = fade_out_music(dry, sr, music_end)
        params["music_end_s"] = round(music_end / sr, 3)
    x = pa_system(dry, sr, rng) if "pa" in steps else dry
    if "room" in steps:
        wet = convolve_room(x, rir)
        target = convolve_room(dry, early_part(rir, sr))
    else:
        wet, target = x, dry.copy()
    y = wet
    music_part = slice(0, music_end) if music_end is not None else slice(None)
    if "crowd" in steps:
        snr_db = float(rng.uniform(*snr_range_db))
        params["snr_db"] = round(snr_db, 1)
        near = convolve_room(crowd, short_room(rng, sr))
        music_power = float(np.mean(wet[:, music_part] ** 2)) + 1e-12
        crowd_power = float(np.mean(near[:, music_part] ** 2)) + 1e-12
        y = wet + near * np.sqrt(music_power / crowd_power / 10 ** (snr_db / 10))
    if "phone" in steps:
        y = mic_band_limit(y, sr, rng)
        if rng.random() < 0.5:
            y = np.repeat(y.mean(axis=0, keepdims=True), 2, axis=0)
            target = np.repeat(target.mean(axis=0, keepdims=True), 2, axis=0)
            dry = np.repeat(dry.mean(axis=0, keepdims=True), 2, axis=0)
            params["mono"] = True
        if rng.random() < 0.6:
            y = auto_gain(y, sr, rng)
            params["agc"] = True
        if rng.random() < 0.4:
            y = phone_limiter(y, sr, rng)
            params["limiter"] = True
        y = y / (np.abs(y).max() + 1e-9) * 0.7
        if rng.random() < 0.3:
            y = clip(y, rng) * 0.7
            params["clip"] = True
    y = y / (np.abs(y).max() + 1e-9) * 0.7
    if "codec" in steps:
        bitrate = int(rng.choice([64, 80, 96, 128, 160]))
        if rng.random() < 0.5:
            y = mp3_roundtrip(y, sr, bitrate)
            params["codec"] = f"mp3 {bitrate}"
        else:
            y = aac_roundtrip(y, sr, bitrate)
            params["codec"] = f"aac {bitrate}"
    # The references at the level the music has in the recording: its share of the power.
    snr = 10 ** (params.get("snr_db", 60.0) / 10)
    level = np.sqrt(np.mean(y[:, music_part] ** 2)) * np.sqrt(snr / (1 + snr))
    target = target / (np.sqrt(np.mean(target[:, music_part] ** 2)) + 1e-9) * level
    dry = dry / (np.sqrt(np.mean(dry[:, music_part] ** 2)) + 1e-9) * level
    peak = max(np.abs(target).max(), np.abs(y).max(), np.abs(dry).max())
    if peak > 0.99:
        y, target, dry = y * 0.99 / peak, target * 0.99 / peak, dry * 0.99 / peak
    return Recording(y.astype(np.float32), target.astype(np.float32), dry.astype(np.float32), params)
