"""Loudness: two passes. Measure integrated loudness of the whole processed stream, then apply
one gain and a true-peak limiter. Near-silence gets no gain at all (never an infinite boost)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from resonate.dsp.limiter import TruePeakLimiter
from resonate.dsp.loudness import LoudnessMeter, db_to_amplitude
from resonate.stages import register
from resonate.stages.base import Stage, StageContext

TARGETS_LUFS = {"streaming": -14.0, "apple": -16.0, "broadcast": -23.0}
MIN_MEASURABLE_LUFS = -70.0


@dataclass(frozen=True)
class LoudnessConfig:
    target_lufs: float = -14.0
    true_peak_dbtp: float = -1.0
    max_gain_db: float = 30.0
    lookahead_ms: float = 5.0
    release_ms: float = 80.0

    def __post_init__(self):
        if not -60.0 <= self.target_lufs <= 0.0:
            raise ValueError("target_lufs must be between -60 and 0")
        if not -20.0 <= self.true_peak_dbtp <= 0.0:
            raise ValueError("true_peak_dbtp must be between -20 and 0")


@register
class LoudnessStage(Stage):
    name = "loudness"
    Config = LoudnessConfig
    two_pass = True   # the pipeline feeds ``measure`` with the whole stream before ``stream``

    def open(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.meter = LoudnessMeter(ctx.sample_rate, ctx.channels, true_peak=False)
        self.measured_lufs = float("-inf")
        self.gain_db = 0.0
        self.limiter: TruePeakLimiter | None = None

    def measure(self, block: np.ndarray) -> None:
        self.meter.update(block)

    def _gain_db(self) -> float:
        self.measured_lufs = self.meter.integrated_lufs()
        if not np.isfinite(self.measured_lufs) or self.measured_lufs < MIN_MEASURABLE_LUFS:
            return 0.0
        return float(np.clip(self.config.target_lufs - self.measured_lufs, -self.config.max_gain_db, self.config.max_gain_db))

    def stream(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        self.gain_db = self._gain_db()
        if self.gain_db >= self.config.max_gain_db:
            self.ctx.warn(f"recording is very quiet; loudness gain capped at +{self.config.max_gain_db:g} dB")
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
            "true_peak_ceiling_dbtp": self.config.true_peak_dbtp,
            "limiter_max_reduction_db": round(self.limiter.max_reduction_db, 2) if self.limiter else 0.0,
        }
