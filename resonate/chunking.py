"""Overlap-add over a stream, written once and used by every stage that needs context.

In the spirit of demucs' ``apply.py``: a function that wants whole stretches of audio (a model,
spectral gating) is run over fixed-length windows; neighbouring windows overlap and their
outputs are crossfaded with complementary raised-cosine weights, so seams do not click. The
stream version keeps at most one window of input and one of output in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

WindowFn = Callable[[np.ndarray], np.ndarray]


def crossfade_weights(window: int, overlap: int) -> np.ndarray:
    """Weights for one window: raised-cosine fades over `overlap` samples at both ends.

    Fade-in and fade-out of neighbours sum to exactly one, and every weight is > 0, so the
    first and last windows can be normalised by their own weights.
    """
    w = np.ones(window, dtype=np.float64)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[window - overlap:] = np.minimum(w[window - overlap:], 1.0 - ramp)
    return w


class OverlapAdd:
    """Run ``fn`` over windows of ``window`` samples that overlap by ``overlap`` samples.

    ``fn`` takes ``(..., window)`` float32 and returns ``(..., window)`` (the leading shape may
    differ from the input's, e.g. stems). With ``fixed_shape`` the last window is zero-padded
    to full length, which keeps one shape for compiled/MPS graphs; otherwise it is shorter, but
    never shorter than ``min_length`` (zero-padded up to it: an STFT needs more than half its
    frame, and a clip can be shorter than that). Output length always equals input length.
    """

    def __init__(self, fn: WindowFn, window: int, overlap: int, fixed_shape: bool = True, min_length: int = 1):
        if window <= 0:
            raise ValueError("window must be positive")
        if not 0 <= overlap < window:
            raise ValueError("overlap must be in [0, window)")
        if 2 * overlap > window:
            raise ValueError("overlap must be at most half the window")
        self.fn = fn
        self.window = int(window)
        self.overlap = int(overlap)
        self.hop = self.window - self.overlap
        self.fixed_shape = fixed_shape
        self.min_length = min(self.window, max(1, int(min_length)))
        # float32 like the audio: the crossfade sums stay within 1e-7 of one, and float64 would
        # double the memory of every window of stems.
        self._weights = crossfade_weights(self.window, self.overlap).astype(np.float32)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[-1]
        length = self.window if self.fixed_shape else max(n, self.min_length)
        if n < length:
            pad = [(0, 0)] * (chunk.ndim - 1) + [(0, length - n)]
            chunk = np.pad(chunk, pad)
        out = np.asarray(self.fn(np.ascontiguousarray(chunk, dtype=np.float32)))
        return out[..., :n]

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        inbuf: np.ndarray | None = None      # input from the next window's start onwards
        acc: np.ndarray | None = None        # weighted output sum over the pending overlap
        wsum: np.ndarray | None = None
        processed_any = False
        w = self._weights

        for block in blocks:
            if block.shape[-1] == 0:
                continue
            inbuf = block if inbuf is None else np.concatenate([inbuf, block], axis=-1)
            while inbuf.shape[-1] >= self.window:
                y = self._run(inbuf[..., : self.window])
                if acc is None:
                    acc = np.zeros(y.shape[:-1] + (self.overlap,), dtype=np.float32)
                    wsum = np.zeros(self.overlap, dtype=np.float32)
                head = y * w
                head[..., : self.overlap] += acc
                hw = w.copy()
                hw[: self.overlap] += wsum
                processed_any = True
                yield (head[..., : self.hop] / hw[: self.hop]).astype(np.float32, copy=False)
                acc = head[..., self.hop:].copy()
                wsum = hw[self.hop:].copy()
                inbuf = inbuf[..., self.hop:]

        if inbuf is None:
            return
        remaining = inbuf.shape[-1]
        if remaining == 0:
            return
        if remaining > self.overlap or not processed_any:
            y = self._run(inbuf)
            n = y.shape[-1]
            ww = w[:n].copy()
            if processed_any and self.overlap:
                # The final (short) window has no right neighbour: keep its weights at 1 after the fade-in.
                ww[self.overlap:] = 1.0
                y = y * ww
                y[..., : self.overlap] += acc
                ww[: self.overlap] += wsum
            else:
                ww[:] = 1.0
            yield (y / ww).astype(np.float32, copy=False)
        else:
            yield (acc[..., :remaining] / wsum[:remaining]).astype(np.float32, copy=False)


def apply_overlap_add(fn: WindowFn, x: np.ndarray, window: int, overlap: int, fixed_shape: bool = True) -> np.ndarray:
    """Whole-array convenience over :class:`OverlapAdd` (same code path as streaming)."""
    parts = list(OverlapAdd(fn, window, overlap, fixed_shape).stream([x]))
    if not parts:
        return np.zeros(x.shape[:-1] + (0,), dtype=np.float32)
    return np.concatenate(parts, axis=-1)


def reblock(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup a stream into blocks of exactly ``size`` samples (the last may be shorter)."""
    buf: list[np.ndarray] = []
    have = 0
    for b in blocks:
        buf.append(b)
        have += b.shape[-1]
        if have >= size:
            cat = np.concatenate(buf, axis=-1)
            n_full = cat.shape[-1] // size * size
            for i in range(0, n_full, size):
                yield cat[..., i: i + size]
            rest = cat[..., n_full:]
            buf, have = ([rest], rest.shape[-1]) if rest.shape[-1] else ([], 0)
    if have:
        yield np.concatenate(buf, axis=-1)


def exact_length(blocks: Iterable[np.ndarray], source: Counter, lead_shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Trim or zero-pad a stream so that its length equals the input's, counted by ``source``.

    Output never runs ahead of the input consumed so far (what would is held back); once the
    input has ended, the tail is cut or zero-padded to the exact count.
    """
    emitted = 0
    held = np.zeros(lead_shape + (0,), dtype=np.float32)
    for block in blocks:
        held = np.concatenate([held, block], axis=-1) if held.shape[-1] else block
        take = max(0, min(held.shape[-1], source.frames - emitted))
        if take:
            yield held[..., :take]
            emitted += take
        held = held[..., take:]
    if not source.finished:
        raise RuntimeError("stream output ended before its input")
    missing = source.frames - emitted
    if missing > 0:
        tail = held[..., :missing]
        yield np.concatenate([tail, np.zeros(lead_shape + (missing - tail.shape[-1],), np.float32)], axis=-1)


class Counter:
    """Counts the frames of a stream and notes when it has ended."""

    def __init__(self, blocks: Iterable[np.ndarray]):
        self._blocks = blocks
        self.frames = 0
        self.finished = False

    def __iter__(self) -> Iterator[np.ndarray]:
        for b in self._blocks:
            self.frames += b.shape[-1]
            yield b
        self.finished = True
