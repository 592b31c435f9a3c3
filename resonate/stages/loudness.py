"""Loudness: two passes. Measure integrated loudness of the whole processed stream, then apply
one gain and a true-peak limiter. Near-silence gets no gain at all (never an infinite boost).

The limiter takes loudness away where it acts (up to 1-2 LU on dynamic music at -14 LUFS), so
between the passes ``plan`` predicts, from the spooled stream, what the meter will read after the
limiter for a candidate gain (exactly: see ``limited_hop_powers``) and searches the gain that lands
within ``TOLERANCE_LU`` of the target, driving the limiter at most ``max_compensation_db`` harder
than the measured gain alone. When that cannot reach the target the report says so
(``target_reached``) and the job warns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from resonate.config import check_ranges, setting
from resonate.dsp.limiter import HopPeaks, LimitedLoudness, TruePeakLimiter
from resonate.dsp.loudness import LoudnessMeter, db_to_amplitude, gated_lufs
from resonate.stages import register
from resonate.stages.base import StageContext, TwoPassStage

TARGETS_LUFS = {"streaming": -14.0, "apple": -16.0, "broadcast": -23.0}
MIN_MEASURABLE_LUFS = -70.0
TOLERANCE_LU = 0.1        # the search stops this close to the target
REACHED_LU = 0.5          # further than this from the target is reported as not reached
MAX_PREDICTIONS = 6       # each reads the spooled stream once (only up to its last loud stretch)


@dataclass(frozen=True)
class LoudnessConfig:
    target_lufs: float = setting(-14.0, label="Target loudness", unit="LUFS", range=(-60.0, 0.0), step=0.5,
                                 help="integrated loudness: -14 streaming, -16 podcasts, -23 EBU R128")
    true_peak_dbtp: float = setting(-1.0, label="True-peak ceiling", unit="dBTP", range=(-20.0, 0.0), step=0.1,
                                    help="the true-peak limiter's ceiling")
    follow_reference: bool = setting(False, label="Loudness of the studio version",
                                     help="with a studio version (Match), aim at its integrated loudness instead of the target")
    max_gain_db: float = 30.0
    lookahead_ms: float = 5.0
    release_ms: float = 80.0
    max_compensation_db: float = setting(6.0, label="Limiter compensation", unit="dB", range=(0.0, 24.0), step=0.5,
                                         help="extra gain into the limiter to make up the loudness it takes")

    def __post_init__(self):
        check_ranges(self)


@register
class LoudnessStage(TwoPassStage):
    name = "loudness"
    Config = LoudnessConfig

    def open(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.meter = LoudnessMeter(ctx.sample_rate, ctx.channels, true_peak=False)
        self.measured_lufs = float("-inf")
        self.peaks = HopPeaks(self.meter.hop)
        self.gain_db = 0.0
        self.compensation_db = 0.0
        self.predicted_lufs: float | None = None
        self.target_reached: bool | None = None
        self.predictions = 0
        self._planned = False
        self._predictor: LimitedLoudness | None = None
        self.limiter: TruePeakLimiter | None = None

    def measure(self, block: np.ndarray) -> None:
        self.meter.update(block)
        self.peaks.update(block)

    def _gain_db(self) -> float:
        self.measured_lufs = self.meter.integrated_lufs()
        if not np.isfinite(self.measured_lufs) or self.measured_lufs < MIN_MEASURABLE_LUFS:
            return 0.0
        return float(np.clip(self.config.target_lufs - self.measured_lufs, -self.config.max_gain_db, self.config.max_gain_db))

    def predict_lufs(self, reread: Callable[[], Iterable[np.ndarray]], gain_db: float) -> tuple[float, float]:
        """Integrated loudness of the limited output for ``gain_db``, from the measured stream, and
        an estimate of its slope in LU per dB (each hop weighted by the share of its power the
        limiter leaves: a hop it flattens hardly grows with more gain)."""
        gain = db_to_amplitude(gain_db)
        if not self._predictor.acts(gain):      # the limiter leaves it all alone: plain arithmetic
            return self.measured_lufs + gain_db, 1.0
        self.predictions += 1
        powers, mean_power = self._predictor.hop_powers(reread(), gain)
        plain = self._predictor.base_powers * gain ** 2
        kept = np.divide(powers, plain, out=np.ones_like(powers), where=plain > 0)
        slope = float((powers * kept ** 2).sum() / powers.sum()) if powers.sum() > 0 else 1.0
        return gated_lufs(powers, mean_power), slope

    def plan(self, reread: Callable[[], Iterable[np.ndarray]]) -> None:
        """Between the passes: pick the gain whose limited output lands on the target.

        ``reread()`` yields the measured stream again (the pipeline's spool); it is read once per
        prediction, usually two or three times, and not at all when the limiter will not act.
        Without ``plan`` the stage applies the measured gain alone.
        """
        cfg = self.config
        g0 = self._gain_db()
        self.gain_db, self._planned = g0, True
        if not np.isfinite(self.measured_lufs) or self.measured_lufs < MIN_MEASURABLE_LUFS:
            return
        target = cfg.target_lufs
        cap = max(g0, min(cfg.max_gain_db, g0 + cfg.max_compensation_db))
        self._predictor = LimitedLoudness(self.ctx.sample_rate, self.ctx.channels, self.meter.hop,
                                          self.meter.hop_powers(), self.peaks.peaks(), cfg.true_peak_dbtp,
                                          cfg.lookahead_ms, cfg.release_ms)
        if self._predictor.acts(db_to_amplitude(g0)):     # (a bound so far: no read when it says no)
            self._predictor.scan(reread(), db_to_amplitude(cap))   # exact true peaks where they matter
        lufs, slope = self.predict_lufs(reread, g0)
        points = [(g0, lufs)]
        while abs(target - points[-1][1]) > TOLERANCE_LU and len(points) < MAX_PREDICTIONS:
            below = [g for g, lufs in points if lufs < target]
            above = [g for g, lufs in points if lufs > target]
            lo = max(below, default=-cfg.max_gain_db)
            if not above and lo >= cap:
                break                                    # as loud as the allowed drive gets
            upper = min(above) if above else cap
            # Secant through the last two predictions (the first step uses the estimated slope).
            # Loudness never falls as the gain rises (the limiter's gain times the input gain is
            # monotonic), so the target stays bracketed by [lo, upper].
            if len(points) > 1:
                (g1, l1), (g2, l2) = points[-2:]
                slope = (l2 - l1) / (g2 - g1)
            g2, l2 = points[-1]
            g = g2 + (target - l2) / max(slope, 0.05)
            if not lo < g < upper:
                g = 0.5 * (lo + upper) if above else upper
            points.append((g, self.predict_lufs(reread, g)[0]))
        self.gain_db, self.predicted_lufs = min(points, key=lambda p: abs(target - p[1]))
        self.compensation_db = self.gain_db - g0
        self.target_reached = abs(target - self.predicted_lufs) <= REACHED_LU

    def apply(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        if not self._planned:
            self.gain_db = self._gain_db()
        cfg = self.config
        if self.gain_db - self.compensation_db >= cfg.max_gain_db:
            self.ctx.warn(f"recording is very quiet; loudness gain capped at +{cfg.max_gain_db:g} dB")
        elif self.target_reached is False:
            self.ctx.warn(
                f"loudness target {cfg.target_lufs:g} LUFS is out of reach under the {cfg.true_peak_dbtp:g} dBTP "
                f"ceiling: the output will measure about {self.predicted_lufs:.1f} LUFS (the true-peak limiter "
                f"takes the rest even with {self.compensation_db:.1f} dB more gain into it; a preset's "
                f"[loudness] max_compensation_db allows more)")
        gain = np.float32(db_to_amplitude(self.gain_db))
        lim = TruePeakLimiter(self.ctx.sample_rate, self.ctx.channels, self.config.true_peak_dbtp,
                              self.config.lookahead_ms, self.config.release_ms)
        self.limiter = lim
        skip = lim.latency   # the limiter delays audio; drop that many leading samples
        for block in blocks:
            out = lim.process(block * gain)
            if skip:
                cut = min(skip, out.shape[-1])
                out, skip = out[:, cut:], skip - cut
            if out.shape[-1]:
                yield out
        tail = lim.flush()[:, skip:]
        if tail.shape[-1]:
            yield tail

    def report(self) -> dict:
        return {
            "measured_lufs": None if not np.isfinite(self.measured_lufs) else round(self.measured_lufs, 2),
            "gain_db": round(self.gain_db, 2),
            "target_lufs": self.config.target_lufs,
            "target_from_reference": self.config.follow_reference,
            "true_peak_ceiling_dbtp": self.config.true_peak_dbtp,
            "limiter_max_reduction_db": round(self.limiter.max_reduction_db, 2) if self.limiter else 0.0,
            "limiter_compensation_db": round(self.compensation_db, 2),
            "predicted_lufs": None if self.predicted_lufs is None or not np.isfinite(self.predicted_lufs)
            else round(self.predicted_lufs, 2),
            "target_reached": self.target_reached,
        }
