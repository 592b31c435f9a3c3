"""Match: make the recording sound like its studio version (the reference), a two-pass stage.

Pass 1 (``measure``) takes the long-term average spectrum (LTAS) of the stream as it reaches the
stage (after restore), one per reference's time range, and per third-octave band a histogram of
frame levels (its low percentile is the band's noise floor). Between the passes (``plan``) each
range gets a correction: the reference's LTAS over the recording's, both smoothed over a fraction
of an octave, with the level difference removed (a weighted median over 100 Hz-8 kHz), clamped to
``max_correction_db``, never boosting where the recording has nothing to boost (a band close to
its noise floor, above a codec's cutoff, below 25 Hz), times ``strength``. Pass 2 (``apply``)
runs each correction as a linear-phase FIR (so no band moves in time against another), streamed
with its latency removed: the output is exactly as long as the input and aligned with it.
Several references each cover a time range of the show; their corrections crossfade over
``crossfade_s`` at the boundaries, and stretches no range covers pass unchanged.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from scipy import signal

from resonate.audio.io import probe, read_blocks
from resonate.audio.resample import StreamResampler
from resonate.config import check_ranges, setting
from resonate.dsp.fir import linear_phase_fir, stream_linear_phase
from resonate.dsp.loudness import LoudnessMeter
from resonate.errors import ResonateError
from resonate.jobfiles import same_file
from resonate.stages import register
from resonate.stages.base import StageContext, TwoPassStage

MIN_REFERENCE_SECONDS = 10.0
SILENT_DBFS = -70.0            # a reference whose average level is below this is taken as silent
DIGITAL_SILENCE_DB = -100.0    # frames quieter than this are left out of every measurement
NOISE_PERCENTILE = 10.0        # a band's noise floor: this percentile of its frame levels
NOISE_MARGIN_DB = 12.0         # a band may be boosted by at most its level above the floor minus this
CONTENT_SPAN_DB = 60.0         # a bin this far below the spectrum's loudest part has no content
CONTENT_OCTAVES = 1 / 12       # the smoothing of the spectra that content is judged on
GONE_DB = 30.0                 # the recording this far under the reference has lost that frequency
LEVEL_BAND_HZ = (100.0, 8000.0)   # where the level difference between the two spectra is measured
LOWEST_HZ = 25.0               # nothing below is corrected
HIST_RANGE_DB = (-160.0, 20.0)  # frame band levels, in 1-dB bins
CURVE_POINTS_PER_OCTAVE = 6    # the correction curve in the report
SECTION_SECONDS = 5.0          # the reference's balance is also measured per section this long


def _fft_size(sample_rate: int) -> int:
    """About 5 Hz per bin at 44.1/48 kHz (the lowest third-octave bands still get a few bins)."""
    return 8192 if sample_rate <= 50_000 else 16384


# ---------------------------------------------------------------------------------------------
# References and their time ranges


_TIME = r"(?:\d+:){0,2}\d+(?:\.\d*)?"
_RANGE = re.compile(rf"^(?P<start>{_TIME})?-(?P<end>{_TIME})?$")


def parse_time(text: str) -> float:
    """'4:10' -> 250.0, '1:02:03.5' -> 3723.5, '12.5' -> 12.5."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


@dataclass(frozen=True)
class Reference:
    """A studio version and the stretch of the recording it stands for (None: from the start / to the end)."""

    path: str
    start_s: float | None = None
    end_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """``STUDIO.wav`` or ``STUDIO.wav@START-END`` (times as S, M:SS or H:MM:SS; either may be left out)."""
        path, at, span = str(text).rpartition("@")
        match = _RANGE.match(span.strip()) if at else None
        if not match or not path:
            return cls(str(text))
        start, end = match.group("start"), match.group("end")
        ref = cls(path, parse_time(start) if start else None, parse_time(end) if end else None)
        if ref.start_s is not None and ref.end_s is not None and ref.end_s <= ref.start_s:
            raise ResonateError(f"reference {text}: the time range ends before it starts")
        return ref

    def label(self) -> str:
        def clock(s: float) -> str:
            return f"{int(s // 60)}:{s % 60:05.2f}".rstrip("0").rstrip(".")

        if self.start_s is None and self.end_s is None:
            return Path(self.path).name
        start = clock(self.start_s) if self.start_s is not None else ""
        end = clock(self.end_s) if self.end_s is not None else ""
        return f"{Path(self.path).name}@{start}-{end}"


