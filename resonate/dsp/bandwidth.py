"""A recording's effective bandwidth, and the band grid bandwidth extension works on.

An MP3 or AAC encoder at a low bit rate, or a phone's anti-alias filter, removes everything above
some frequency (7-16 kHz): the long-term spectrum of such a file runs at the music's level up to
that frequency, then falls within a few hundred hertz to the noise floor and stays there.
:func:`detect_cutoff` looks for exactly that cliff in a :class:`LongTermSpectrum` (the mean power
spectrum of the whole stream, accumulated block by block in constant memory). Full-band music
decays gently towards the top and has no such cliff; the cliff must also be deep
(``min_drop_db``), so a noisy recording whose highs only get quieter is not called band-limited.

The band grid (:data:`BAND_EDGES_HZ`) is fixed in hertz, so the same model serves every sample
rate: bands above a file's Nyquist frequency simply do not exist for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Coarse below 4 kHz (what the model needs there is the overall shape), 500 Hz wide above, where
# cutoffs fall and the missing band's envelope is predicted.
BAND_EDGES_HZ = np.array([0.0, 200.0, 400.0, 700.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3500.0]
                         + [4000.0 + 500.0 * i for i in range(41)])   # ... 24000 Hz
N_BANDS = len(BAND_EDGES_HZ) - 1

MIN_CUTOFF_HZ = 5000.0      # below this a steep fall is the music's own (dark ambient music falls 30-45 dB above 2 kHz)
SMOOTH_HZ = 300.0           # the long-term spectrum is averaged over this width before the search
PASSBAND_HZ = (1000.0, 100.0)   # the passband level is read this far below a candidate edge
TRANSITION_HZ = 1500.0      # a filter's transition band: the floor is read this far above it
MIN_DROP_DB = 25.0          # passband to floor; a band-limited file shows 40-100 dB
EDGE_DB = 8.0               # the cutoff: where the spectrum falls this far below the passband for good
STRAY_SHARE = 0.05          # share of the floor that may rise above that (a stray tone, a birdie)
TOP_MARGIN = 0.97           # above this share of Nyquist the resampler's own roll-off lives


def analysis_size(sample_rate: int) -> int:
    """FFT size with bins about 21.5 Hz wide at every rate (2048 at 44.1 and 48 kHz)."""
    return int(2 ** max(8, round(math.log2(sample_rate / 21.5))))


class LongTermSpectrum:
    """Mean power spectrum of a stream (all channels summed), from non-overlapping Hann frames.

    ``update`` takes (channels, n) blocks of any length; at most one frame of samples is kept
    between calls.
    """

    def __init__(self, sample_rate: int, channels: int, n_fft: int | None = None):
        self.sample_rate = int(sample_rate)
        self.n_fft = n_fft or analysis_size(sample_rate)
        self._window = np.hanning(self.n_fft + 1)[:-1].astype(np.float32)
        self._pending = np.zeros((channels, 0), dtype=np.float32)
        self.power_sum = np.zeros(self.n_fft // 2 + 1, dtype=np.float64)
        self.frames = 0

    def update(self, block: np.ndarray) -> None:
        x = np.concatenate([self._pending, np.asarray(block, dtype=np.float32)], axis=-1)
        n = x.shape[-1] // self.n_fft
        if n:
            frames = x[:, : n * self.n_fft].reshape(x.shape[0], n, self.n_fft) * self._window
            spec = np.fft.rfft(frames, axis=-1)
            self.power_sum += (spec.real ** 2 + spec.imag ** 2).sum(axis=(0, 1))
            self.frames += n
        self._pending = x[:, n * self.n_fft:]

    @property
    def power(self) -> np.ndarray:
        """Mean power per bin (zeros before the first full frame)."""
        return self.power_sum / max(self.frames, 1)

    @property
    def freqs(self) -> np.ndarray:
        return np.fft.rfftfreq(self.n_fft, 1.0 / self.sample_rate)


@dataclass(frozen=True)
class Bandwidth:
    """What :func:`detect_cutoff` found. ``cutoff_hz`` is None for full-band input."""

    cutoff_hz: float | None
    drop_db: float              # passband level just below the edge minus the floor above it
    top_hz: float               # the highest frequency examined (just under Nyquist)

    @property
    def limited(self) -> bool:
        return self.cutoff_hz is not None


def _smoothed_db(power: np.ndarray, bin_hz: float) -> np.ndarray:
    """Power averaged (linearly) over ``SMOOTH_HZ``, in dB: sparse harmonics still read as a level."""
    width = max(1, int(round(SMOOTH_HZ / bin_hz)) | 1)
    kernel = np.ones(width) / width
    smooth = np.convolve(np.pad(power, width // 2, mode="edge"), kernel, mode="valid")
    floor = max(float(smooth.max()), 1e-30) * 1e-15           # 150 dB below the loudest: no -inf
    return 10.0 * np.log10(np.maximum(smooth, floor))


def detect_cutoff(power: np.ndarray, sample_rate: int, min_drop_db: float = MIN_DROP_DB) -> Bandwidth:
    """The frequency above which the long-term spectrum ``power`` (rfft bins) falls to the noise floor.

    A candidate edge f is scored by the passband level below it (median of the smoothed spectrum
    over ``PASSBAND_HZ`` under f) minus the highest level above it once a filter's transition band
    is past (95th percentile from f + ``TRANSITION_HZ`` up, so a stray tone in the floor does not
    hide the cliff). The lowest candidate whose drop reaches ``min_drop_db`` gives the passband
    level P, read just below the cliff's start; the cutoff is then the lowest frequency above
    which the spectrum stays ``EDGE_DB`` under P (but for ``STRAY_SHARE`` of the bins). No such
    drop means full band.
    """
    n_bins = len(power)
    bin_hz = sample_rate / (2.0 * (n_bins - 1))
    top_hz = TOP_MARGIN * sample_rate / 2.0
    if not np.any(power > 0):
        return Bandwidth(None, 0.0, top_hz)
    db = _smoothed_db(np.asarray(power, dtype=np.float64), bin_hz)
    top = int(top_hz / bin_hz)
    lo_off, hi_off = (int(round(v / bin_hz)) for v in PASSBAND_HZ)
    transition = int(round(TRANSITION_HZ / bin_hz))
    first = max(int(MIN_CUTOFF_HZ / bin_hz), lo_off)
    last = top - transition - int(round(SMOOTH_HZ / bin_hz))
    if last <= first:
        return Bandwidth(None, 0.0, top_hz)
    step = max(1, int(round(50.0 / bin_hz)))           # candidates every ~50 Hz
    candidates = np.arange(first, last, step)
    below = np.array([np.median(db[k - lo_off: k - hi_off + 1]) for k in candidates])
    above = np.array([np.percentile(db[k + transition: top], 95) for k in candidates])
    drops = below - above
    deep = np.flatnonzero(drops >= min_drop_db)
    if not len(deep):
        return Bandwidth(None, float(drops.max()), top_hz)
    i = int(deep[0])
    passband, drop = float(below[i]), float(drops[i])
    # Lowest k above which (almost) everything stays EDGE_DB under the passband: a reversed
    # running count of the bins that rise above the threshold.
    over = db[:top] >= passband - EDGE_DB
    over_above = np.cumsum(over[::-1].astype(np.int64))[::-1]     # bins at or above k that are over
    share = over_above / (top - np.arange(top))
    start = int(candidates[i]) - lo_off
    settled = np.flatnonzero((share[start:] <= STRAY_SHARE) & ~over[start:])
    if not len(settled):
        return Bandwidth(None, drop, top_hz)
    cutoff = (start + int(settled[0])) * bin_hz
    if cutoff >= top_hz - SMOOTH_HZ:
        return Bandwidth(None, drop, top_hz)
    return Bandwidth(float(cutoff), drop, top_hz)


def band_index(freqs_hz: np.ndarray) -> np.ndarray:
    """Band of each frequency on :data:`BAND_EDGES_HZ` (frequencies above 24 kHz: the last band)."""
    return np.clip(np.searchsorted(BAND_EDGES_HZ, freqs_hz, side="right") - 1, 0, N_BANDS - 1)


def band_centres_hz() -> np.ndarray:
    return 0.5 * (BAND_EDGES_HZ[:-1] + BAND_EDGES_HZ[1:])
