"""The degradation chain that turns clean music into a synthetic concert recording.

Order follows the physical path: PA colouration -> room -> + audience -> phone mic band limits
-> phone auto-gain pumping -> clipping -> low-bitrate MP3. Every step is randomised per example
from the example's own generator, so a dataset is reproducible from its seed.
"""

from __future__ import annotations

import io

import lameenc
import numpy as np
import soundfile as sf
from scipy import signal

from resonate.audio.resample import resample


def peaking(f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """RBJ peaking-EQ biquad as one second-order section."""
    f0 = min(f0, 0.45 * sr)
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a]
    return np.array([b + den]) / den[0]


def shelf(f0: float, gain_db: float, sr: int, high: bool) -> np.ndarray:
    """RBJ shelving biquad (slope 1)."""
    f0 = min(f0, 0.45 * sr)
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    alpha = np.sin(w0) / 2 * np.sqrt(2)
    c, s2 = np.cos(w0), 2 * np.sqrt(a) * alpha
    sign = -1 if high else 1
    b = [a * ((a + 1) - sign * (a - 1) * c + s2), sign * 2 * a * ((a - 1) - sign * (a + 1) * c),
         a * ((a + 1) - sign * (a - 1) * c - s2)]
    den = [(a + 1) + sign * (a - 1) * c + s2, -sign * 2 * ((a - 1) + sign * (a + 1) * c),
           (a + 1) + sign * (a - 1) * c - s2]
    return np.array([b + den]) / den[0]


