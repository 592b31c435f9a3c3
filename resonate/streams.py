"""Write-behind: the end of the chain (metering, dithering, encoding, writing) in its own thread.

The chain is a pull pipeline of generators, so by default the writer waits while the stages
work and the stages wait while it writes. All of the writer's work runs in native code that
releases the GIL (numpy, libsndfile, LAME), so handing each finished block to a worker thread
lets the second pass (read back, gain, true-peak limiter) produce the next block meanwhile: on a
2-core machine that keeps the otherwise idle core busy. Progress and stage timing stay in the
caller's thread (Streamlit only accepts UI updates from the script thread).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

_STOP = object()


class WriteBehind:
    """Feed blocks to ``consume`` in a worker thread, in order, at most ``depth`` waiting.

    ``put`` and ``close`` re-raise the first exception ``consume`` raised, in the caller's
    thread; after one, ``consume`` is not called again. Leaving the ``with`` block on an
    exception stops the worker without waiting for the blocks still queued.
    """

    def __init__(self, consume: Callable[[np.ndarray], None], depth: int = 2, name: str = "resonate-writer"):
        self._consume = consume
        self._slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._abandon = threading.Event()
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    def _work(self) -> None:
        while True:
            item = self._slots.get()
            if item is _STOP or self._abandon.is_set():
                return
            try:
                self._consume(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc
                return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, block: np.ndarray) -> None:
        while True:
            self._raise_if_failed()
            try:
                self._slots.put(block, timeout=0.05)
                return
            except queue.Full:
                if not self._worker.is_alive():
                    self._raise_if_failed()
                    raise RuntimeError("writer thread stopped") from None

    def close(self) -> None:
        """Wait until every block is consumed; raise what the worker raised, if anything."""
        if self._worker.is_alive():
            self._send_stop()
            self._worker.join()
        self._raise_if_failed()

    def _send_stop(self) -> None:
        while self._worker.is_alive():
            try:
                self._slots.put(_STOP, timeout=0.05)
                return
            except queue.Full:
                continue

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._abandon.set()
        self._send_stop()
        self._worker.join()
