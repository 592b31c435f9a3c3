"""What the results views show, computed from files on disk in bounded memory and bounded size.

Every function streams the file once and returns a few thousand numbers at most, whatever the
recording's length: a two-hour show draws as fast on the page as a thirty-second clip.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from resonate.audio.io import probe, read_blocks

ENVELOPE_POINTS = 2000
SPECTROGRAM_COLUMNS = 400
SPECTROGRAM_BANDS = 160
SPECTROGRAM_FFT = 4096
SPECTROGRAM_FLOOR_DB = 90.0     # dynamic range shown below the loudest cell
LOWEST_HZ = 20.0


@dataclass(frozen=True)
class Envelope:
    """Min/max of the waveform (over channels) per time bucket; ``times`` are bucket starts in s."""

    times: np.ndarray
    lows: np.ndarray
    highs: np.ndarray


@dataclass(frozen=True)
class Spectrogram:
    times: np.ndarray           # column centres, s
    freqs: np.ndarray           # band centres, Hz (log spaced)
    db: np.ndarray              # (bands, columns), dB relative to full scale, floored


def envelope(path: str | os.PathLike, points: int = ENVELOPE_POINTS) -> Envelope:
    info = probe(path)
    bucket = max(1, math.ceil(info.frames / points))
    lows, highs = [], []
    carry = np.zeros((info.channels, 0), np.float32)
    # Blocks are whole numbers of buckets so that no bucket straddles two reads.
    for block in read_blocks(path, bucket * max(1, (1 << 18) // bucket)):
        x = np.concatenate([carry, block], axis=-1) if carry.shape[-1] else block
        whole = (x.shape[-1] // bucket) * bucket
        if whole:
            seg = x[:, :whole].reshape(info.channels, -1, bucket)
            lows.append(seg.min(axis=(0, 2)))
            highs.append(seg.max(axis=(0, 2)))
        carry = x[:, whole:]
    if carry.shape[-1]:
        lows.append(carry.min(axis=0, keepdims=True).min(axis=1))
        highs.append(carry.max(axis=0, keepdims=True).max(axis=1))
    lo = np.concatenate(lows) if lows else np.zeros(0, np.float32)
    hi = np.concatenate(highs) if highs else np.zeros(0, np.float32)
    times = np.arange(lo.size) * bucket / info.sample_rate
    return Envelope(times, lo, hi)


def _band_matrix(sr: int, n_fft: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(bands, bins) averaging matrix from linear FFT bins to log-spaced bands, and band centres."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = np.geomspace(LOWEST_HZ, sr / 2, bands + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    m = np.zeros((bands, freqs.size))
    for i in range(bands):
        inside = np.nonzero((freqs >= edges[i]) & (freqs < edges[i + 1]))[0]
        if inside.size == 0:        # low bands narrower than one bin take the nearest bin
            inside = np.array([int(np.argmin(np.abs(freqs - centres[i])))])
        m[i, inside] = 1.0 / inside.size
    return m, centres


def spectrogram(path: str | os.PathLike, columns: int = SPECTROGRAM_COLUMNS, bands: int = SPECTROGRAM_BANDS,
                n_fft: int = SPECTROGRAM_FFT, ffts_per_column: int = 4) -> Spectrogram:
    """Log-frequency power spectrogram pooled to at most ``columns`` x ``bands`` cells.

    Each column is one stretch of the file; its spectrum is the mean power of up to
    ``ffts_per_column`` Hann-windowed FFTs spread over that stretch (pooling, not a single slice,
    so a column stands for its whole stretch).
    """
    info = probe(path)
    span = max(n_fft, math.ceil(info.frames / columns))
    window = np.hanning(n_fft).astype(np.float32)
    norm = (window.sum() / 2) ** 2
    matrix, centres = _band_matrix(info.sample_rate, n_fft, bands)
    cols, times = [], []
    start = 0
    for block in read_blocks(path, span):
        mono = block.mean(axis=0)
        if mono.size < n_fft:
            mono = np.pad(mono, (0, n_fft - mono.size))
        offsets = np.linspace(0, mono.size - n_fft, min(ffts_per_column, 1 + (mono.size - n_fft) // (n_fft // 2)))
        frames = np.stack([mono[int(o): int(o) + n_fft] * window for o in offsets])
        power = (np.abs(np.fft.rfft(frames, axis=-1)) ** 2).mean(axis=0) / norm
        cols.append(matrix @ power)
        times.append((start + block.shape[-1] / 2) / info.sample_rate)
        start += block.shape[-1]
    power = np.stack(cols, axis=1) if cols else np.zeros((bands, 0))
    db = 10 * np.log10(np.maximum(power, 1e-20))
    if db.size:
        db = np.maximum(db, db.max() - SPECTROGRAM_FLOOR_DB)
    return Spectrogram(np.asarray(times), centres, db.astype(np.float32))
