"""The restore U-Net: identity at initialisation, size, weight files, chunked inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resonate.errors import ResonateError
from resonate.models.inference import Restorer
from resonate.models.io import DEFAULT_WEIGHTS, load_model, read_metadata, save_weights
from resonate.models.spectral import compress, decompress, istft, stft
from resonate.models.unet import RestoreUNet, RestoreUNetConfig, count_parameters

TINY = RestoreUNetConfig(sample_rate=8000, n_fft=256, hop=64, channels=(4, 8), first_factor=4,
                         bottleneck_dim=16, dilations=(1, 2))

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _music_like(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / (k + 1) for k, f in enumerate((220, 330, 445, 660)))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
    return (0.2 * np.stack([x, np.roll(x, 17)]) + 0.01 * rng.standard_normal((2, len(t)))).astype(np.float32)


def test_stft_compression_round_trip():
    x = torch.from_numpy(_music_like(8000, 1.0))
    spec = stft(x, 256, 64)
    back = istft(decompress(compress(spec)), 256, 64, x.shape[-1])
    assert torch.allclose(back, x, atol=1e-4)


def test_fresh_model_is_the_identity():
    torch.manual_seed(0)
    model = RestoreUNet(TINY).eval()
    x = torch.from_numpy(_music_like(8000, 1.0))
    with torch.inference_mode():
        y = model(x)
    assert y.shape == x.shape
    assert torch.allclose(y, x, atol=1e-4)


def test_shipped_size_is_within_budget():
    assert count_parameters(RestoreUNet(RestoreUNetConfig())) <= 12_000_000


def test_config_rejects_indivisible_frequency_axis():
    with pytest.raises(ValueError):
        RestoreUNet(RestoreUNetConfig(n_fft=200, channels=(4, 8, 16, 32, 64)))


def test_weights_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(1)
    model = RestoreUNet(TINY)
    for p in model.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    path = save_weights(model, tmp_path / "m.safetensors", {"step": 7})
    loaded = load_model(path)
    assert loaded.config == TINY
    assert read_metadata(path)["step"] == "7"
    x = torch.from_numpy(_music_like(8000, 0.5))
    with torch.inference_mode():
        assert torch.allclose(model.eval()(x), loaded(x), atol=1e-6)


def test_loading_a_foreign_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ResonateError):
        load_model(bad)
    with pytest.raises(ResonateError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_chunked_inference_matches_whole_clip():
    torch.manual_seed(2)
    model = RestoreUNet(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = _music_like(8000, 6.0)
    whole = Restorer(model, chunk_seconds=10.0).process(x)
    chunked = Restorer(model, chunk_seconds=2.0, overlap_seconds=0.5).process(x)
    assert chunked.shape == x.shape
    assert np.abs(whole - x).max() > 1e-3  # the perturbed model really changes the audio
    err = np.sqrt(np.mean((chunked - whole) ** 2) / np.mean(whole ** 2))
    assert err < 0.01


def test_strength_zero_is_bypass_and_half_is_the_mix():
    torch.manual_seed(3)
    model = RestoreUNet(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = _music_like(8000, 1.0)
    assert np.array_equal(Restorer(model, strength=0.0).process(x), x)
    full = Restorer(model, strength=1.0).process(x)
    half = Restorer(model, strength=0.5).process(x)
    assert np.allclose(half, 0.5 * full + 0.5 * x, atol=1e-5)


def test_shipped_weights_load_and_process_one_second():
    assert DEFAULT_WEIGHTS.exists(), "the trained restore model must ship with the repository"
    model = load_model(DEFAULT_WEIGHTS)
    sr = model.config.sample_rate
    x = _music_like(sr, 1.0)
    y = Restorer(model).process(x)
    assert y.shape == x.shape and np.isfinite(y).all()
    assert 0.1 < np.std(y) / np.std(x) < 10.0