@dataclass(frozen=True)
class MatchConfig:
    references: tuple[Reference, ...] = ()
    strength: float = setting(1.0, label="Match strength", range=(0.0, 1.0), step=0.05,
                              help="how much of the correction towards the studio version: 0 = none, 1 = all")
    max_correction_db: float = setting(12.0, label="Correction limit", unit="dB", range=(0.0, 24.0), step=0.5,
                                       help="the correction never boosts or cuts any frequency by more than this")
    # One octave: the reference is another stretch of the song, whose finer detail is its own
    # notes, not what the PA and the room did (docs/matching.md: 1/3 octave scored lower).
    smoothing_octaves: float = setting(1.0, label="Smoothing", unit="octave", range=(1 / 24, 2.0), step=1 / 24,
                                       help="width over which both spectra are averaged before they are compared")
    variation_margin: float = setting(1.0, label="Song-variation margin", unit="x", range=(0.0, 3.0), step=0.25,
                                      help="each correction is reduced by this many times how much the studio "
                                           "version's own balance changes between its sections (the recording is "
                                           "another stretch of the song); smaller corrections are dropped")
    crossfade_s: float = setting(2.0, label="Crossfade", unit="s", range=(0.0, 30.0), step=0.5,
                                 help="how long one reference's correction takes to hand over to the next")

    def __post_init__(self):
        refs = self.references
        refs = (refs,) if isinstance(refs, str | Reference) else tuple(refs or ())
        object.__setattr__(self, "references", tuple(
            r if isinstance(r, Reference) else Reference.parse(r) if isinstance(r, str) else Reference(**r)
            for r in refs))
        check_ranges(self)
        check_reference_ranges(self.references)


def check_reference_ranges(refs: tuple[Reference, ...]) -> None:
    """Several references need a time range each, and their ranges must not overlap."""
    if len(refs) > 1:
        bare = next((r for r in refs if r.start_s is None and r.end_s is None), None)
        if bare is not None:
            raise ResonateError(f"several references: give each a time range (e.g. {bare.path}@0:00-4:10)")
        spans = sorted((r.start_s or 0.0, r.end_s if r.end_s is not None else np.inf, r) for r in refs)
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise ResonateError(f"the time ranges of the references {a.label()} and {b.label()} overlap")


def check_reference_paths(refs: Iterable[Reference], inputs: Iterable[Path], outputs: Iterable[Path]) -> None:
    """A reference that is one of the job's inputs or outputs is a slip: refused."""
    inputs, outputs = list(inputs), list(outputs)
    for ref in refs:
        for path, what in [(p, "input") for p in inputs] + [(p, "output") for p in outputs]:
            if path is not None and same_file(ref.path, path):
                raise ResonateError(f"the reference {ref.path} is also the {what} {path}; "
                                    "give the studio version of the songs")


# ---------------------------------------------------------------------------------------------
# Long-term spectra


