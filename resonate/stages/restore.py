"""The restore stage: our learned spectrogram U-Net removes hall reverb, crowd noise, PA colouring
and phone-mic damage. Any input rate (soxr to the model's rate and back), chunked overlap-add,
CUDA/MPS/CPU, a wet/dry `strength`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resonate.audio.resample import StreamResampler
from resonate.chunking import Counter, exact_length
from resonate.config import check_ranges, setting
from resonate.device import needs_fixed_shapes
from resonate.errors import ResonateError, StageUnavailable
from resonate.stages import register
from resonate.stages.base import Stage, StageContext

STRENGTH_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class RestoreConfig:
    strength: float = setting(1.0, label="Restoration strength (wet/dry)", range=STRENGTH_RANGE, step=0.05,
                              help="wet/dry of the restoration model: 0 = original, 1 = fully restored")
    adaptive: bool = setting(True, label="Adaptive amount (damage gate)",
                             help="let the model's damage gate decide per window how much to change: "
                                  "less where the recording is clean, more where it is badly damaged")
    weights: str = ""              # a .safetensors file; empty = the shipped model
    chunk_seconds: float = 8.0
    overlap_seconds: float = 1.0

    def __post_init__(self):
        check_ranges(self)


@register
class RestoreStage(Stage):
    name = "restore"
    Config = RestoreConfig

    def open(self, ctx: StageContext) -> None:
        from resonate.models.inference import Restorer
        from resonate.models.io import DEFAULT_WEIGHTS, load_model

        path = Path(self.config.weights) if self.config.weights else DEFAULT_WEIGHTS
        if not path.exists():
            raise StageUnavailable(f"restore model weights not found at {path}")
        try:
            model = ctx.models.load(load_model, path, ctx.device)
        except ResonateError as exc:
            raise StageUnavailable(str(exc)) from exc
        self.ctx = ctx
        self.weights_path = path
        self.model_rate = model.config.sample_rate
        self.restorer = Restorer(model, ctx.device, strength=self.config.strength,
                                 chunk_seconds=self.config.chunk_seconds, overlap_seconds=self.config.overlap_seconds,
                                 fixed_shape=needs_fixed_shapes(ctx.device), use_gate=self.config.adaptive)
        self._seconds_in = 0.0

    def stream(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        ctx = self.ctx
        source = Counter(np.asarray(b, dtype=np.float32) for b in blocks)
        if ctx.sample_rate == self.model_rate:
            out = self.restorer.stream(iter(source))
        else:
            down = StreamResampler(ctx.sample_rate, self.model_rate, ctx.channels)
            up = StreamResampler(self.model_rate, ctx.sample_rate, ctx.channels)
            # Resampling there and back can be off by a sample: trim/pad to the input's length.
            out = exact_length(up.stream(self.restorer.stream(down.stream(iter(source)))), source, (ctx.channels,))
        yield from out
        self._seconds_in += source.frames / ctx.sample_rate

    def report(self) -> dict:
        meta = {}
        try:
            from resonate.models.io import read_metadata

            meta = read_metadata(self.weights_path)
        except Exception:  # the report never fails a job
            pass
        return {
            "model": self.weights_path.name,
            "model_step": meta.get("step"),
            "device": str(self.ctx.device),
            "strength": self.config.strength,
            # What the damage gate applied per window (1 = the model as trained, 0 = nothing).
            "gate": _gate_summary(self.restorer.alphas) if self.restorer.gate is not None else None,
            "model_sample_rate": self.model_rate,
            # Model time only (resampling and the rest of the chain excluded).
            "realtime_factor": round(self.restorer.compute_s / self._seconds_in, 4) if self._seconds_in else None,
        }


def _gate_summary(alphas: list[float]) -> dict | None:
    if not alphas:
        return None
    a = np.asarray(alphas)
    return {"windows": int(a.size), "mean": round(float(a.mean()), 3), "min": round(float(a.min()), 3),
            "max": round(float(a.max()), 3)}
