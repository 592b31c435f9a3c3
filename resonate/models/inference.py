"""Running the restore model over long audio: chunked with the engine's overlap-add, wet/dry strength."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from resonate.chunking import OverlapAdd
from resonate.device import ModelThread
from resonate.models.spectral import compress, decompress, istft, stft
from resonate.models.unet import RestoreUNet


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Half precision only where it is safe and fast: bf16 on CUDA that has it, fp16 on other CUDA.

    The STFT and the mask arithmetic stay in float32 (see ``Restorer._run``); on CPU and MPS the
    model runs in float32.
    """
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Restorer:
    """Apply a RestoreUNet to (channels, n) float32 audio at the model's sample rate."""

    def __init__(self, model: RestoreUNet, device: torch.device | str = "cpu", strength: float = 1.0,
                 chunk_seconds: float = 8.0, overlap_seconds: float = 1.0, fixed_shape: bool = False,
                 use_gate: bool = True):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.strength = float(np.clip(strength, 0.0, 1.0))
        # The damage gate (when the weights carry one) sets per window how much of the model's
        # change is applied; ``strength`` scales that.
        self.gate = model.gate.cpu().eval() if use_gate and model.gate is not None else None
        self.alphas: list[float] = []     # the gate's choice per window, for the report
        sr, hop = model.config.sample_rate, model.config.hop
        # Chunks start on the STFT frame grid: the model is not invariant to sub-hop shifts, so
        # this is what makes chunked output equal the whole-clip output away from chunk edges.
        self.window = max(2, round(chunk_seconds * sr / hop)) * hop
        self.overlap = min(round(overlap_seconds * sr / hop), self.window // hop // 2) * hop
        self.fixed_shape = fixed_shape
        # The STFT pads each side by half a frame by reflection, which needs more samples than
        # that: clips shorter than one frame are zero-padded to a frame and cut back after.
        self.min_length = model.config.n_fft
        self.amp_dtype = autocast_dtype(self.device)
        self.compute_s = 0.0      # seconds spent in the model, for the stage's report
        self._thread = ModelThread(self.device)   # opened while a stream runs (see ModelThread)

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        if self.amp_dtype is None:
            return self.model(x)
        # Convolutions in half precision; STFT/iSTFT and the complex mask stay float32.
        cfg = self.model.config
        spec = compress(stft(x, cfg.n_fft, cfg.hop), cfg.compress_power)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            est = self.model.forward_spec(spec)
        est = est.to(torch.complex64)
        return istft(decompress(est, cfg.compress_power), cfg.n_fft, cfg.hop, x.shape[-1])

    def _forward(self, chunk: np.ndarray) -> np.ndarray:
        # Runs on the model thread: inference mode is per thread, so it is entered here.
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).to(self.device)
            return self._model(x).float().cpu().numpy()

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """One window: (channels, n) -> (channels, n). Channels are a batch for the model."""
        start = time.perf_counter()
        y = self._thread.run(self._forward, chunk)
        amount = self.strength
        if self.gate is not None:
            alpha = self.gate.alpha(chunk, y, self.model.config.sample_rate)
            self.alphas.append(alpha)
            amount *= alpha
        self.compute_s += time.perf_counter() - start
        if amount != 1.0:
            y = chunk + amount * (y - chunk)
        return y.astype(np.float32)

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        if self.strength == 0.0:
            yield from blocks
            return
        with ModelThread(self.device) as self._thread:
            yield from OverlapAdd(self._run, self.window, self.overlap, self.fixed_shape,
                                  min_length=self.min_length).stream(blocks)

    def process(self, x: np.ndarray) -> np.ndarray:
        parts = list(self.stream([np.asarray(x, dtype=np.float32)]))
        return np.concatenate(parts, axis=-1) if parts else np.zeros_like(x, dtype=np.float32)
