"""Linear-phase FIR filters: design from a magnitude response, and streaming with the latency
removed (the output is exactly as long as the input and aligned with it).

Used by ``match`` (its corrections) and ``master`` (its EQ in linear-phase mode). A linear-phase
filter delays every frequency by the same time, so it changes the tone of a recording without
moving one band against another; the price is pre-ringing on steep low filters and a latency of
half the filter's length, which :func:`stream_linear_phase` removes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from scipy import signal

FLOOR_DB = -120.0   # deepest cut designed (a high-pass's stopband): deeper gains only add ripple


def linear_phase_fir(gain_db: np.ndarray, n_fft: int) -> np.ndarray:
    """A symmetric FIR of n_fft + 1 taps (latency n_fft / 2) with the magnitude ``gain_db``
    (given on the rfft grid of ``n_fft``), by frequency sampling on a twice finer grid and a
    Hann window."""
    taps = n_fft + 1
    fine = np.fft.rfftfreq(2 * n_fft)
    coarse = np.fft.rfftfreq(n_fft)
    magnitude = 10 ** (np.interp(fine, coarse, np.maximum(gain_db, FLOOR_DB)) / 20)
    impulse = np.fft.irfft(magnitude, 2 * n_fft)
    h = np.roll(impulse, taps // 2)[:taps] * signal.get_window("hann", taps + 2)[1:-1]
    return h.astype(np.float32)


def magnitude_db(impulse_response: np.ndarray, n_fft: int) -> np.ndarray:
    """The magnitude (dB, on the rfft grid of ``n_fft``) of an impulse response (any length; a
    longer one is cut to ``n_fft``)."""
    spectrum = np.abs(np.fft.rfft(impulse_response[:n_fft], n_fft))
    return 20 * np.log10(np.maximum(spectrum, 10 ** (FLOOR_DB / 20)))


def stream_linear_phase(blocks: Iterable[np.ndarray], taps: int, channels: int,
                        filter_block: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Iterator[np.ndarray]:
    """Run a linear-phase FIR of ``taps`` (odd) taps over ``blocks`` with its latency removed.

    ``filter_block(x, t)`` gets ``x``, the next block with the ``taps - 1`` samples before it, and
    ``t``, the aligned times (samples from the start of the input) of the ``n`` outputs it must
    return; ``signal.oaconvolve(x, h[None], mode="valid", axes=-1)`` is one such function.
    ``x[:, taps - 1 - delay:][:, :n]`` is the input at those times (the dry signal, aligned).
    """
    delay = taps // 2
    history = np.zeros((channels, taps - 1), dtype=np.float32)
    produced = 0            # delayed output samples so far
    skip = delay            # the latency: leading samples dropped
    for block in _then(blocks, np.zeros((channels, delay), dtype=np.float32)):
        n = block.shape[-1]
        if not n:
            continue
        x = np.concatenate([history, block.astype(np.float32, copy=False)], axis=-1)
        t = np.arange(produced, produced + n, dtype=np.float64) - delay
        out = np.asarray(filter_block(x, t), dtype=np.float32)
        history = x[:, -(taps - 1):]
        produced += n
        if skip:
            cut = min(skip, n)
            out, skip = out[:, cut:], skip - cut
        if out.shape[-1]:
            yield out


def _then(blocks: Iterable[np.ndarray], last: np.ndarray) -> Iterator[np.ndarray]:
    yield from blocks
    yield last
