"""Models loaded once per job environment: the stages ask a :class:`ModelLoader` for them.

A stage's ``open`` runs for every file; loading a model there each time is right for one file
but wasteful for a batch (the CLI) or a server (the app). The job environment hands every stage
the same loader (``StageContext.models``), which keeps what it loaded: the same loader function
with the same arguments gives the same model object. A failure (weights missing offline) is kept
too, so a batch does not wait for the same failed download for every file.

Kept models are shared and must not be changed by whoever uses them: the stages only run them in
eval mode on the device they were loaded for (the device is one of the arguments).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from resonate.errors import ResonateError


class ModelLoader:
    """``load(fn, *args)`` calls ``fn(*args)`` once per distinct ``(fn, args)`` and keeps the result
    (at most ``max_entries``, the least recently used dropped first; 0 keeps nothing)."""

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries
        self._kept: OrderedDict[tuple, tuple[Any, ResonateError | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0                  # calls that reached a loader function (for tests and reports)

    def load(self, fn: Callable[..., Any], *args: Hashable) -> Any:
        key = (fn, *args)
        with self._lock:
            found = self._kept.get(key)
            if found is None:
                self.loads += 1
                try:
                    found = (fn(*args), None)
                except ResonateError as exc:
                    found = (None, exc)
                if self.max_entries:
                    self._kept[key] = found
                    while len(self._kept) > self.max_entries:
                        self._kept.popitem(last=False)
            else:
                self._kept.move_to_end(key)
        model, error = found
        if error is not None:
            raise error
        return model

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
