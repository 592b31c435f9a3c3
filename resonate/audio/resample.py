"""Resampling with soxr VHQ, whole or streamed. Only stages whose model needs another rate use it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import soxr


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a (channels, n) float32 array; returns it unchanged when the rates match."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    y = soxr.resample(np.ascontiguousarray(np.asarray(x, dtype=np.float32).T), sr_in, sr_out, quality="VHQ")
    return np.ascontiguousarray(y.T, dtype=np.float32)


class StreamResampler:
    """Block-by-block soxr resampling with state carried across blocks (no seams)."""

    def __init__(self, sr_in: int, sr_out: int, channels: int):
        self.sr_in, self.sr_out, self.channels = sr_in, sr_out, channels
        self._rs = None if sr_in == sr_out else soxr.ResampleStream(sr_in, sr_out, channels, dtype="float32", quality="VHQ")

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._rs is None:
            return block
        y = self._rs.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32), last=last)
        return np.ascontiguousarray(y.T)

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Resample a stream; output length is round(n_in * sr_out / sr_in) overall."""
        if self._rs is None:
            yield from blocks
            return
        for b in blocks:
            y = self.process(b)
            if y.shape[-1]:
                yield y
        y = self.process(np.zeros((self.channels, 0), dtype=np.float32), last=True)
        if y.shape[-1]:
            yield y


def resampled_length(n: int, sr_in: int, sr_out: int) -> int:
    return int(round(n * sr_out / sr_in))
