"""Evaluation of the restore model on a pair folder, against the unprocessed input and noisereduce.

For every pair: SI-SDR (dB) and multi-resolution log-spectral distance (dB) of the input, of the
model's output and of noisereduce's output, all against the clean `_0` file. "Do no harm": every
clean file is also passed through the model and compared with itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from resonate.audio.resample import resample
from resonate.models.inference import Restorer
from resonate.models.io import load_model
from resonate.train.align import align_pair
from resonate.train.dataset import find_pairs, load_pair
from resonate.train.metrics import log_spectral_distance, si_sdr


@dataclass
class ClipResult:
    name: str
    sdr_input: float
    sdr_model: float
    sdr_nr: float
    lsd_input: float
    lsd_model: float
    lsd_nr: float
    clean_sdr: float      # model(clean) vs clean

    @property
    def gain_model(self) -> float:
        return self.sdr_model - self.sdr_input

    @property
    def gain_nr(self) -> float:
        return self.sdr_nr - self.sdr_input


def noisereduce_baseline(x: np.ndarray, sr: int, prop_decrease: float = 0.9) -> np.ndarray:
    import noisereduce

    y = noisereduce.reduce_noise(y=x, sr=sr, stationary=True, prop_decrease=prop_decrease)
    return np.asarray(y, dtype=np.float32).reshape(x.shape)


def evaluate_folder(weights: str, data_dir: str, device: torch.device, align: bool = False, max_clips: int = 0,
                    strength: float = 1.0, log=print) -> list[ClipResult]:
    model = load_model(weights, device)
    restorer = Restorer(model, device, strength=strength)
    model_sr = model.config.sample_rate
    pairs = find_pairs(data_dir)
    if max_clips:
        pairs = pairs[:max_clips]
    results = []
    clean_scores: dict[str, float] = {}
    for pair in pairs:
        clean, noisy, sr = load_pair(pair)
        if align or clean.shape[-1] != noisy.shape[-1]:
            clean, noisy, _ = align_pair(clean, noisy, sr)
        n = min(clean.shape[-1], noisy.shape[-1])
        clean, noisy = clean[:, :n], noisy[:, :n]
        if noisy.shape[0] != clean.shape[0]:
            noisy = np.repeat(noisy.mean(axis=0, keepdims=True), clean.shape[0], axis=0)
        restored = resample(restorer.process(resample(noisy, sr, model_sr)), model_sr, sr)[:, :n]
        nr = noisereduce_baseline(noisy, sr)
        if pair.song not in clean_scores:
            clean_out = resample(restorer.process(resample(clean, sr, model_sr)), model_sr, sr)[:, :n]
            clean_scores[pair.song] = si_sdr(clean_out, clean)
        results.append(ClipResult(
            name=pair.recording.stem,
            sdr_input=si_sdr(noisy, clean), sdr_model=si_sdr(restored, clean), sdr_nr=si_sdr(nr, clean),
            lsd_input=log_spectral_distance(noisy, clean, sr), lsd_model=log_spectral_distance(restored, clean, sr),
            lsd_nr=log_spectral_distance(nr, clean, sr), clean_sdr=clean_scores[pair.song],
        ))
    return results


HEADER = ("clip", "SI-SDR in", "model", "gain", "NR", "NR gain", "LSD in", "model", "NR", "clean->model SI-SDR")


def format_table(results: list[ClipResult]) -> str:
    rows = [HEADER]
    for r in results:
        rows.append((r.name, f"{r.sdr_input:.2f}", f"{r.sdr_model:.2f}", f"{r.gain_model:+.2f}", f"{r.sdr_nr:.2f}",
                     f"{r.gain_nr:+.2f}", f"{r.lsd_input:.2f}", f"{r.lsd_model:.2f}", f"{r.lsd_nr:.2f}", f"{r.clean_sdr:.1f}"))
    m = lambda f: float(np.mean([f(r) for r in results]))  # noqa: E731
    rows.append(("MEAN", f"{m(lambda r: r.sdr_input):.2f}", f"{m(lambda r: r.sdr_model):.2f}",
                 f"{m(lambda r: r.gain_model):+.2f}", f"{m(lambda r: r.sdr_nr):.2f}", f"{m(lambda r: r.gain_nr):+.2f}",
                 f"{m(lambda r: r.lsd_input):.2f}", f"{m(lambda r: r.lsd_model):.2f}", f"{m(lambda r: r.lsd_nr):.2f}",
                 f"{min(r.clean_sdr for r in results):.1f} (min)"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def summary(results: list[ClipResult]) -> dict:
    mean = lambda f: float(np.mean([f(r) for r in results]))  # noqa: E731
    return {
        "clips": len(results),
        "si_sdr_input": mean(lambda r: r.sdr_input), "si_sdr_model": mean(lambda r: r.sdr_model),
        "si_sdr_gain_model": mean(lambda r: r.gain_model), "si_sdr_gain_noisereduce": mean(lambda r: r.gain_nr),
        "lsd_input": mean(lambda r: r.lsd_input), "lsd_model": mean(lambda r: r.lsd_model),
        "lsd_noisereduce": mean(lambda r: r.lsd_nr),
        "clean_passthrough_si_sdr_min": float(min(r.clean_sdr for r in results)),
    }
