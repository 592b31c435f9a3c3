"""A look-ahead true-peak limiter, streamed.

Gain needed per sample comes from the 4x-oversampled envelope, so inter-sample peaks are caught.
Look-ahead = running minimum over L samples followed by an L-sample moving average: every sample
then sees a gain at or below what it needs (see ``TruePeakLimiter.process``), with a smooth
attack and no overshoot. Release is exponential. Gain computation is vectorised per block
(the release recursion is solved in the log domain with a cumulative max), so there is no
per-sample Python loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
from scipy import signal
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from resonate.dsp.loudness import _CENTRE_TAP, _PEAK_BOUND, TruePeakEnvelope, db_to_amplitude, k_weighting_sos


class TruePeakLimiter:
    def __init__(self, rate: int, channels: int, ceiling_dbtp: float = -1.0, lookahead_ms: float = 5.0,
                 release_ms: float = 80.0, margin_db: float = 0.1):
        self.channels = channels
        self.ceiling = db_to_amplitude(ceiling_dbtp - margin_db)
        self.lookahead = max(2, int(round(lookahead_ms * 1e-3 * rate)))
        self._log_r = -1.0 / max(1.0, release_ms * 1e-3 * rate)     # log of the per-sample release factor
        self._env = TruePeakEnvelope(channels)
        env_delay = self._env.delay
        # Audio is delayed so that it lines up with the envelope and the look-ahead window.
        self.latency = env_delay + self.lookahead - 1
        self._audio = np.zeros((channels, self.latency), dtype=np.float32)
        # Gain math runs in float32 like the audio (a gain error of 1e-6 is -120 dB).
        self._req_hist = np.ones(self.lookahead, dtype=np.float32)        # required gain, last L values
        self._min_hist = np.ones(self.lookahead - 1, dtype=np.float32)    # released min-gain, last L-1 values
        self._depth_prev = 0.0                          # 1 - released gain at the previous sample
        self.max_reduction_db = 0.0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Limit one (channels, n) block; output is delayed by ``latency`` samples."""
        n = block.shape[-1]
        if n == 0:
            return block
        env = self._env.update(block, floor=self.ceiling)
        req = np.minimum(np.float32(1.0), np.float32(self.ceiling) / np.maximum(env, np.float32(1e-12)))
        # Running min over the last L+1 required gains (look-ahead, since audio is delayed). With the
        # L-sample average below, each sample's gain is at most the need of both intervals beside it.
        size = self.lookahead + 1
        cat = np.concatenate([self._req_hist, req])
        gmin = minimum_filter1d(cat, size, origin=(size - 1) - size // 2)[size - 1:]
        self._req_hist = cat[-(size - 1):]
        # Release: depth d[n] = max(1 - gmin[n], r * d[n-1]), solved as a cumulative max in log domain.
        depth = 1.0 - gmin
        if depth.max() > 0 or self._depth_prev > 0:
            k = np.arange(1, n + 1, dtype=np.float32)
            with np.errstate(divide="ignore"):
                logd = np.log(np.maximum(depth, np.float32(0.0))) - k * np.float32(self._log_r)
                prev = np.log(self._depth_prev) if self._depth_prev > 0 else -np.inf
            logd = np.maximum.accumulate(np.maximum(logd, np.float32(prev)))
            depth = np.exp(logd + k * np.float32(self._log_r))
            depth[depth < 1e-9] = 0.0
            self._depth_prev = float(depth[-1])
        g_released = 1.0 - depth
        # Smooth the attack: L-sample moving average of the released min (never above need).
        cat = np.concatenate([self._min_hist, g_released])
        gain = uniform_filter1d(cat, self.lookahead, origin=(self.lookahead - 1) // 2)[self.lookahead - 1:]
        self._min_hist = cat[-(self.lookahead - 1):]
        if gain.min() < 1.0:
            self.max_reduction_db = max(self.max_reduction_db, float(-20 * np.log10(max(gain.min(), 1e-9))))
        audio = np.concatenate([self._audio, block], axis=-1)
        out = (audio[:, :n] * gain).astype(np.float32, copy=False)
        self._audio = audio[:, n:]
        return out

    def flush(self) -> np.ndarray:
        """Push the delayed tail out (feeds silence through)."""
        return self.process(np.zeros((self.channels, self.latency), dtype=np.float32))


class HopPeaks:
    """Sample peak (max |x| over all channels) of every ``hop`` samples of a stream; the last,
    partial hop included. A three-hour file at 100 ms hops is about 430 kB."""

    def __init__(self, hop: int):
        self.hop = hop
        self.frames = 0
        self._peaks: list[np.ndarray] = []
        self._partial = 0.0

    def update(self, block: np.ndarray) -> None:
        n = block.shape[-1]
        if n == 0:
            return
        a = np.abs(block).max(axis=0)
        i = 0
        fill = self.frames % self.hop
        if fill:
            i = min(self.hop - fill, n)
            self._partial = max(self._partial, float(a[:i].max()))
            if fill + i == self.hop:
                self._peaks.append(np.array([self._partial], dtype=np.float32))
                self._partial = 0.0
        full = (n - i) // self.hop
        if full:
            self._peaks.append(a[i: i + full * self.hop].reshape(full, self.hop).max(axis=1).astype(np.float32))
            i += full * self.hop
        if i < n:
            self._partial = float(a[i:].max())
        self.frames += n

    def peaks(self) -> np.ndarray:
        done = np.concatenate(self._peaks) if self._peaks else np.zeros(0, dtype=np.float32)
        if self.frames % self.hop:
            done = np.append(done, np.float32(self._partial))
        return done


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, end) index ranges of the True runs in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _dilate(mask: np.ndarray, before: int, after: int) -> np.ndarray:
    """True wherever a True of ``mask`` lies at most ``before`` later or ``after`` earlier."""
    out = np.zeros(mask.size + before + after, dtype=bool)
    for first, end in _runs(mask):
        out[first: end + before + after] = True
    return out[before: before + mask.size]


def _stretches(blocks: Iterable[np.ndarray], spans: list[tuple[int, int]]) -> Iterator[Iterator[np.ndarray]]:
    """For each sorted, disjoint sample span [start, stop), the stream's samples in it as chunks.
    Blocks before a span are passed over; after the last span the stream is not read further."""
    it = iter(blocks)
    pos, pending = 0, None
    for start, stop in spans:
        def chunks(start: int = start, stop: int = stop) -> Iterator[np.ndarray]:
            nonlocal pos, pending
            while pos < stop:
                if pending is None or pending.shape[-1] == 0:
                    pending = next(it, None)
                    if pending is None:
                        return
                n = pending.shape[-1]
                lo, hi = max(0, start - pos), min(n, stop - pos)
                if hi > lo:
                    yield pending[:, lo:hi]
                taken = hi if hi > lo else n
                pos, pending = pos + taken, pending[:, taken:]
        yield chunks()


class LimitedLoudness:
    """What a :class:`LoudnessMeter` will read on ``TruePeakLimiter(gain * x)``, predicted from a
    stream ``x`` measured once, for any gain, without limiting all of it.

    The meter keeps K-weighted powers per 100 ms hop. A hop the limiter leaves alone reads
    ``base_powers * gain**2`` exactly (K-weighting is linear); only the stretches around hops
    where the limiter can act are limited and K-weighted again, each starting one quiet hop
    early: a fresh limiter is then in the same state as the running one would be, and the K
    filter's start-up transient has decayed below 1e-9 (its slowest pole, the 38 Hz high-pass, has
    a 4 ms time constant). A hop "can act" when gain x its true peak exceeds the ceiling; the
    affected stretch runs ``pre`` hops before it (look-ahead: a running min over L+1 samples, then
    an L-average) and ``post`` hops after (the release reaches exactly 1 in float32 within 20.8
    time constants). Exact to float rounding: ``tests/test_loudness.py``.

    True peaks per hop start as an upper bound (sample peak x the interpolator's L1 norm, over the
    hop and its neighbours); ``scan`` replaces them with the exact values wherever a gain up to
    ``max_gain`` could lift them to the ceiling, so that predictions limit only what needs it.
    """

    def __init__(self, rate: int, channels: int, hop: int, base_powers: np.ndarray, peaks: np.ndarray,
                 ceiling_dbtp: float = -1.0, lookahead_ms: float = 5.0, release_ms: float = 80.0):
        self.rate, self.channels, self.hop = rate, channels, hop
        self._lim_args = (rate, channels, ceiling_dbtp, lookahead_ms, release_ms)
        probe = TruePeakLimiter(*self._lim_args)
        self.ceiling = probe.ceiling
        self.pre = -(-(2 * probe.lookahead + 32) // hop)
        self.post = -(-int(np.ceil(20.8 / -probe._log_r + 2 * probe.lookahead + 32)) // hop) + 1
        self.base_powers = np.asarray(base_powers, dtype=np.float64)
        near = np.asarray(peaks, dtype=np.float64)
        if near.size > 1:
            near = np.maximum(near, np.concatenate([near[1:], [0.0]]))
            near = np.maximum(near, np.concatenate([[0.0], near[:-1]]))
        self.true_peaks = near * max(_PEAK_BOUND, _CENTRE_TAP)     # per hop, last partial one included
        self._sos = k_weighting_sos(rate)
        self.reads = 0

    def _spans(self, hops: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(max(0, first - 1) * self.hop, end * self.hop) for first, end in hops]

    def scan(self, blocks: Iterable[np.ndarray], max_gain: float) -> None:
        """Exact per-hop true peaks wherever ``max_gain`` could lift them to the ceiling (one read)."""
        floor = self.ceiling / max_gain
        candidates = _runs(self.true_peaks * 1.0001 > floor)
        if not candidates:
            return
        self.reads += 1
        for (first, end), chunks in zip(candidates, _stretches(blocks, self._spans(candidates))):
            env_of = TruePeakEnvelope(self.channels)
            start = max(0, first - 1) * self.hop
            found = np.zeros(end + 1 - max(0, first - 1))
            pos = start - env_of.delay                       # envelope k describes sample k - delay
            for c in itertools.chain(chunks, [np.zeros((self.channels, env_of.delay), dtype=np.float32)]):
                env = env_of.update(c, floor)
                lead = max(0, start - pos)                   # values for the silence before the span
                if env.size > lead:
                    p0 = pos + lead - start                      # offset of env[lead] into the span
                    cuts = np.arange(-(-p0 // self.hop) * self.hop, p0 + env.size - lead, self.hop) - p0
                    idx = np.concatenate([[0], cuts[cuts > 0]])
                    hops = (p0 + idx) // self.hop
                    found[hops] = np.maximum(found[hops], np.maximum.reduceat(env[lead:], idx))
                pos += env.size
            self.true_peaks[first:end] = found[first - max(0, first - 1): end - max(0, first - 1)]

    def acts(self, gain: float) -> bool:
        """Whether the limiter will touch anything at this gain."""
        return bool((self.true_peaks * gain * 1.0001 > self.ceiling).any())

    def hop_powers(self, blocks: Iterable[np.ndarray], gain: float) -> tuple[np.ndarray, float]:
        """Predicted channel-summed K-weighted powers per complete hop, and the ungated mean power
        (what the meter uses under 400 ms; then the whole stream is limited)."""
        g = np.float32(gain)
        powers = self.base_powers * float(g) ** 2
        n_full = powers.size
        hot = self.true_peaks * float(g) * 1.0001 > self.ceiling
        if n_full < 4:
            hot[:] = True
        if not hot.any():
            return powers, 0.0
        self.reads += 1
        hops = _runs(_dilate(hot, self.pre, self.post))
        sums = np.zeros(self.true_peaks.size)
        total = [0.0, 0]
        for (first, end), chunks in zip(hops, _stretches(blocks, self._spans(hops))):
            lim = TruePeakLimiter(*self._lim_args)
            zi = np.zeros((self._sos.shape[0], self.channels, 2))
            skip, pos = lim.latency, max(0, first - 1) * self.hop
            for c in itertools.chain(chunks, [None]):
                out = lim.flush() if c is None else lim.process(c * g)
                if skip:                           # the limiter's latency: its first outputs are silence
                    cut = min(skip, out.shape[-1])
                    out, skip = out[:, cut:], skip - cut
                if not out.shape[-1]:
                    continue
                y, zi = signal.sosfilt(self._sos, out.astype(np.float64), axis=-1, zi=zi)
                sq = (y * y).sum(axis=0)
                h = (pos + np.arange(sq.size)) // self.hop
                sums[h[0]: h[-1] + 1] += np.bincount(h - h[0], weights=sq)
                total[0] += float(sq.sum())
                total[1] += sq.size
                pos += sq.size
            keep = slice(first, min(end, n_full))          # the warm-up hop (first - 1) keeps its base value
            powers[keep] = sums[keep] / self.hop
        return powers, (total[0] / total[1] if n_full < 4 and total[1] else 0.0)
