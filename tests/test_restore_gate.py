"""The damage gate (resonate.models.gate): what it measures, how it is fitted, how it travels with
the restore model's weights and how the Restorer applies it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resonate.models.gate import (
    CHANGE_FLOOR,
    DamageGate,
    GateConfig,
    blend_stats,
    blended_si_sdr,
    window_features,
)
from resonate.models.inference import Restorer
from resonate.models.io import load_model, read_metadata, save_weights
from resonate.models.unet import RestoreUNet, RestoreUNetConfig
from resonate.train.gate import fit
from resonate.train.metrics import si_sdr

SR = 44100


def music(rng: np.random.Generator, seconds: float = 2.0) -> np.ndarray:
    """Harmonic tones with a little vibrato and note changes, stereo."""
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    for _ in range(3):
        f0 = rng.uniform(110, 440)
        note = 1 + 0.5 * (np.sin(2 * np.pi * rng.uniform(0.5, 2) * t) > 0)
        for k in range(1, 8):
            out += np.sin(2 * np.pi * f0 * k * note * t + rng.uniform(0, 6)) / k
    out /= np.abs(out).max()
    return np.stack([out, np.roll(out, 37)]).astype(np.float32) * 0.3


def highband_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal((2, n)))
    spec[:, : n * 2000 // SR] = 0
    return (np.fft.irfft(spec, n) * 0.05).astype(np.float32)


def lowpass(x: np.ndarray, hz: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    spec[:, int(x.shape[-1] * hz / SR):] = 0
    return np.fft.irfft(spec, x.shape[-1]).astype(np.float32)


def test_features_do_not_depend_on_level():
    rng = np.random.default_rng(0)
    x = music(rng) + highband_noise(rng, 2 * SR)
    y = x - 0.5 * highband_noise(np.random.default_rng(9), 2 * SR)
    for gain in (1e-3, 3.0):
        np.testing.assert_allclose(window_features(gain * x, gain * y, SR), window_features(x, y, SR), atol=1e-3)


def test_a_change_that_only_scales_reads_as_no_change():
    x = music(np.random.default_rng(1))
    band_change = window_features(x, 0.9 * x, SR)[:7]                # dB, floored at CHANGE_FLOOR
    np.testing.assert_allclose(band_change, 10 * np.log10(CHANGE_FLOOR), atol=0.01)
    assert window_features(x, x + 0.1 * np.roll(x, 1000, axis=-1), SR)[:7].max() > -30


def test_closed_form_blend_score_equals_si_sdr():
    rng = np.random.default_rng(2)
    t = music(rng)
    x = t + highband_noise(rng, t.shape[-1])
    y = t + 0.3 * highband_noise(rng, t.shape[-1])
    stats = torch.tensor(blend_stats(x, y, t))
    for alpha in (0.0, 0.4, 1.0, 1.3):
        expected = si_sdr(x + alpha * (y - x), t)
        assert float(blended_si_sdr(torch.tensor(alpha, dtype=torch.float64), stats, cap_db=200)) == pytest.approx(expected, abs=1e-3)


def test_fitted_gate_applies_a_useful_change_and_refuses_a_harmful_one():
    """Two kinds of window: a recording whose high-band noise the "model" removed (the change is
    wanted: best alpha >= 1) and clean music whose bass the "model" cut (best alpha 0)."""
    rng = np.random.default_rng(3)
    features, stats, kinds = [], [], []
    for i in range(160):
        t = music(rng, 1.0)
        if i % 2 == 0:
            noise = highband_noise(rng, t.shape[-1]) * rng.uniform(0.5, 2)
            x, y = t + noise, t + rng.uniform(0.1, 0.5) * noise
        else:
            x, y = t, t - rng.uniform(0.3, 0.8) * lowpass(t, 300)
        features.append(window_features(x, y, SR))
        stats.append(blend_stats(x, y, t))
        kinds.append(i % 2)
    gate, figures = fit(np.stack(features), np.stack(stats), GateConfig(hidden=8), steps=1500, lr=1e-2)
    alphas = gate(torch.tensor(np.stack(features))).detach().numpy()
    kinds = np.array(kinds)
    assert alphas[kinds == 0].mean() > 0.9
    assert alphas[kinds == 1].mean() < 0.1
    assert figures["held_gain_gate_db"] > figures["held_gain_alpha1_db"]


def tiny_model() -> RestoreUNet:
    torch.manual_seed(0)
    model = RestoreUNet(RestoreUNetConfig(channels=(4, 4, 4, 4), bottleneck_dim=8, dilations=(1, 2)))
    for p in model.parameters():            # away from the identity, so the model changes its input
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def test_gate_travels_in_the_weights_file(tmp_path):
    model = tiny_model()
    model.gate = DamageGate(GateConfig(hidden=4)).eval()
    torch.nn.init.normal_(model.gate.net[-1].weight, std=1.0)
    path = save_weights(model, tmp_path / "m.safetensors", {"step": 7})
    loaded = load_model(path)
    assert loaded.gate is not None and read_metadata(path)["step"] == "7"
    f = torch.randn(5, model.gate.config.n_features)
    torch.testing.assert_close(loaded.gate(f), model.gate(f))


def test_restorer_applies_alpha_times_the_change(tmp_path):
    x = music(np.random.default_rng(4), 3.0)
    model = tiny_model()
    plain = Restorer(model, "cpu").process(x)
    assert si_sdr(plain, x) < 30                                 # the tiny model does change it
    model.gate = DamageGate(GateConfig(hidden=4)).eval()
    torch.nn.init.constant_(model.gate.net[-1].bias, -30.0)       # alpha ~ 0: nothing to repair
    np.testing.assert_allclose(Restorer(model, "cpu").process(x), x, atol=1e-6)
    half = Restorer(model, "cpu", use_gate=False, strength=0.5).process(x)
    np.testing.assert_allclose(half, x + 0.5 * (plain - x), atol=1e-5)
    torch.nn.init.constant_(model.gate.net[-1].bias, 0.0)         # alpha = max_alpha / 2 everywhere
    gated = Restorer(model, "cpu").process(x)
    np.testing.assert_allclose(gated, x + model.gate.config.max_alpha / 2 * (plain - x), atol=1e-5)
