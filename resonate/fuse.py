"""Fusing several recordings of one show into one (issue 15).

Phones in the crowd each carry the same music, but their own nearby crowd, their own place in the
room, their own phone damage and their own clock. The phases below read top to bottom:

1. probe        - every input is audio we can read (one ``error:`` line otherwise);
2. coarse       - streamed low-rate envelopes (spectral flux in 8 bands at ~100 Hz) of every
                  recording; chunks of one cross-correlated against the whole of the other, over
                  every lag (recordings may start minutes apart); the chunks that agree on one
                  line give a coarse offset and drift per pair;
3. fine         - local offsets every few seconds by band-limited GCC-PHAT at the audio rate, with
                  sub-sample (parabolic) interpolation; a robust (Huber IRLS) line through them
                  gives offset and clock drift, refined to a continuous piecewise-linear map when
                  the residual says the drift is not constant;
4. selection    - the reference is the recording that matches most others (then the longest);
                  a recording that does not match it (another song, another show) is reported
                  and left out;
5. matching     - each recording's level and long-term spectrum is brought to the recordings'
                  median (measured on the very windows the fine stage reads), so that one phone's
                  colour does not dominate;
6. fusion       - every recording is streamed onto the reference's timeline (soxr resampling by
                  its drift ratio, an integer shift, the fractional rest and any piecewise residual
                  as a phase ramp per STFT frame); the stack goes through the engine's OverlapAdd;
                  per time-frequency cell, cells far from the median magnitude are rejected and
                  the rest combined (``FUSION_MODES``). Where only one recording covers the show
                  it is used alone; recordings fade in and out over ``ramp_s`` (no hard switches);
7. report       - offsets, drift in ppm, overlap, which recording was used where, rejections.

Memory stays bounded: the envelopes are 100 frames a second, the fine stage reads short windows
by seeking, and the fusion holds one OverlapAdd window of every recording. Audio never exists
whole in memory; the fused result is written block by block to a float32 file (see fuse_cli).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from scipy import fft as sp_fft

from resonate.audio.io import AudioInfo, probe, read_blocks
from resonate.chunking import OverlapAdd, reblock
from resonate.errors import ResonateError

FUSION_MODES = ("complex", "quiet", "magphase", "min")
ProgressFn = Callable[[str, float], None]


@dataclass(frozen=True)
class FuseConfig:
    mode: str = "complex"           # see FUSION_MODES and docs/fusion.md for the measured comparison
    # coarse alignment (envelopes)
    feature_rate: float = 100.0     # envelope frames per second
    bands: int = 8                  # log-spaced bands, 100 Hz .. 8 kHz
    envelope: str = "both"          # ENVELOPES: onsets (flux), energy contour, or both
    chunk_s: float = 20.0           # envelope chunks cross-correlated against the other recording
    min_chunk_s: float = 8.0
    max_chunks: int = 24
    min_prominence: float = 5.0     # a chunk's correlation peak, in robust standard deviations
    single_chunk_prominence: float = 10.0   # what one chunk alone needs (a recording shorter than two chunks)
    # fine alignment (GCC-PHAT)
    fine_window_s: float = 4.0
    fine_hop_s: float = 5.0         # raised for long overlaps so that at most max_windows are read
    max_windows: int = 360
    search_s: float = 0.05          # +- around the coarse prediction
    gcc_band_hz: tuple[float, float] = (150.0, 6000.0)
    gcc_beta: float = 0.8           # PHAT exponent: 1 whitens fully, <1 trusts strong bins a little more
    min_gcc_z: float = 3.0          # correlation peak in standard deviations below which a window says nothing
    min_inlier_fraction: float = 0.3
    piecewise_knot_s: float = 120.0
    max_residual_ms: float = 1.0    # a recording whose local offsets scatter more is left out
    # level / spectrum matching
    match_spectra: bool = True
    # Up to this many recordings, match the music each shares with the reference (music_colour),
    # not its total power: with two, a total-power median moves the better one halfway to the noisier.
    match_music_upto: int = 2
    eq_limit_db: float = 12.0
    # fusion
    n_fft_s: float = 0.046          # 2048 at 44.1 kHz
    outlier_db: float = 6.0         # two recordings: a cell this far from the lower (quieter) one is left out
    outlier_db_many: float = 3.0    # quiet, three or more recordings: a cell this far above the quietest one is left out
    inaudible_db: float = 6.0       # a recording this far below the median spectrum in a bin, matched, is left out there
    ramp_s: float = 2.0
    window_s: float = 8.0           # OverlapAdd window and overlap
    overlap_s: float = 1.0
    block_frames: int = 1 << 15

    def __post_init__(self):
        if self.mode not in FUSION_MODES:
            raise ResonateError(f"unknown fusion mode '{self.mode}' (choose {', '.join(FUSION_MODES)})")


# ---------------------------------------------------------------------------------------------
# Time maps: recording time as a function of reference time


@dataclass
class TimeMap:
    """rec_time(t) = t + offset + drift * t + residual(t), all in seconds (t: reference time)."""

    offset: float
    drift: float
    knots: np.ndarray | None = None      # piecewise part: residual over the line at these times
    residual: np.ndarray | None = None

    def __call__(self, t: np.ndarray | float) -> np.ndarray | float:
        t = np.asarray(t, dtype=np.float64)
        y = t + self.offset + self.drift * t
        if self.knots is not None:
            y = y + np.interp(t, self.knots, self.residual)
        return y

    def extra(self, t: np.ndarray) -> np.ndarray:
        """The piecewise residual over the line (0 for a linear map)."""
        if self.knots is None:
            return np.zeros_like(np.asarray(t, dtype=np.float64))
        return np.interp(t, self.knots, self.residual)

    def inverse_linear(self) -> TimeMap:
        """The map the other way round (linear part only): t = (r - offset) / (1 + drift)."""
        k = 1.0 + self.drift
        return TimeMap(-self.offset / k, 1.0 / k - 1.0)


@dataclass
class Recording:
    index: int
    path: Path
    info: AudioInfo
    features: np.ndarray | None = None   # (frames, bands) float32 envelope flux, z-scored
    feature_hop: float = 0.0             # envelope hop in seconds (exact)
    feature_centre: float = 0.0          # time of frame 0's centre, seconds
    coarse: TimeMap | None = None        # to the reference
    fine: TimeMap | None = None
    fine_points: list[tuple[float, float, float, bool]] = field(default_factory=list)
    fine_scale_ms: float | None = None
    used: bool = False
    reason: str | None = None
    gain: np.ndarray | None = None       # (n_fft // 2 + 1,) amplitude gains to the median spectrum
    psd: np.ndarray | None = None        # long-term power over the fine windows (this recording)
    psd_ref: np.ndarray | None = None    # ... and the reference's over the same windows
    window_spectra: np.ndarray | None = None   # (windows, 3, n_fft // 2 + 1): reference, its power, |cross|
    level_db: float = 0.0
    audible: np.ndarray | None = None    # (n_fft // 2 + 1,) bool: bins where it carries the music (see spectrum_matching)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def seconds(self) -> float:
        return self.info.seconds


# ---------------------------------------------------------------------------------------------
# 1. probe


def probe_all(paths: Iterable[str | Path]) -> list[Recording]:
    recs = [Recording(i, Path(p), probe(p)) for i, p in enumerate(paths)]
    if len(recs) < 2:
        raise ResonateError("fuse needs at least two recordings of the same show")
    return recs


# ---------------------------------------------------------------------------------------------
# 2. coarse alignment: low-rate envelopes, computed streaming, cross-correlated


def _pow2(x: float) -> int:
    return 1 << max(4, int(round(math.log2(max(16.0, x)))))


def envelope_features(rec: Recording, cfg: FuseConfig, block_frames: int = 1 << 16,
                      on_block: Callable[[float], None] | None = None) -> None:
    """Spectral flux in ``cfg.bands`` log-spaced bands at ``cfg.feature_rate`` frames a second.

    Streams the file; keeps only the (frames, bands) float32 result. ``on_block`` is told the
    seconds of the file read so far, after every block.
    """
    sr = rec.info.sample_rate
    n = _pow2(0.046 * sr)
    hop = sr / cfg.feature_rate
    window = np.hanning(n).astype(np.float32)
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    edges_hz = np.geomspace(100.0, min(8000.0, 0.45 * sr), cfg.bands + 1)
    edges = np.searchsorted(freqs, edges_hz)
    edges = np.maximum.accumulate(np.maximum(edges, np.arange(len(edges)) + 1))
    eps = 1e-10 * n
    out: list[np.ndarray] = []
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0
    frame = 0
    for block in read_blocks(rec.path, block_frames):
        buf = np.concatenate([buf, block.mean(axis=0)])
        buf_end = buf_start + len(buf)
        if on_block:
            on_block(buf_end / sr)
        last = int((buf_end - n) // hop)   # the last frame whose end is in the buffer
        while last >= frame and int(round(last * hop)) + n > buf_end:
            last -= 1
        if last >= frame:
            idx = np.round(np.arange(frame, last + 1) * hop).astype(np.int64) - buf_start
            frames = buf[idx[:, None] + np.arange(n)] * window
            power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
            energy = np.add.reduceat(power[:, edges[0]: edges[-1]], edges[:-1] - edges[0], axis=-1)
            out.append(np.log(energy + eps).astype(np.float32))
            frame = last + 1
        keep_from = int(round(frame * hop)) - buf_start
        buf = buf[keep_from:]
        buf_start += keep_from
    logs = np.concatenate(out) if out else np.zeros((1, cfg.bands), np.float32)
    rec.features = ENVELOPES[cfg.envelope](logs, cfg.feature_rate)
    rec.feature_hop = hop / sr
    rec.feature_centre = n / 2 / sr


def _zscore(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    return (x / (x.std(axis=0) + 1e-6)).astype(np.float32)


def _flux(logs: np.ndarray, rate: float) -> np.ndarray:
    """Rectified rise of each band's log energy (onsets)."""
    return _zscore(np.maximum(np.diff(logs, axis=0, prepend=logs[:1]), 0.0))


