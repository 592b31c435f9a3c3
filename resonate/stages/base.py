"""What every stage is: a frozen config dataclass and a stream transform over (channels, n) blocks.

Two kinds: a :class:`Stage` changes the stream as it flows by; a :class:`TwoPassStage` must see
the whole stream before it changes any of it (loudness: one gain for the whole show), so the
pipeline feeds it everything that reaches it (``measure``), spooled to disk, and then streams the
spool through it (``apply``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from resonate.modelcache import ModelLoader

ProgressFn = Callable[[str, float], None]

log = logging.getLogger("resonate")


@dataclass
class StageContext:
    """What a stage may know about the job. Filled in by the pipeline before ``open``."""

    sample_rate: int
    channels: int
    total_frames: int | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    models_dir: Path | None = None
    input_path: Path | None = None
    output_path: Path | None = None     # where the job writes (a stage may refuse to read it)
    stems_dir: Path | None = None       # where the separate stage writes stems, if asked
    output_format: dict[str, Any] = field(default_factory=dict)  # format/bit_depth/mp3_bitrate for side outputs
    cache_dir: Path | None = None
    # The rate of the blocks ``Stage.measure_source`` sees: the recording's own, as read.
    source_sample_rate: int | None = None
    warn: Callable[[str], None] = log.warning
    # The job environment's loader (models load once per environment); one made by hand keeps nothing.
    models: ModelLoader = field(default_factory=lambda: ModelLoader(max_entries=0))


class Stage(ABC):
    """One processing step.

    ``stream`` receives float32 blocks of shape (channels, n) and yields float32 blocks with the
    same channel count; the total number of samples out equals the total in (a stage with
    latency buffers internally and flushes at the end). State carries across blocks.
    ``open`` may raise :class:`resonate.errors.StageUnavailable`; the chain then runs without
    this stage and the report says why.
    """

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def idle_reason(self) -> str | None:
        """Why this stage has nothing to do with its settings (e.g. match without a reference), or
        None. An idle stage is not opened; the report lists it as skipped with this reason, no warning."""
        return None

    def open(self, ctx: StageContext) -> None:  # noqa: B027 - optional hook
        """Load models, reset state. Called once per file, before ``stream``."""

    @abstractmethod
    def stream(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        ...

    # True: the pipeline also shows this stage the recording as it was read, before any stage
    # changed it (``measure_source``, during pass 1): what the recording itself is (its bandwidth)
    # can be hidden by what the stages before this one did to it.
    measures_source: ClassVar[bool] = False

    def measure_source(self, block: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Pass 1, when ``measures_source``: one block of the recording as read (in order, at
        ``StageContext.source_sample_rate``), before this stage sees anything of its own input."""

    def report(self) -> dict[str, Any]:
        """Extra fields for this stage's entry in the job report (model, device, ...)."""
        return {}

    def process(self, x: np.ndarray, ctx: StageContext) -> np.ndarray:
        """Whole-array convenience (tests, notebooks): same path as streaming."""
        self.open(ctx)
        parts = list(self.stream(iter([np.asarray(x, dtype=np.float32)])))
        if not parts:
            return np.zeros_like(x, dtype=np.float32)
        return np.concatenate(parts, axis=-1)


class TwoPassStage(Stage):
    """A stage that measures the whole stream reaching it before it processes any of it.

    The pipeline runs it in two steps. Pass 1: every block that reaches the stage goes to
    ``measure`` while it is spooled to disk; then ``plan`` may read the spooled stream again
    (``reread()`` yields it afresh each call) to decide what to do. Pass 2: the spool streams
    through ``apply``, whose output goes on down the chain. Several two-pass stages chain: each
    is measured on what reaches it (the output of the stages before it, including an earlier
    two-pass stage's ``apply``). Two-pass stages and everything after the first of them run at
    the output's sample rate.
    """

    two_pass: ClassVar[bool] = True     # for code that inspects stage classes without importing this one

    @abstractmethod
    def measure(self, block: np.ndarray) -> None:
        """Pass 1: one block of the stream that reaches this stage (blocks come in order)."""

    def plan(self, reread: Callable[[], Iterable[np.ndarray]]) -> None:  # noqa: B027 - optional hook
        """Between the passes, after the last ``measure``: ``reread()`` yields the measured stream again."""

    @abstractmethod
    def apply(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Pass 2: the measured stream again, block by block; yields this stage's output."""

    def stream(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        return self.apply(blocks)

    def process(self, x: np.ndarray, ctx: StageContext) -> np.ndarray:
        """Whole-array convenience: measure, plan and apply, as the pipeline does."""
        x = np.asarray(x, dtype=np.float32)
        self.open(ctx)
        self.measure(x)
        self.plan(lambda: iter([x]))
        parts = list(self.apply(iter([x])))
        return np.concatenate(parts, axis=-1) if parts else np.zeros_like(x)