def pa_colouration(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Random EQ bumps and a boomy low end, as a loud PA in a room sounds."""
    sos = [shelf(rng.uniform(70, 200), rng.uniform(2, 10), sr, high=False)]
    for _ in range(int(rng.integers(1, 4))):
        sos.append(peaking(float(np.exp(rng.uniform(np.log(150), np.log(6000)))), rng.uniform(-8, 8), rng.uniform(0.7, 3), sr))
    if rng.random() < 0.5:
        sos.append(shelf(rng.uniform(3000, 8000), rng.uniform(-8, 3), sr, high=True))
    return signal.sosfilt(np.concatenate(sos), x, axis=-1)


def convolve_room(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """(2, n) * (2, m) -> (2, n), direct sound aligned with the input."""
    n = x.shape[-1]
    return signal.fftconvolve(x, rir, axes=-1)[:, :n]


# The target keeps the direct sound and the first reflections of the room (as dereverberation
# targets do, e.g. WHAMR!, DNS): they are the source's own sound as heard in the hall and hold the
# loudspeaker/mic response of a measured RIR, which no model can infer blindly. The late
# reverberation after them is what the model removes.
EARLY_REFLECTIONS_S = 0.05
EARLY_FADE_S = 0.01


def early_part(rir: np.ndarray, sr: int) -> np.ndarray:
    """The RIR's first EARLY_REFLECTIONS_S (direct sound at 0), faded out over EARLY_FADE_S."""
    keep, fade = int(EARLY_REFLECTIONS_S * sr), int(EARLY_FADE_S * sr)
    early = np.array(rir[:, :keep], dtype=np.float64)
    n_fade = min(fade, early.shape[1])
    early[:, early.shape[1] - n_fade:] *= 0.5 * (1 + np.cos(np.linspace(0, np.pi, n_fade)))
    return early


def mic_band_limit(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    hp = signal.butter(int(rng.integers(1, 4)), min(rng.uniform(60, 300), 0.2 * sr), "highpass", fs=sr, output="sos")
    cutoff = min(float(np.exp(rng.uniform(np.log(3500), np.log(16000)))), 0.45 * sr)
    lp = signal.butter(int(rng.integers(2, 7)), cutoff, "lowpass", fs=sr, output="sos")
    return signal.sosfilt(np.concatenate([hp, lp]), x, axis=-1)


def auto_gain(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Phone AGC: a slow compressor on the summed level, whose gain 'pumps' with loud events."""
    level = np.sqrt(signal.lfilter([1 - np.exp(-1 / (0.05 * sr))], [1, -np.exp(-1 / (0.05 * sr))], np.mean(x ** 2, axis=0)) + 1e-10)
    level_db = 20 * np.log10(level)
    threshold = np.percentile(level_db, rng.uniform(20, 60))
    ratio = rng.uniform(2, 8)
    target_db = np.where(level_db > threshold, threshold + (level_db - threshold) / ratio, level_db) - level_db
    # The gain follower runs at a decimated control rate (1 ms steps): the pumping is slow anyway.
    step = max(1, sr // 1000)
    target_db = target_db[::step]
    attack, release = np.exp(-step / (rng.uniform(0.005, 0.03) * sr)), np.exp(-step / (rng.uniform(0.15, 0.8) * sr))
    gain_db = np.empty_like(target_db)
    g = 0.0
    for i, tgt in enumerate(target_db):  # gain reduction attacks fast and recovers slowly
        coef = attack if tgt < g else release
        g = coef * g + (1 - coef) * tgt
        gain_db[i] = g
    gain_db = np.interp(np.arange(x.shape[-1]), np.arange(len(gain_db)) * step, gain_db)
    return x * 10 ** (gain_db / 20)


def clip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    drive = 10 ** (rng.uniform(0, 12) / 20)
    y = x / (np.abs(x).max() + 1e-9) * drive
    return np.tanh(y) if rng.random() < 0.5 else np.clip(y, -1.0, 1.0)


def mp3_roundtrip(x: np.ndarray, sr: int, bitrate: int) -> np.ndarray:
    """Encode with LAME at `bitrate` kbps and decode; re-aligned to the input by cross-correlation."""
    enc = lameenc.Encoder()
    enc.set_bit_rate(bitrate)
    enc.set_in_sample_rate(sr)
    enc.set_channels(x.shape[0])
    enc.set_quality(5)
    pcm = (np.clip(x, -1, 1).T * 32767).astype(np.int16)
    data = enc.encode(pcm.tobytes()) + enc.flush()
    y, file_sr = sf.read(io.BytesIO(bytes(data)), dtype="float32", always_2d=True)
    # LAME downsamples on its own at low bitrates (e.g. to 22.05 kHz): back to the working rate.
    y = resample(y.T, file_sr, sr)
    lag = best_lag(x[0], y[0], max_lag=4096)
    y = y[:, lag:] if lag >= 0 else np.pad(y, ((0, 0), (-lag, 0)))
    n = x.shape[-1]
    return np.pad(y[:, :n], ((0, 0), (0, max(0, n - y.shape[-1]))))


def best_lag(ref: np.ndarray, sig: np.ndarray, max_lag: int) -> int:
    """Lag L (|L| <= max_lag) maximising sum ref[t] * sig[t + L]."""
    m = min(len(ref), len(sig))
    corr = signal.fftconvolve(sig[:m], ref[:m][::-1], mode="full")
    centre = m - 1
    window = corr[centre - max_lag: centre + max_lag + 1]
    return int(np.argmax(window)) - max_lag


def degrade(clean: np.ndarray, sr: int, rng: np.random.Generator, rir: np.ndarray, crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Clean (2, n) music -> (degraded, target, params). Both outputs are (2, n) float32.

    The target is the clean music through the room's early part (`early_part`), at the level the
    music has in the degraded mix, so the model learns to remove what was added (late reverb, crowd,
    PA colouration, mic limits, AGC, clipping, MP3), not to change overall loudness.
    """
    params: dict = {}
    x = clean.astype(np.float64)
    if rng.random() < 0.85:
        x = pa_colouration(x, sr, rng)
        params["pa"] = True
    wet = convolve_room(x, rir)
    early_target = convolve_room(clean.astype(np.float64), early_part(rir, sr))
    snr_db = float(rng.uniform(0, 15))
    params["snr_db"] = round(snr_db, 1)
    music_power = float(np.mean(wet ** 2)) + 1e-12
    crowd_power = float(np.mean(crowd ** 2)) + 1e-12
    y = wet + crowd * np.sqrt(music_power / crowd_power / 10 ** (snr_db / 10))
    if rng.random() < 0.8:
        y = mic_band_limit(y, sr, rng)
        params["mic"] = True
    if rng.random() < 0.5:
        y = y.mean(axis=0, keepdims=True).repeat(2, axis=0)  # a mono phone
        x_target = np.repeat(early_target.mean(axis=0, keepdims=True), 2, axis=0)
        params["mono"] = True
    else:
        x_target = early_target
    if rng.random() < 0.6:
        y = auto_gain(y, sr, rng)
        params["agc"] = True
    y = y / (np.abs(y).max() + 1e-9) * 0.7
    if rng.random() < 0.4:
        y = clip(y, rng) * 0.7
        params["clip"] = True
    if rng.random() < 0.7:
        bitrate = int(rng.choice([48, 64, 80, 96, 128]))
        y = mp3_roundtrip(y, sr, bitrate)
        params["mp3_kbps"] = bitrate
    # Level of the music within the mix: its share of the power at this SNR.
    music_share = np.sqrt(10 ** (snr_db / 10) / (1 + 10 ** (snr_db / 10)))
    target = x_target / (np.sqrt(np.mean(x_target ** 2)) + 1e-9) * np.sqrt(np.mean(y ** 2)) * music_share
    peak = max(np.abs(target).max(), np.abs(y).max())
    if peak > 0.99:
        target, y = target * 0.99 / peak, y * 0.99 / peak
    return y.astype(np.float32), target.astype(np.float32), params
