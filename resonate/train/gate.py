"""Fitting the damage gate (``resonate.models.gate``) of a trained restore model.

1. ``collect``: run the model over training pairs, and over the clean targets of a quarter of
   them (clean music, where the best blend is none of the change), keeping for each window the
   gate's features and the inner products that give the blended output's SI-SDR in closed form.
2. ``fit``: full-batch AdamW on the mean capped SI-SDR of ``x + alpha (y - x)``; a held-out tenth
   of the windows is scored, not fitted.
3. The gate is written into the model's safetensors file (``gate.*`` tensors, ``gate_config``
   metadata), so a model and the gate fitted to it travel together.

Command: ``python -m resonate.train.commands fit-gate --model WEIGHTS --data data/restore_v3/train``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from resonate.models.gate import DamageGate, GateConfig, blend_stats, blended_si_sdr, window_features
from resonate.models.inference import Restorer
from resonate.models.io import load_model

CLEAN_EVERY = 4          # every 4th pair also contributes its clean target as an input


def _read(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float32", always_2d=True)[0].T


def collect(weights: str | Path, train_dir: str | Path, pairs: int, seed: int = 0,
            log=print) -> tuple[np.ndarray, np.ndarray]:
    """Features (windows, n_features) and blend statistics (windows, 6) of ``pairs`` training
    pairs picked at random (``{id}_1.wav`` recording, ``{id}_0.wav`` target), plus clean windows."""
    model = load_model(weights, "cpu")
    restorer = Restorer(model, "cpu", use_gate=False)    # the network alone, even if it has a gate
    sr = model.config.sample_rate
    recordings = sorted(Path(train_dir).glob("*_1.wav"))
    if not recordings:
        raise FileNotFoundError(f"no training pairs (*_1.wav) in {train_dir}")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(recordings), min(pairs, len(recordings)), replace=False))
    features, stats = [], []
    for k, i in enumerate(chosen):
        rec = recordings[i]
        x, t = _read(rec), _read(rec.with_name(rec.name.replace("_1.wav", "_0.wav")))
        n = min(x.shape[-1], t.shape[-1])
        x, t = x[:, :n], t[:, :n]
        if x.shape[0] != t.shape[0]:
            x = np.repeat(x.mean(axis=0, keepdims=True), t.shape[0], axis=0)
        cases = [x, t] if k % CLEAN_EVERY == 0 else [x]
        for inp in cases:
            y = restorer.process(inp)[:, :n]
            features.append(window_features(inp, y, sr))
            stats.append(blend_stats(inp, y, t))
        if k % 100 == 0:
            log(f"gate: {k}/{len(chosen)} pairs")
    return np.stack(features), np.stack(stats)


def fit(features: np.ndarray, stats: np.ndarray, config: GateConfig | None = None, steps: int = 1000,
        lr: float = 1e-2, weight_decay: float = 1.0, seed: int = 0, log=print) -> tuple[DamageGate, dict]:
    """The gate that maximises the mean capped SI-SDR of the blended windows. Returns it and the
    held-out figures (mean SI-SDR gain over the input at alpha 1 and with the gate).

    A fixed number of full-batch steps with strong weight decay and dropout: with a few hundred
    windows a larger or longer-trained gate learns the windows, not the damage (five-fold
    cross-validation on v4's outputs chose this; see docs/restore-model.md).
    """
    # A silent target (a crop after the song's end, say) has no SI-SDR: such windows teach nothing.
    usable = (stats[:, 5] > 1e-12) & (stats[:, 2] > 1e-12) & np.isfinite(features).all(axis=1)
    features, stats = features[usable], stats[usable]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(features))
    held = order[: max(1, len(order) // 10)]
    fit_idx = order[len(held):]
    f = torch.tensor(features, dtype=torch.float32)
    s = torch.tensor(stats, dtype=torch.float64)
    gate = DamageGate(config or GateConfig(n_features=features.shape[1]))
    gate.feature_mean.copy_(f[fit_idx].mean(0))
    gate.feature_std.copy_(f[fit_idx].std(0).clamp_min(1e-3))
    opt = torch.optim.AdamW(gate.parameters(), lr=lr, weight_decay=weight_decay)
    gate.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = -blended_si_sdr(gate(f[fit_idx]).double(), s[fit_idx]).mean()
        loss.backward()
        opt.step()
    gate.eval()
    with torch.no_grad():
        one = torch.ones(len(held), dtype=torch.float64)
        base = blended_si_sdr(torch.zeros_like(one), s[held])
        figures = {
            "windows": int(len(features)), "held_out": int(len(held)), "steps": steps,
            "held_gain_alpha1_db": round(float((blended_si_sdr(one, s[held]) - base).mean()), 3),
            "held_gain_gate_db": round(float((blended_si_sdr(gate(f[held]).double(), s[held]) - base).mean()), 3),
            "held_alpha_mean": round(float(gate(f[held]).mean()), 3),
        }
    log("gate: " + json.dumps(figures))
    return gate, figures
