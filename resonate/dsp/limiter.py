"""A look-ahead true-peak limiter, streamed.

Gain needed per sample comes from the 4x-oversampled envelope, so inter-sample peaks are caught.
Look-ahead = running minimum over L samples followed by an L-sample moving average: every sample
then sees a gain at or below what it needs (see ``TruePeakLimiter.process``), with a smooth
attack and no overshoot. Release is exponential. Gain computation is vectorised per block
(the release recursion is solved in the log domain with a cumulative max), so there is no
per-sample Python loop.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from resonate.dsp.loudness import TruePeakEnvelope, db_to_amplitude


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