def _third_octave_bands(freqs: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the third-octave bands from 25 Hz to the top, and a (bins, bands) averaging matrix."""
    centres = 1000.0 * 2.0 ** (np.arange(-16, 14) / 3)
    centres = centres[centres * 2 ** (1 / 6) < 0.5 * sample_rate]
    matrix = np.zeros((len(freqs), len(centres)))
    for j, fc in enumerate(centres):
        inside = (freqs >= fc * 2 ** (-1 / 6)) & (freqs < fc * 2 ** (1 / 6))
        if not inside.any():
            inside = np.abs(freqs - fc) == np.abs(freqs - fc).min()
        matrix[inside, j] = 1.0 / inside.sum()
    return centres, matrix


# A frame's power summed over its bins is 1.5 times its mean square (Hann, the scale below);
# twice the mean square reads 0 dB for a full-scale sine.
_SUM_TO_DBFS = 2 / 1.5


class SpectrumMeter:
    """Streaming Welch average (Hann, half overlap) of the channels' mean power, per time segment,
    and per third-octave band a histogram of frame levels. Frames quieter than digital silence
    are left out. ``segment_of(centres)`` maps frame centres (samples) to a segment, -1 for none."""

    def __init__(self, sample_rate: int, n_segments: int = 1,
                 segment_of: Callable[[np.ndarray], np.ndarray] | None = None):
        self.sample_rate = sample_rate
        self.n_fft = _fft_size(sample_rate)
        self.hop = self.n_fft // 2
        self.window = signal.get_window("hann", self.n_fft).astype(np.float32)
        # Power of a full-scale sine in one frame, so levels read in dBFS.
        self.scale = 2.0 / (self.window.sum() ** 2)
        self.freqs = np.fft.rfftfreq(self.n_fft, 1 / sample_rate)
        self.band_centres, self.band_matrix = _third_octave_bands(self.freqs, sample_rate)
        self.segment_of = segment_of or (lambda c: np.zeros(len(c), dtype=int))
        self.power = np.zeros((n_segments, len(self.freqs)))
        self.frames = np.zeros(n_segments, dtype=np.int64)
        lo, hi = HIST_RANGE_DB
        self.hist = np.zeros((n_segments, len(self.band_centres), int(hi - lo)), dtype=np.int64)
        self._buffer: np.ndarray | None = None
        self._buffer_start = 0         # stream index of the buffer's first sample
        self.total = 0                 # samples measured

    def update(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        self.total += block.shape[-1]
        buf = block if self._buffer is None else np.concatenate([self._buffer, block], axis=-1)
        n_frames = (buf.shape[-1] - self.n_fft) // self.hop + 1 if buf.shape[-1] >= self.n_fft else 0
        for first in range(0, n_frames, 64):     # 64 frames at a time: a few MB of spectra
            last = min(n_frames, first + 64)
            starts = np.arange(first, last) * self.hop
            frames = np.lib.stride_tricks.sliding_window_view(
                buf[:, first * self.hop: (last - 1) * self.hop + self.n_fft], self.n_fft, axis=-1)[:, :: self.hop]
            self._add(frames, self._buffer_start + starts + self.n_fft // 2)
        used = n_frames * self.hop
        self._buffer = buf[:, used:].copy()
        self._buffer_start += used

    def _add(self, frames: np.ndarray, centres: np.ndarray) -> None:
        spectra = scipy.fft.rfft(frames * self.window, axis=-1, workers=1)
        power = (spectra.real ** 2 + spectra.imag ** 2).mean(axis=0) * self.scale      # (frames, bins)
        total_db = 10 * np.log10(power.sum(axis=-1) * _SUM_TO_DBFS + 1e-30)
        segment = np.where(total_db > DIGITAL_SILENCE_DB, self.segment_of(centres), -1)
        band_db = 10 * np.log10(power @ self.band_matrix + 1e-30)
        lo, hi = HIST_RANGE_DB
        level_bin = np.clip(np.floor(band_db - lo), 0, hi - lo - 1).astype(np.int64)
        for k in np.unique(segment[segment >= 0]):
            here = segment == k
            self.power[k] += power[here].sum(axis=0)
            self.frames[k] += int(here.sum())
            np.add.at(self.hist[k], (np.broadcast_to(np.arange(level_bin.shape[1]), level_bin[here].shape),
                                     level_bin[here]), 1)

    def finish(self) -> None:
        """A stream shorter than one frame still gets measured (zero-padded)."""
        if self._buffer is not None and not self.frames.any() and self._buffer.shape[-1]:
            pad = np.zeros((self._buffer.shape[0], self.n_fft), dtype=np.float32)
            pad[:, : self._buffer.shape[-1]] = self._buffer
            self._add(pad[:, None, :], np.array([self._buffer_start + self.n_fft // 2]))
        self._buffer = None

    def psd(self, k: int = 0) -> np.ndarray:
        return self.power[k] / max(1, self.frames[k])

    def level_dbfs(self, k: int = 0) -> float:
        """Average level of the measured frames (a full-scale sine reads about 0 dBFS)."""
        return float(10 * np.log10(self.psd(k).sum() * _SUM_TO_DBFS + 1e-30))

    def band_snr_db(self, k: int = 0) -> np.ndarray:
        """Per third-octave band, its average level over its noise floor (a low percentile of its frame levels)."""
        hist = self.hist[k]
        count = hist.sum(axis=-1, keepdims=True)
        if not count.any():
            return np.zeros(len(self.band_centres))
        floor_bin = (np.cumsum(hist, axis=-1) >= count * NOISE_PERCENTILE / 100).argmax(axis=-1)
        floor_db = HIST_RANGE_DB[0] + floor_bin + 0.5
        mean_db = 10 * np.log10(self.psd(k) @ self.band_matrix + 1e-30)
        return mean_db - floor_db


@functools.lru_cache(maxsize=8)
def _reference_spectrum(path: str, mtime_ns: int, size: int, sample_rate: int
                        ) -> tuple[np.ndarray, float, float, float, np.ndarray]:
    """(power spectrum, average level dBFS, integrated loudness LUFS, seconds, spread of its
    balance between sections in dB per bin): one read of the file."""
    info = probe(path)
    meter = SpectrumMeter(sample_rate)
    section = SpectrumMeter(sample_rate)
    sections: list[np.ndarray] = []       # per section of ~SECTION_SECONDS, its power spectrum
    loudness = LoudnessMeter(info.sample_rate, info.channels, true_peak=False)
    resampler = StreamResampler(info.sample_rate, sample_rate, info.channels)
    for block in read_blocks(path, 1 << 16):
        loudness.update(block)
        block = resampler.process(block)
        meter.update(block)
        section.update(block)
        if section.total >= SECTION_SECONDS * sample_rate:
            if section.frames[0]:
                sections.append(section.psd())
            section = SpectrumMeter(sample_rate)
    meter.update(resampler.process(np.zeros((info.channels, 0), np.float32), last=True))
    meter.finish()
    return meter.psd(), meter.level_dbfs(), loudness.integrated_lufs(), info.seconds, \
        section_spread_db(sections, meter.freqs)


def section_spread_db(sections: list[np.ndarray], freqs: np.ndarray, octaves: float = 1.0) -> np.ndarray:
    """Per bin, how much the balance of the studio version differs between its sections (dB,
    standard deviation over sections of each one's smoothed spectrum less its own level). The
    recording is another stretch of the song than the reference, so a correction this size
    or smaller may be the song's own change, not the PA's or the room's. Zeros with fewer than
    two sections."""
    if len(sections) < 2:
        return np.zeros(len(freqs))
    band = (freqs >= LEVEL_BAND_HZ[0]) & (freqs <= LEVEL_BAND_HZ[1])
    levels = []
    for psd in sections:
        smooth = 10 * np.log10(smooth_octave(psd, freqs, octaves) + 1e-30)
        levels.append(smooth - _weighted_median(smooth[band], 1 / freqs[band]))
    return np.std(np.array(levels), axis=0)


def reference_spectrum(ref: Reference, sample_rate: int) -> np.ndarray:
    """The reference's long-term power spectrum on the stream's FFT grid (read in any supported
    format, resampled to ``sample_rate``). Too short, silent or unreadable: one clear error."""
    return _checked_reference(ref, sample_rate)[0]


def reference_spread_db(ref: Reference, sample_rate: int) -> np.ndarray:
    """How much the reference's balance varies between its sections, per bin (``section_spread_db``)."""
    return _checked_reference(ref, sample_rate)[4]


def references_lufs(refs: Iterable[Reference], sample_rate: int = 44100) -> float:
    """Integrated loudness of the studio versions together (BS.1770, each file measured whole;
    several are combined as their powers weighted by length), for loudness that follows them."""
    measured = [_checked_reference(r, sample_rate)[2:4] for r in refs]
    if not measured:
        raise ResonateError("no studio version to take the loudness from")
    power = sum(seconds * 10 ** (lufs / 10) for lufs, seconds in measured) / sum(s for _, s in measured)
    return float(10 * np.log10(power))


def _checked_reference(ref: Reference, sample_rate: int) -> tuple[np.ndarray, float, float, float, np.ndarray]:
    path = Path(ref.path)
    if not path.is_file():
        raise ResonateError(f"reference {ref.path} not found")
    info = probe(path)
    if info.seconds < MIN_REFERENCE_SECONDS:
        raise ResonateError(f"reference {path.name} is {info.seconds:.1f} s long; the studio version needs at least "
                            f"{MIN_REFERENCE_SECONDS:g} s to give its spectrum")
    stat = os.stat(path)
    measured = _reference_spectrum(str(path.resolve()), stat.st_mtime_ns, stat.st_size, sample_rate)
    if measured[1] < SILENT_DBFS:
        raise ResonateError(f"reference {path.name} is silent (average level {measured[1]:.0f} dBFS)")
    return measured


def check_references(refs: Iterable[Reference], sample_rate: int = 44100) -> None:
    """Read every reference once (the CLI does this before any work, so a bad one fails first)."""
    for ref in refs:
        reference_spectrum(ref, sample_rate)


# ---------------------------------------------------------------------------------------------
# The correction


def smooth_octave(power: np.ndarray, freqs: np.ndarray, octaves: float) -> np.ndarray:
    """Mean of ``power`` over +-octaves/2 around each frequency (bin 0 as its neighbour)."""
    df = freqs[1]
    f = np.maximum(freqs, df)
    lo = np.clip(np.floor(f * 2 ** (-octaves / 2) / df), 0, len(f) - 1).astype(int)
    hi = np.clip(np.ceil(f * 2 ** (octaves / 2) / df), 0, len(f) - 1).astype(int)
    cum = np.concatenate([[0.0], np.cumsum(power)])
    return (cum[hi + 1] - cum[lo]) / (hi + 1 - lo)


@dataclass
class Correction:
    """One reference's correction and the curves it came from (dB on the FFT grid)."""

    reference: Reference
    freqs: np.ndarray
    reference_db: np.ndarray    # smoothed, moved by the level difference onto the recording's level
    recording_db: np.ndarray    # smoothed
    gain_db: np.ndarray         # applied (after clamps, content limits and strength)
    content_top_hz: float       # above this the recording has no content (a codec's cutoff)
    frames: int                 # how many frames of the recording it was measured on

    def curve(self) -> dict[str, Any]:
        """The three curves on a log-frequency grid, for the report and the app's plot."""
        top = self.freqs[-1]
        grid = LOWEST_HZ * 2.0 ** (np.arange(0, np.log2(top / LOWEST_HZ), 1 / CURVE_POINTS_PER_OCTAVE))

        def on_grid(y: np.ndarray) -> list[float | None]:
            # None where a spectrum has no content (strict JSON has no NaN; plots leave a gap).
            return [round(float(v), 2) if np.isfinite(v) else None for v in np.interp(grid, self.freqs, y)]

        return {"reference": self.reference.label(), "freq_hz": [round(float(f), 1) for f in grid],
                "reference_db": on_grid(self.reference_db), "recording_db": on_grid(self.recording_db),
                "applied_db": on_grid(self.gain_db)}


def design_correction(ref_psd: np.ndarray, rec_psd: np.ndarray, band_snr_db: np.ndarray, band_centres: np.ndarray,
                      freqs: np.ndarray, cfg: MatchConfig, ref_spread_db: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The gain (dB per bin) that brings the recording's smoothed spectrum onto the reference's.

    Returns (gain, reference curve on the recording's level, recording curve, top of the
    recording's content in Hz)."""
    def db(psd: np.ndarray, octaves: float, where: np.ndarray | None = None) -> np.ndarray:
        """Smoothed level in dB; with ``where``, averaged over those bins only (a codec's empty
        band does not pull down the average just under its cutoff)."""
        if where is None:
            return 10 * np.log10(smooth_octave(psd, freqs, octaves) + 1e-30)
        share = smooth_octave(where.astype(float), freqs, octaves)
        mean = smooth_octave(np.where(where, psd, 0.0), freqs, octaves) / np.maximum(share, 1e-9)
        return 10 * np.log10(np.where(share > 0, mean, 0.0) + 1e-30)

    # Where each has content, judged on a fine smoothing (a codec's cutoff is a cliff, and a
    # wide smoothing would spread it): no more than CONTENT_SPAN_DB under the loudest part.
    ref_fine, rec_fine = db(ref_psd, CONTENT_OCTAVES), db(rec_psd, CONTENT_OCTAVES)
    audible = (freqs >= LOWEST_HZ) & (freqs <= 16000.0)

    def has_content(fine: np.ndarray) -> np.ndarray:
        return (fine > fine[audible].max() - CONTENT_SPAN_DB) & (freqs >= LOWEST_HZ)

    both = has_content(rec_fine) & has_content(ref_fine)
    # The level difference: a median over log-frequency (each octave counts the same), so the
    # clamps limit the shape of the correction, not its overall level.
    level = both & (freqs >= LEVEL_BAND_HZ[0]) & (freqs <= LEVEL_BAND_HZ[1])
    rough = db(ref_psd, cfg.smoothing_octaves, both) - db(rec_psd, cfg.smoothing_octaves, both)
    offset = _weighted_median(rough[level], 1 / freqs[level]) if level.any() else 0.0
    # The recording has lost a frequency when it lies GONE_DB or more under the reference there
    # (a codec's cutoff, a phone's microphone at its limit): boosting it would lift only what the
    # loss left (noise, codec artefacts). Above the highest frequency it keeps, nothing is boosted.
    kept = both & (rec_fine - (ref_fine - offset) > -GONE_DB)
    top = float(freqs[kept].max()) if kept.any() else 0.0
    ref_db, rec_db = db(ref_psd, cfg.smoothing_octaves, kept), db(rec_psd, cfg.smoothing_octaves, kept)
    gain = np.where(kept, ref_db - rec_db - offset, 0.0)
    if ref_spread_db is not None and cfg.variation_margin > 0:
        # What the song itself changes between sections is no evidence of the PA or the room.
        gain = np.sign(gain) * np.maximum(np.abs(gain) - cfg.variation_margin * ref_spread_db, 0.0)
    gain = np.clip(gain, -cfg.max_correction_db, cfg.max_correction_db)
    # Never boost what is not there: at most the band's level over its noise floor, less a
    # margin; nothing where the recording has lost the frequency, nor within a sixth of an
    # octave under its top (the FIR's transition).
    snr = np.interp(np.log2(np.maximum(freqs, 1.0)), np.log2(band_centres), band_snr_db)
    boost_cap = np.clip(snr - NOISE_MARGIN_DB, 0.0, cfg.max_correction_db)
    boost_cap = np.where(kept & (freqs < top * 2 ** (-1 / 6)), boost_cap, 0.0)
    gain = np.minimum(gain, boost_cap) * cfg.strength
    curves_where = has_content(rec_fine) | has_content(ref_fine)
    return gain, np.where(curves_where, db(ref_psd, cfg.smoothing_octaves) - offset, np.nan), \
        np.where(curves_where, db(rec_psd, cfg.smoothing_octaves), np.nan), top


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


# ---------------------------------------------------------------------------------------------
# The stage


@register
class MatchStage(TwoPassStage):
    name = "match"
    Config = MatchConfig

    def idle_reason(self) -> str | None:
        return None if self.config.references else "no studio reference given"

    def open(self, ctx: StageContext) -> None:
        self.ctx = ctx
        refs = self.config.references
        check_reference_paths(refs, [ctx.input_path], [ctx.output_path])
        self.sample_rate = ctx.sample_rate
        self.ref_psds = [reference_spectrum(r, ctx.sample_rate) for r in refs]
        self.ref_spreads = [reference_spread_db(r, ctx.sample_rate) for r in refs]
        self.spans = [(r.start_s or 0.0, r.end_s if r.end_s is not None else np.inf) for r in refs]
        starts = np.array([s for s, _ in self.spans]) * ctx.sample_rate
        ends = np.array([e for _, e in self.spans]) * ctx.sample_rate

        def segment_of(centres: np.ndarray) -> np.ndarray:
            inside = (centres[:, None] >= starts) & (centres[:, None] < ends)
            return np.where(inside.any(axis=1), inside.argmax(axis=1), -1)

        self.meter = SpectrumMeter(ctx.sample_rate, len(refs), segment_of)
        self.corrections: list[Correction | None] = []
        self.filters: list[np.ndarray | None] = []

    def measure(self, block: np.ndarray) -> None:
        self.meter.update(block)

    def plan(self, reread: Callable[[], Iterable[np.ndarray]]) -> None:
        self._design()

    def _design(self) -> None:
        meter = self.meter
        meter.finish()
        self.corrections, self.filters = [], []
        for k, ref in enumerate(self.config.references):
            if meter.frames[k] == 0:
                self.ctx.warn(f"reference {ref.label()}: the recording is silent or shorter than its time range there; not used")
                self.corrections.append(None)
                self.filters.append(None)
                continue
            gain, ref_db, rec_db, top = design_correction(self.ref_psds[k], meter.psd(k), meter.band_snr_db(k),
                                                          meter.band_centres, meter.freqs, self.config,
                                                          self.ref_spreads[k])
            self.corrections.append(Correction(ref, meter.freqs, ref_db, rec_db, gain, top, int(meter.frames[k])))
            self.filters.append(linear_phase_fir(gain, meter.n_fft))

    def _weights(self, t: np.ndarray) -> list[np.ndarray | None]:
        """Per reference, its weight at aligned sample times ``t`` (None where zero throughout):
        raised-cosine ramps of ``crossfade_s`` centred on each range's ends, none at the
        recording's own start and end."""
        sr, total = self.sample_rate, self.meter.total
        fade = max(1.0, self.config.crossfade_s * sr)
        weights: list[np.ndarray | None] = []
        for (start_s, end_s), h in zip(self.spans, self.filters):
            if h is None:
                weights.append(None)
                continue
            start, end = start_s * sr, min(end_s * sr, float(total))
            w = np.ones(len(t))
            if start > 0:
                w *= _rise((t - start) / fade + 0.5)
            if end < total:
                w *= _rise((end - t) / fade + 0.5)
            weights.append(w if w.any() else None)
        return weights

    def apply(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        if not self.corrections and self.config.references:
            self._design()
        taps = self.meter.n_fft + 1
        delay = taps // 2

        def corrected(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            n = len(t)
            out = np.zeros((x.shape[0], n), dtype=np.float64)
            rest = np.ones(n)
            for h, w in zip(self.filters, self._weights(t)):
                if w is None:
                    continue
                out += w * signal.oaconvolve(x, h[None, :], mode="valid", axes=-1)
                rest -= w
            if np.any(rest > 1e-9):
                out += rest * x[:, taps - 1 - delay: taps - 1 - delay + n]
            return out

        yield from stream_linear_phase(blocks, taps, self.ctx.channels, corrected)

    def report(self) -> dict:
        used = [c for c in getattr(self, "corrections", []) if c is not None]
        return {
            "references": [r.label() for r in self.config.references],
            "strength": self.config.strength,
            "max_correction_db": self.config.max_correction_db,
            "max_boost_db": round(max((float(c.gain_db.max()) for c in used), default=0.0), 2),
            "max_cut_db": round(min((float(c.gain_db.min()) for c in used), default=0.0), 2),
            "content_top_hz": [round(c.content_top_hz) for c in used],
            "curves": [c.curve() for c in used],
        }


def _rise(p: np.ndarray) -> np.ndarray:
    """0 -> 1 raised cosine over p in [0, 1]; rise(p) + rise(1 - p) = 1 (crossfades sum to one)."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(p, 0.0, 1.0))