def _contour(logs: np.ndarray, rate: float) -> np.ndarray:
    """Each band's log energy less its 1-s moving average (how the music swells and falls)."""
    k = max(1, int(rate))
    cum = np.cumsum(np.pad(logs.astype(np.float64), ((k // 2, k - k // 2), (0, 0)), mode="edge"), axis=0)
    mean = (cum[k:] - cum[:-k]) / k
    return _zscore(logs - mean[: len(logs)])


def _both(logs: np.ndarray, rate: float) -> np.ndarray:
    return np.concatenate([_flux(logs, rate), _contour(logs, rate)], axis=1) / np.sqrt(2)


ENVELOPES = {"flux": _flux, "contour": _contour, "both": _both}


@dataclass
class CoarseMatch:
    """``b``'s time as a function of ``a``'s, from the chunks that agree."""

    a: int
    b: int
    map: TimeMap | None        # rec_b_time(a_time); None: no match
    chunks: int
    agreeing: int
    prominence: float          # best chunk's peak in robust standard deviations


def _chunk_lags(fa: np.ndarray, fb: np.ndarray, chunk: int, starts: list[int]) -> list[tuple[int, float, float]]:
    """For each chunk fb[s:s+chunk]: (s, where it starts in fa in frames (sub-frame), prominence) of its best match,
    over every lag at which at least half of the chunk overlaps fa (normalised cross-correlation)."""
    la, bands = fa.shape
    size = sp_fft.next_fast_len(la + chunk, real=True)
    fa_spec = sp_fft.rfft(fa, size, axis=0)            # (size//2+1, bands) complex64 from float32
    cum_a = np.concatenate([[0.0], np.cumsum(np.sum(fa.astype(np.float64) ** 2, axis=1))])
    results = []
    lags = np.arange(-chunk // 2, la - chunk // 2 + 1)
    for s in starts:
        c = fb[s: s + chunk]
        lc = c.shape[0]
        spec = sp_fft.rfft(c, size, axis=0)
        corr = sp_fft.irfft(np.sum(fa_spec * np.conj(spec), axis=1), size)   # corr[L] = sum c[t] fa[t+L]
        vals = corr[lags % size]
        cum_c = np.concatenate([[0.0], np.cumsum(np.sum(c.astype(np.float64) ** 2, axis=1))])
        lo = np.maximum(0, -lags)
        hi = np.minimum(lc, la - lags)
        ok = hi - lo >= max(1, lc // 2)
        if not ok.any():
            continue
        ea = cum_a[np.clip(lags + hi, 0, la)] - cum_a[np.clip(lags + lo, 0, la)]
        ec = cum_c[np.clip(hi, 0, lc)] - cum_c[np.clip(lo, 0, lc)]
        ncc = np.where(ok, vals / np.sqrt(np.maximum(ea * ec, 1e-12)), 0.0)
        valid = ncc[ok]
        med = float(np.median(valid))
        spread = 1.4826 * float(np.median(np.abs(valid - med))) + 1e-9
        i = int(np.argmax(ncc))
        lag = float(lags[i])
        if 0 < i < len(ncc) - 1 and ok[i - 1] and ok[i + 1]:
            y0, y1, y2 = ncc[i - 1], ncc[i], ncc[i + 1]
            den = y0 - 2 * y1 + y2
            if den < 0:
                lag += float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
        results.append((s, lag, (float(ncc[i]) - med) / spread))
    return results


def coarse_match(a: Recording, b: Recording, cfg: FuseConfig) -> CoarseMatch:
    """Chunks of ``b``'s envelope against the whole of ``a``'s; two or more chunks that agree on one
    line (within 30 ms plus 500 ppm of drift) give b's time as a function of a's."""
    fa, fb = a.features, b.features
    hop = a.feature_hop
    # Two chunks that do not overlap must fit in b: shorter chunks for a short recording, down to
    # min_chunk_s; below that, b is one chunk and needs a stronger peak on its own.
    chunk = min(int(cfg.chunk_s / b.feature_hop), len(fb) // 2)
    if chunk < cfg.min_chunk_s / b.feature_hop:
        chunk = len(fb)
    # Chunks overlap by half; only chunks that do not overlap count as two witnesses (overlapping
    # ones share their frames, and with them any wrong peak).
    n_chunks = 1 if chunk >= len(fb) else min(cfg.max_chunks, max(3, math.ceil(2 * len(fb) / chunk)))
    starts = sorted({int(round(s)) for s in np.linspace(0, len(fb) - chunk, n_chunks)})
    found = _chunk_lags(fa, fb, chunk, starts)
    best = max((p for _, _, p in found), default=0.0)
    cand = [(s, lag, p) for s, lag, p in found if p >= cfg.min_prominence]
    # Points: b time of the chunk's centre, a time of where it matched.
    pts = [((s + chunk / 2) * b.feature_hop + b.feature_centre, (lag + chunk / 2) * hop + a.feature_centre, p)
           for s, lag, p in cand]
    agree: list[int] = []
    for tb_i, ta_i, _ in pts:
        group = [j for j, (tb_j, ta_j, _) in enumerate(pts)
                 if abs((tb_j - ta_j) - (tb_i - ta_i)) <= 0.03 + 5e-4 * abs(ta_j - ta_i)]
        if len(group) > len(agree) or (len(group) == len(agree) and group and
                                       sum(pts[j][2] for j in group) > sum(pts[j][2] for j in agree)):
            agree = group
    starts_agreeing = [cand[j][0] for j in agree]
    independent = bool(agree) and max(starts_agreeing) - min(starts_agreeing) >= chunk
    enough = (independent or
              (len(starts) == 1 and len(agree) == 1 and pts[agree[0]][2] >= cfg.single_chunk_prominence))
    if not enough:
        return CoarseMatch(a.index, b.index, None, len(starts), len(agree), best)
    ta = np.array([pts[j][1] for j in agree])
    off = np.array([pts[j][0] - pts[j][1] for j in agree])     # b time - a time
    if len(agree) >= 2 and np.ptp(ta) > 1.0:
        drift, offset = np.polyfit(ta, off, 1)
        drift = float(np.clip(drift, -2e-3, 2e-3))
        offset = float(np.median(off - drift * ta))
    else:
        drift, offset = 0.0, float(np.median(off))
    return CoarseMatch(a.index, b.index, TimeMap(offset, drift), len(starts), len(agree), best)


def coarse_alignment(recs: list[Recording], cfg: FuseConfig) -> dict[tuple[int, int], CoarseMatch]:
    """Every pair, the longer recording as the anchor; both directions in the result."""
    matches: dict[tuple[int, int], CoarseMatch] = {}
    for i in range(len(recs)):
        for j in range(i + 1, len(recs)):
            a, b = (recs[i], recs[j]) if recs[i].seconds >= recs[j].seconds else (recs[j], recs[i])
            m = coarse_match(a, b, cfg)
            matches[(a.index, b.index)] = m
            back = m.map.inverse_linear() if m.map is not None else None
            matches[(b.index, a.index)] = CoarseMatch(b.index, a.index, back, m.chunks, m.agreeing, m.prominence)
    return matches


# ---------------------------------------------------------------------------------------------
# 4. selection (before the fine stage, which needs the reference)


def select_reference(recs: list[Recording], matches: dict[tuple[int, int], CoarseMatch]) -> Recording:
    """The recording that matches most others, then the longest. The others that do not match it
    are marked unused, with the reason."""
    def degree(r: Recording) -> int:
        return sum(1 for o in recs if o is not r and matches[(r.index, o.index)].map is not None)

    ref = max(recs, key=lambda r: (degree(r), r.seconds))
    if degree(ref) == 0:
        detail = ", ".join(f"{recs[a].name} vs {recs[b].name}: best peak {m.prominence:.1f} sd"
                           for (a, b), m in matches.items() if a < b)
        raise ResonateError("the recordings do not match each other (not the same music, or no common "
                            f"stretch of at least {FuseConfig.min_chunk_s:g} s): {detail}")
    ref.used = True
    ref.coarse = ref.fine = TimeMap(0.0, 0.0)
    for r in recs:
        if r is ref:
            continue
        m = matches[(ref.index, r.index)]
        if m.map is None:
            others = [o.name for o in recs if o is not r and matches[(r.index, o.index)].map is not None]
            r.reason = (f"does not match {ref.name} (best correlation peak {m.prominence:.1f} sd, "
                        f"{m.agreeing} of {m.chunks} chunks agree)"
                        + (f"; it matches only {', '.join(others)}" if others else "; another song or show?"))
        else:
            r.coarse = m.map
            r.used = True
    return ref


# ---------------------------------------------------------------------------------------------
# 3. fine offsets and drift


def _read_mono(f: sf.SoundFile, start: int, n: int) -> np.ndarray:
    """n frames from ``start`` (may be negative or past the end: zeros there), mixed to mono."""
    out = np.zeros(n, dtype=np.float32)
    lo, hi = max(0, start), min(f.frames, start + n)
    if hi > lo:
        f.seek(lo)
        data = f.read(hi - lo, dtype="float32", always_2d=True)
        out[lo - start: lo - start + data.shape[0]] = data.mean(axis=1)
    return out


def gcc_phat(a: np.ndarray, b: np.ndarray, sr: float, band: tuple[float, float], beta: float = 1.0) -> tuple[float, float]:
    """Lag L (samples, sub-sample) maximising the band-limited generalised cross-correlation with
    PHAT weighting |cross-spectrum|^-beta of sum a[t] b[t+L], 0 <= L <= len(b) - len(a), and the
    peak's height in standard deviations of the correlation."""
    size = sp_fft.next_fast_len(len(a) + len(b), real=True)
    taper = np.hanning(len(a)).astype(np.float32)
    spec = sp_fft.rfft(b, size) * np.conj(sp_fft.rfft(a * taper, size))
    freqs = np.arange(len(spec)) * (sr / size)
    inband = (freqs >= band[0]) & (freqs <= min(band[1], 0.45 * sr))
    spec = np.where(inband, spec / (np.abs(spec) ** beta + 1e-20), 0.0)
    full = sp_fft.irfft(spec, size)
    corr = full[: len(b) - len(a) + 1]
    i = int(np.argmax(corr))
    lag = float(i)
    if 0 < i < len(corr) - 1:
        y0, y1, y2 = corr[i - 1], corr[i], corr[i + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            lag += float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
    # Against the spread of the whole correlation (every lag), so that z does not depend on the
    # search range.
    return lag, float(corr[i] / (np.std(full) + 1e-20))


def _welch_pair(a: np.ndarray, b: np.ndarray, n_fft: int, delay: float) -> np.ndarray:
    """(3, n_fft // 2 + 1): power of ``a``, of ``b`` and the magnitude of their cross-spectrum, each
    smoothed over a third of an octave; ``b`` advanced by ``delay`` samples (|delay| < 1) first."""
    hop = n_fft // 2
    win = np.hanning(n_fft)
    fa = np.fft.rfft(np.lib.stride_tricks.sliding_window_view(a, n_fft)[::hop] * win, axis=-1)
    fb = np.fft.rfft(np.lib.stride_tricks.sliding_window_view(b, n_fft)[::hop] * win, axis=-1)
    fb *= np.exp(2j * np.pi * np.arange(fb.shape[-1]) * delay / n_fft)
    return np.stack([_smooth_octave(np.mean(np.abs(fa) ** 2, axis=0)), _smooth_octave(np.mean(np.abs(fb) ** 2, axis=0)),
                     _smooth_octave(np.abs(np.mean(fa * np.conj(fb), axis=0)))])


def _welch(x: np.ndarray, n_fft: int) -> np.ndarray:
    hop = n_fft // 2
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return np.mean(np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2, axis=0)


def huber_line(t: np.ndarray, y: np.ndarray, w: np.ndarray, basis=None, iters: int = 30) -> tuple[np.ndarray, np.ndarray, float]:
    """Robust weighted least squares (Huber IRLS). Returns coefficients, residuals, robust scale."""
    x = np.stack([np.ones_like(t), t], axis=1) if basis is None else basis
    coef = np.zeros(x.shape[1])
    hw = np.ones_like(y)
    scale = 1.0
    for _ in range(iters):
        ww = np.sqrt(w * hw)
        coef = np.linalg.lstsq(x * ww[:, None], y * ww, rcond=None)[0]
        res = y - x @ coef
        scale = max(1.4826 * float(np.median(np.abs(res - np.median(res)))), 1e-6)
        k = 1.345 * scale
        new = np.where(np.abs(res) <= k, 1.0, k / np.maximum(np.abs(res), 1e-12))
        if np.allclose(new, hw, atol=1e-4):
            break
        hw = new
    return coef, y - x @ coef, scale


def _hat_basis(t: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Continuous piecewise-linear basis (hat functions) on ``knots``."""
    eye = np.eye(len(knots))
    return np.stack([np.interp(t, knots, eye[k]) for k in range(len(knots))], axis=1)


def fit_time_map(t: np.ndarray, off: np.ndarray, q: np.ndarray, cfg: FuseConfig) -> tuple[TimeMap, np.ndarray, float, bool]:
    """Offset (rec - ref time) against ref time: a Huber line, or a continuous piecewise-linear fit
    when that cuts the robust scale of the residual by 40 % or more. Returns the map, the inlier
    mask, the residual scale (s) and whether the piecewise fit was kept."""
    coef, res, scale = huber_line(t, off, q)
    line = TimeMap(float(coef[0]), float(coef[1]))
    tol = max(4 * scale, 2.5e-4)
    inliers = np.abs(res) <= tol
    span = float(t.max() - t.min()) if len(t) else 0.0
    n_knots = int(min(span / cfg.piecewise_knot_s, len(t) / 6)) + 1
    if n_knots >= 3 and scale > 1e-4 and inliers.sum() >= 12:
        knots = np.linspace(t.min(), t.max(), n_knots)
        ti, oi, qi = t[inliers], off[inliers], q[inliers]
        pc, _, pscale = huber_line(ti, oi, qi, basis=_hat_basis(ti, knots))
        if pscale < 0.6 * scale:
            line_at = line.offset + line.drift * knots
            pw = TimeMap(line.offset, line.drift, knots, pc - line_at)
            res = off - (pw(t) - t)
            inliers = np.abs(res) <= max(4 * pscale, 2.5e-4)
            return pw, inliers, pscale, True
    return line, inliers, scale, False


def _local_offsets(ref: Recording, rec: Recording, cm: TimeMap, centres: np.ndarray, search_s: float,
                   cfg: FuseConfig, n_fft: int, on_window: Callable[[int], None] | None = None) -> tuple[list[tuple[float, float, float]], np.ndarray, np.ndarray]:
    """GCC-PHAT offset (rec - ref time) at each window centre, the recording's windows resampled onto
    the reference's clock by ``cm``'s drift (without that, 300 ppm smear a 4-s window by 1.2 ms and
    PHAT loses everything above a few hundred Hz). Also both long-term spectra over those windows."""
    sr, rsr = ref.info.sample_rate, rec.info.sample_rate
    win = cfg.fine_window_s
    wn = int(round(win * sr))
    search = max(2, int(round(search_s * sr)))
    k = 1.0 + cm.drift
    points = []
    psd = np.zeros(n_fft // 2 + 1)
    psd_ref = np.zeros(n_fft // 2 + 1)
    spectra: list[np.ndarray] = []
    with sf.SoundFile(str(ref.path)) as fa, sf.SoundFile(str(rec.path)) as fb:
        for i, tc in enumerate(centres):
            if on_window:
                on_window(i)
            tc = round(tc * sr) / sr                        # on the reference's sample grid
            a = _read_mono(fa, int(round(tc * sr)) - wn // 2, wn)
            if not np.any(a):
                continue
            pred = float(cm(tc))                            # rec time of the window's centre
            n_b = int(math.ceil((win + 2 * search_s) * k * rsr)) + 64
            start = int(round(pred * rsr)) - n_b // 2
            raw = _read_mono(fb, start, n_b)
            b = raw if (rsr == sr and cm.drift == 0.0) else \
                soxr.resample(raw, rsr, sr / k, quality="HQ").astype(np.float32)
            extra = (len(b) - wn) // 2 - search             # output samples to drop at the start
            b = b[extra: extra + wn + 2 * search]
            b_start = start / rsr + extra * k / sr          # rec time of b[0]; b's samples are k / sr apart
            if len(b) < wn + 1 or not np.any(b):
                continue
            lag, z = gcc_phat(a, b, sr, cfg.gcc_band_hz, cfg.gcc_beta)
            rec_t = b_start + (lag + wn // 2) * k / sr      # where the ref window's centre is in rec
            points.append((float(tc), rec_t - tc, z))
            if z >= cfg.min_gcc_z:
                i = int(round(lag))
                psd += _welch(b[i: i + wn], n_fft)
                psd_ref += _welch(a, n_fft)
                if len(b) >= i + wn + 1:
                    spectra.append(_welch_pair(a, b[i: i + wn], n_fft, lag - i).astype(np.float32))
    rec.window_spectra = np.stack(spectra) if spectra else None
    return points, psd, psd_ref


def fine_alignment(ref: Recording, rec: Recording, cfg: FuseConfig, n_fft: int,
                   on_progress: Callable[[float], None] | None = None) -> None:
    """Local offsets of ``rec`` against ``ref`` every few seconds, twice: around the coarse map
    (+- search_s), then around the first fit (+- four times its residual, at least 1 ms), where
    few wrong peaks are left to pick. The robust fit of the second pass is ``rec.fine``.
    ``on_progress`` is told the fraction of the windows of both passes read so far."""
    cm = rec.coarse
    t0 = max(0.0, -cm.offset / (1 + cm.drift))
    t1 = min(ref.seconds, (rec.seconds - cm.offset) / (1 + cm.drift))
    margin = cfg.fine_window_s / 2 + cfg.search_s
    lo, hi = t0 + margin, t1 - margin
    if hi - lo < 0:
        lo = hi = 0.5 * (t0 + t1)
    n_win = int(np.clip((hi - lo) / cfg.fine_hop_s + 1, min(24, cfg.max_windows), cfg.max_windows))
    centres = np.linspace(lo, hi, n_win) if hi > lo else np.array([lo])
    search = cfg.search_s
    for attempt in range(2):
        def on_window(i: int, attempt: int = attempt) -> None:
            if on_progress:
                on_progress((attempt * len(centres) + i) / (2 * len(centres)))

        points, rec.psd, rec.psd_ref = _local_offsets(ref, rec, cm, centres, search, cfg, n_fft, on_window)
        good = [p for p in points if p[2] >= cfg.min_gcc_z]
        if len(good) < 3:
            rec.used = False
            rec.reason = (f"no fine alignment with {ref.name}: {len(good)} of {len(points)} windows correlate "
                          "(too little common music?)")
            rec.fine_points = [(t, o, q, False) for t, o, q in points]
            return
        t = np.array([p[0] for p in good])
        off = np.array([p[1] for p in good])
        q = np.array([p[2] for p in good])
        tmap, inliers, scale, _ = fit_time_map(t, off, q, cfg)
        if attempt == 0:
            cm = tmap
            search = float(np.clip(4 * scale + 5e-4, 1e-3, cfg.search_s))
    rec.fine_points = [(float(a), float(b), float(c), bool(d)) for a, b, c, d in zip(t, off, q, inliers)]
    rec.fine_scale_ms = scale * 1e3
    frac = inliers.sum() / max(1, len(points))
    if scale * 1e3 > cfg.max_residual_ms:
        rec.used = False
        rec.reason = (f"local offsets against {ref.name} scatter by {scale * 1e3:.1f} ms (robust deviation; "
                      f"at most {cfg.max_residual_ms:g} ms is fused): too little common sound to align it finely")
        return
    if inliers.sum() < 3 or frac < cfg.min_inlier_fraction:
        rec.used = False
        rec.reason = (f"local offsets against {ref.name} do not line up: {int(inliers.sum())} of {len(points)} "
                      "windows agree (another song, or a different edit?)")
        return
    rec.fine = tmap


# ---------------------------------------------------------------------------------------------
# 5. level and long-term spectrum matching


def _smooth_octave(x: np.ndarray, fraction: float = 1 / 3) -> np.ndarray:
    """Moving average over +-fraction/2 octave around each bin (bin 0 alone)."""
    k = np.arange(len(x), dtype=np.float64)
    lo = np.clip(np.floor(k * 2 ** (-fraction / 2)), 0, len(x) - 1).astype(int)
    hi = np.clip(np.ceil(k * 2 ** (fraction / 2)), 0, len(x) - 1).astype(int)
    cum = np.concatenate([[0.0], np.cumsum(x)])
    return (cum[hi + 1] - cum[lo]) / (hi + 1 - lo)


def music_colour(spectra: np.ndarray, q: float = 0.1) -> np.ndarray:
    """Log power ratio per bin of the music in a recording to the music in the reference, from
    per-window spectra (P_ref, P_rec, |C|) of the fine stage: with independent noises,
    |C| = sqrt(a) S_ref for a music ratio a, so |C| / P_ref <= sqrt(a) <= P_rec / |C| in every window,
    tight in the windows where the reference, or the recording, is least disturbed (the crowd comes
    and goes). The geometric mean of the two bounds (taken at quantiles q and 1 - q, not at the
    extremes, against estimation noise). A total-power ratio would count a recording's own crowd
    as louder music, and matching would then turn its music down."""
    floor = 1e-12 * float(spectra.max()) + 1e-30
    p_ref, p_rec, cross = spectra[:, 0] + floor, spectra[:, 1] + floor, spectra[:, 2] + floor
    lower = np.quantile(cross / p_ref, 1 - q, axis=0)
    upper = np.quantile(p_rec / cross, q, axis=0)
    return np.log(lower) + np.log(upper)


def spectrum_matching(ref: Recording, used: list[Recording], cfg: FuseConfig, n_fft: int) -> None:
    """Per recording, the amplitude gain per bin that brings its long-term spectrum (and so its level)
    to the median of all: colour relative to the reference over the windows both cover, median
    over recordings, smoothed over a third of an octave, limited to +-eq_limit_db."""
    colours = {ref.index: np.zeros(n_fft // 2 + 1)}
    for r in used:
        if r is ref or r.psd is None or not r.psd.any():
            continue
        if len(used) <= cfg.match_music_upto and r.window_spectra is not None and len(r.window_spectra) >= 8:
            colours[r.index] = music_colour(r.window_spectra)
            continue
        floor = 1e-12 * max(r.psd.max(), r.psd_ref.max(), 1e-30)
        colours[r.index] = np.log(_smooth_octave(r.psd) + floor) - np.log(_smooth_octave(r.psd_ref) + floor)
    median = np.median(np.stack(list(colours.values())), axis=0)
    limit = cfg.eq_limit_db / 20 * np.log(10)
    for r in used:
        c = colours.get(r.index, np.zeros_like(median))
        g = np.clip(0.5 * (median - c), -limit, limit) if cfg.match_spectra else np.zeros_like(c)
        r.gain = np.exp(g).astype(np.float32)
        # Bins where, even matched, it stays far below the others (above its phone's band limit):
        # it has nothing to say there and must not pass for the quietest recording.
        r.audible = (c + 2 * g - median) * (10 / np.log(10)) > -cfg.inaudible_db
        r.level_db = float(20 / np.log(10) * np.mean(g[1:]))


# ---------------------------------------------------------------------------------------------
# 6. streamed fusion


@dataclass
class Placement:
    """Where a recording lies on the output timeline (samples at the output rate)."""

    rec: Recording
    ratio: float          # recording samples per output sample
    start_read: int       # first recording frame read
    lead: int             # output samples of silence before it
    frac: float           # recording samples still to advance (sub-sample part)
    end: int              # output sample where it ends (exclusive)


def plan_timeline(ref: Recording, used: list[Recording]) -> tuple[int, int, list[Placement]]:
    """Output timeline (in reference samples): from the earliest start to the latest end of the
    used recordings. Returns (first reference sample, length, placements)."""
    sr = ref.info.sample_rate
    starts, ends = [], []
    for r in used:
        m = r.fine
        k = 1.0 + m.drift
        starts.append(-m.offset / k)
        ends.append((r.seconds - m.offset) / k)
    n_start = int(math.floor(min(starts) * sr))
    n_end = int(math.ceil(max(ends) * sr))
    total = n_end - n_start
    placements = []
    for r in used:
        m = r.fine
        rsr = r.info.sample_rate
        ratio = rsr * (1.0 + m.drift) / sr
        p0 = rsr * (m.offset + (1.0 + m.drift) * n_start / sr)
        lead = max(0, int(math.ceil(-p0 / ratio - 1e-9)))
        pos = p0 + lead * ratio
        start_read = int(math.floor(pos))
        frac = pos - start_read
        end = min(total, lead + int(math.floor((r.info.frames - pos) / ratio)))
        placements.append(Placement(r, ratio, start_read, lead, frac, end))
    return n_start, total, placements


def _aligned_audio(pl: Placement, total: int, channels: int, out_rate: int, block: int) -> Iterator[np.ndarray]:
    """The recording on the output timeline: silence, its audio resampled by its drift ratio, silence;
    exactly ``total`` samples of ``channels`` channels (mono repeated)."""
    rsr = pl.rec.info.sample_rate

    def source() -> Iterator[np.ndarray]:
        if pl.lead:
            yield from _zeros(pl.lead, channels, block)
        n_audio = max(0, pl.end - pl.lead)
        in_rate = rsr * (1.0 + pl.rec.fine.drift)
        rs = None if abs(in_rate - out_rate) < 1e-9 else soxr.ResampleStream(
            in_rate, out_rate, pl.rec.info.channels, dtype="float32", quality="VHQ")
        done = 0
        for b in read_blocks(pl.rec.path, block, start=pl.start_read):
            y = b if rs is None else np.ascontiguousarray(rs.resample_chunk(np.ascontiguousarray(b.T), last=False).T)
            if y.shape[-1]:
                y = y[:, : n_audio - done]
                done += y.shape[-1]
                yield np.broadcast_to(y, (channels, y.shape[-1])) if y.shape[0] == 1 else y
            if done >= n_audio:
                break
        if rs is not None and done < n_audio:
            y = np.ascontiguousarray(rs.resample_chunk(np.zeros((0, pl.rec.info.channels), np.float32), last=True).T)
            y = y[:, : n_audio - done]
            done += y.shape[-1]
            if y.shape[-1]:
                yield np.broadcast_to(y, (channels, y.shape[-1])) if y.shape[0] == 1 else y
        yield from _zeros(total - pl.lead - done, channels, block)

    return reblock(source(), block)


def _zeros(n: int, channels: int, block: int) -> Iterator[np.ndarray]:
    for s in range(0, max(0, n), block):
        yield np.zeros((channels, min(block, n - s)), np.float32)


def _weights(pl: Placement, lo: int, hi: int, total: int, ramp: int) -> np.ndarray:
    """Per-sample weight of a recording on [lo, hi): 1 inside its span, ramped over ``ramp`` at a
    start or end inside the timeline (where another recording takes over), 0 outside."""
    n = np.arange(lo, hi, dtype=np.float64)
    w = ((n >= pl.lead) & (n < pl.end)).astype(np.float64)
    if pl.lead > 0:
        w *= np.clip((n - pl.lead + 0.5) / ramp, 0.0, 1.0)
    if pl.end < total:
        w *= np.clip((pl.end - n - 0.5) / ramp, 0.0, 1.0)
    return w


class CellFusion:
    """The per-window function for OverlapAdd: STFT of every recording in the stack, matched
    spectra, fractional alignment, per-cell outlier rejection and combination, inverse STFT.

    Input (R, C + 2, W): per recording its C channels, its weight row, its advance row (output
    samples to shift it earlier by, for the sub-sample and piecewise parts of its time map).
    """

    def __init__(self, gains: list[np.ndarray], channels: int, n_fft: int, cfg: FuseConfig,
                 audible: list[np.ndarray | None] | None = None):
        self.gains = gains
        bins = n_fft // 2 + 1
        self.audible = [np.ones(bins, bool) if a is None else a for a in (audible or [None] * len(gains))]
        self.c = channels
        self.n = n_fft
        self.hop = n_fft // 4
        self.cfg = cfg
        self.win = np.hanning(n_fft + 1)[:-1].astype(np.float32)
        self.k = np.arange(n_fft // 2 + 1, dtype=np.float64)
        self.kept = np.zeros(len(gains))        # cells kept, per recording
        self.present = np.zeros(len(gains))     # cells where the recording was there

    def _stft(self, x: np.ndarray) -> np.ndarray:
        pad = self.n // 2
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad + self.hop)])
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n, axis=-1)[..., :: self.hop, :]
        return sp_fft.rfft(frames * self.win, axis=-1, workers=-1)      # (..., T, F)

    def _istft(self, spec: np.ndarray, length: int) -> np.ndarray:
        frames = sp_fft.irfft(spec, self.n, axis=-1, workers=-1).astype(np.float32) * self.win
        t = frames.shape[-2]
        total = (t - 1) * self.hop + self.n
        out = np.zeros(frames.shape[:-2] + (total,), np.float32)
        norm = np.zeros(total, np.float32)
        w2 = self.win ** 2
        for i in range(t):
            s = i * self.hop
            out[..., s: s + self.n] += frames[..., i, :]
            norm[s: s + self.n] += w2
        pad = self.n // 2
        return out[..., pad: pad + length] / np.maximum(norm[pad: pad + length], 1e-6)

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        c, length = self.c, stack.shape[-1]
        weights = stack[:, c]
        here = [r for r in range(stack.shape[0]) if weights[r].max() > 1e-6]
        if not here:
            return np.zeros((c, length), np.float32)
        spec = self._stft(stack[here, :c])                             # (P, C, T, F)
        t_frames = spec.shape[-2]
        centres = np.clip(np.arange(t_frames) * self.hop, 0, length - 1)
        w = weights[here][:, centres]                                  # (P, T)
        advance = stack[here, c + 1][:, centres].astype(np.float64)    # (P, T)
        phase = np.exp(2j * np.pi * advance[:, :, None] * self.k[None, None, :] / self.n).astype(np.complex64)
        gains = np.stack([self.gains[r] for r in here])                # (P, F)
        spec *= (phase * gains[:, None, :])[:, None]
        full = w >= 1.0 - 1e-6
        ramping = (w > 1e-6) & ~full
        self._here_audible = np.stack([self.audible[r] for r in here])[:, None, None, :]     # (P, 1, 1, F)
        if not ramping.any():
            out = self._fuse(spec, full, here)
        else:
            # A recording fading in or out: crossfade between the fusion with it and without it,
            # so that its cells never switch the decisions of the others abruptly.
            with_it = self._fuse(spec, full | ramping, here)
            without = self._fuse(spec, full, None)
            lam = np.max(np.where(ramping, w, 0.0), axis=0).astype(np.float32)[None, :, None]
            out = lam * with_it + (1 - lam) * without
        return self._istft(out, length)

    def _fuse(self, spec: np.ndarray, present: np.ndarray, here: list[int] | None) -> np.ndarray:
        """spec (P, C, T, F), present (P, T) -> (C, T, F)."""
        cfg = self.cfg
        pres = present[:, None, :, None]                               # (P, 1, T, 1)
        count = present.sum(axis=0)                                    # (T,)
        if not count.any():
            return np.zeros(spec.shape[1:], np.complex64)
        mag = np.abs(spec)
        if cfg.mode == "min":
            masked = np.where(pres, mag, np.inf)
            pick = np.argmin(masked, axis=0)[None]
            out = np.take_along_axis(spec, pick, axis=0)[0]
            self._count(here, present, pick[0][None] == np.arange(spec.shape[0])[:, None, None, None])
            return np.where(count[None, :, None] > 0, out, 0)
        # The lower median of the recordings present (the smaller one of two).
        masked = np.where(pres, mag, np.inf)
        order = np.argsort(masked, axis=0)
        mid = np.clip((count - 1) // 2, 0, None)[None, None, :, None]
        med_idx = np.take_along_axis(order, np.broadcast_to(mid, (1,) + order.shape[1:]), axis=0)
        med = np.take_along_axis(mag, med_idx, axis=0)                # (1, C, T, F)
        ratio_db = 20 * np.log10((mag + 1e-12) / (med + 1e-12))
        keep = pres & (np.abs(ratio_db) <= cfg.outlier_db)
        if cfg.mode == "quiet":
            # Three or more recordings: only those within outlier_db_many of the quietest. Whatever
            # a phone hears on top of the music (its crowd, its own late reverberation) only adds
            # energy, so the quietest cells are the least disturbed; on the realistic bench shows,
            # averaging the few that agree with it beat both the median rule and the quietest alone,
            # on the tests' synthetic show it lost to the median rule (docs/fusion.md).
            # Recordings silent in a bin (above their phone's band limit) are no witnesses there.
            # Decided per cell over all channels together: a mono phone is not "quieter" on the side
            # a sound was panned to.
            heard = pres & self._here_audible
            joint = np.sqrt(np.sum(mag ** 2, axis=1, keepdims=True))                 # (P, 1, T, F)
            quietest = np.min(np.where(heard, joint, np.inf), axis=0, keepdims=True)
            above_db = 20 * np.log10((joint + 1e-12) / (np.where(np.isfinite(quietest), quietest, 0) + 1e-12))
            many = (count >= 3)[None, None, :, None] & heard.any(axis=0, keepdims=True)
            keep = np.where(many, heard & (above_db <= cfg.outlier_db_many), keep)
        self._count(here, present, keep)
        n_keep = np.maximum(keep.sum(axis=0), 1)
        if cfg.mode in ("complex", "quiet"):
            out = np.where(keep, spec, 0).sum(axis=0) / n_keep
        else:   # magphase: mean magnitude of the consistent cells, phase of the median one
            mean_mag = np.where(keep, mag, 0).sum(axis=0) / n_keep
            ph = np.take_along_axis(spec, med_idx, axis=0)[0]
            out = mean_mag * ph / (np.abs(ph) + 1e-12)
        return np.where(count[None, :, None] > 0, out, 0).astype(np.complex64)

    def _count(self, here: list[int] | None, present: np.ndarray, keep: np.ndarray) -> None:
        if here is None:
            return
        for i, r in enumerate(here):
            self.present[r] += present[i].sum() * keep.shape[1] * keep.shape[-1]
            self.kept[r] += keep[i].sum()


def fused_stream(ref: Recording, used: list[Recording], cfg: FuseConfig, n_fft: int,
                 progress: ProgressFn | None = None) -> tuple[Iterator[np.ndarray], dict[str, Any]]:
    """The fused audio as (channels, n) blocks on the reference's timeline, and the timeline facts."""
    sr = ref.info.sample_rate
    channels = max(r.info.channels for r in used)
    n_start, total, placements = plan_timeline(ref, used)
    block = cfg.block_frames
    ramp = max(1, int(cfg.ramp_s * sr))
    fusion = CellFusion([r.gain for r in used], channels, n_fft, cfg, [r.audible for r in used])
    streams = [_aligned_audio(pl, total, channels, sr, block) for pl in placements]

    def stacked() -> Iterator[np.ndarray]:
        pos = 0
        for blocks in zip(*streams):
            n = blocks[0].shape[-1]
            rows = []
            for pl, b in zip(placements, blocks):
                w = _weights(pl, pos, pos + n, total, ramp)
                t_ref = (n_start + pos + np.arange(n)) / sr
                advance = (pl.frac + pl.rec.info.sample_rate * pl.rec.fine.extra(t_ref)) / pl.ratio
                rows.append(np.concatenate([b, w[None], advance[None]], axis=0).astype(np.float32))
            pos += n
            if progress:
                progress("fuse", pos / total)
            yield np.stack(rows)

    ola = OverlapAdd(fusion, int(cfg.window_s * sr), int(cfg.overlap_s * sr), fixed_shape=False,
                     min_length=n_fft)
    facts = {"n_start": n_start, "total": total, "placements": placements, "channels": channels,
             "fusion": fusion, "sample_rate": sr}
    return ola.stream(stacked()), facts


# ---------------------------------------------------------------------------------------------
# 7. the whole job


def fuse_files(paths: list[str | Path], out_path: str | Path, cfg: FuseConfig | None = None,
               progress: ProgressFn | None = None) -> dict[str, Any]:
    """Align and fuse ``paths`` into a float32 file ``out_path``; returns the fusion report."""
    cfg = cfg or FuseConfig()
    recs = probe_all(paths)
    # "align" progress: the first half reads every recording once (envelopes), the second the
    # windows of the fine stage; both are told as they go, so that a long show's bar moves (and
    # the app's Cancel, which acts at the next update, is heard).
    total_s = sum(r.seconds for r in recs)
    read_s = 0.0

    def told(share: float) -> None:
        if progress:
            progress("align", min(1.0, share))

    for r in recs:
        envelope_features(r, cfg, on_block=lambda s, before=read_s: told(0.5 * (before + s) / total_s))
        read_s += r.seconds
    matches = coarse_alignment(recs, cfg)
    ref = select_reference(recs, matches)
    n_fft = _pow2(cfg.n_fft_s * ref.info.sample_rate)
    for r in recs:
        r.features = None                       # the envelopes are no longer needed
    candidates = [r for r in recs if r.used and r is not ref]
    for i, r in enumerate(candidates):
        fine_alignment(ref, r, cfg, n_fft,
                       on_progress=lambda f, i=i: told(0.5 + 0.5 * (i + f) / len(candidates)))
    told(1.0)
    used = [r for r in recs if r.used]
    if len(used) < 2:
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in recs if r.reason)
        raise ResonateError(f"only one recording is left to fuse ({reasons})")
    spectrum_matching(ref, used, cfg, n_fft)
    blocks, facts = fused_stream(ref, used, cfg, n_fft, progress)
    sr, channels = facts["sample_rate"], facts["channels"]
    with sf.SoundFile(str(out_path), "w", sr, channels, "FLOAT", format="RF64") as f:
        for b in blocks:
            f.write(np.ascontiguousarray(b.T))
    return fusion_report(recs, ref, cfg, facts)


def time_map_from_report(row: dict[str, Any]) -> TimeMap:
    """The time map of one recording of a fusion report (its time as a function of the reference's)."""
    knots = row.get("piecewise_knots")
    if knots:
        k = np.array(knots, dtype=np.float64)
        return TimeMap(row["offset_s"], row["drift_ppm"] * 1e-6, k[:, 0], k[:, 1] * 1e-3)
    return TimeMap(row["offset_s"], row["drift_ppm"] * 1e-6)


def _segments(placements: list[Placement], total: int, sr: int) -> list[dict[str, Any]]:
    """Stretches of the timeline with the same recordings present."""
    cuts = sorted({0, total, *[min(max(p.lead, 0), total) for p in placements],
                   *[min(max(p.end, 0), total) for p in placements]})
    out: list[dict[str, Any]] = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b <= a:
            continue
        names = [p.rec.name for p in placements if p.lead <= a and p.end >= b]
        if out and out[-1]["recordings"] == names:
            out[-1]["end_s"] = round(b / sr, 3)
        else:
            out.append({"start_s": round(a / sr, 3), "end_s": round(b / sr, 3), "recordings": names})
    return out


def fusion_report(recs: list[Recording], ref: Recording, cfg: FuseConfig, facts: dict[str, Any]) -> dict[str, Any]:
    sr, total, n_start = facts["sample_rate"], facts["total"], facts["n_start"]
    placements = {p.rec.index: p for p in facts["placements"]}
    fusion: CellFusion = facts["fusion"]
    used = [r for r in recs if r.used]
    rows = []
    for r in recs:
        row: dict[str, Any] = {"path": str(r.path), "name": r.name, "seconds": round(r.seconds, 3),
                               "sample_rate": r.info.sample_rate, "channels": r.info.channels,
                               "used": r.used, "reference": r is ref}
        if r.used:
            m, p = r.fine, placements[r.index]
            k = used.index(r)
            ref_end = min(ref.seconds, (r.seconds - m.offset) / (1 + m.drift))
            ref_start = max(0.0, -m.offset / (1 + m.drift))
            row.update({
                "offset_s": round(m.offset, 7),             # its time at the reference's start
                "drift_ppm": round(m.drift * 1e6, 4),
                "piecewise": m.knots is not None,
                # Residual of the piecewise map over the line at its knots: [ref time s, ms].
                "piecewise_knots": None if m.knots is None else
                [[round(float(t), 3), round(float(v) * 1e3, 4)] for t, v in zip(m.knots, m.residual)],
                "start_s": round(p.lead / sr, 4),            # where it starts on the output timeline
                "end_s": round(p.end / sr, 4),
                "overlap_with_reference_s": round(max(0.0, ref_end - ref_start), 3),
                "fit_residual_ms": None if r.fine_scale_ms is None else round(r.fine_scale_ms, 4),
                "windows": len(r.fine_points),
                "windows_agreeing": sum(1 for pt in r.fine_points if pt[3]),
                "level_db": round(r.level_db, 2),
                "cells_kept": round(float(fusion.kept[k] / fusion.present[k]), 4) if fusion.present[k] else None,
            })
            if r is not ref:
                row["local_offsets"] = [[round(t, 3), round(o * 1e3, 4), round(q, 3), ok] for t, o, q, ok in r.fine_points]
        else:
            row["reason"] = r.reason
        rows.append(row)
    return {
        "mode": cfg.mode,
        "reference": ref.name,
        "sample_rate": sr,
        "channels": facts["channels"],
        "seconds": round(total / sr, 3),
        "timeline_start_in_reference_s": round(n_start / sr, 4),
        "recordings": rows,
        "rejected": [{"path": str(r.path), "reason": r.reason} for r in recs if not r.used],
        "segments": _segments(facts["placements"], total, sr),
    }
