"""The restore stage in the engine's contract: any rate, any block size, length preserved, strength."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resonate.errors import StageUnavailable
from resonate.models.io import save_weights
from resonate.models.unet import RestoreUNet, RestoreUNetConfig
from resonate.stages import load_registry
from resonate.stages.base import StageContext
from resonate.stages.restore import RestoreConfig, RestoreStage

TINY = RestoreUNetConfig(sample_rate=16000, n_fft=256, hop=64, channels=(4, 8), first_factor=4,
                         bottleneck_dim=16, dilations=(1, 2))

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture()
def perturbed_weights(tmp_path):
    torch.manual_seed(0)
    model = RestoreUNet(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_weights(model, tmp_path / "tiny.safetensors")


def _signal(sr: int, channels: int, seconds: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = np.stack([np.sin(2 * np.pi * (300 + 100 * c) * t) for c in range(channels)])
    return (0.3 * x + 0.02 * np.random.default_rng(0).standard_normal(x.shape)).astype(np.float32)


def test_restore_is_registered():
    assert load_registry()["restore"] is RestoreStage


@pytest.mark.parametrize("sr,channels", [(16000, 2), (44100, 1), (48000, 2)])
def test_any_rate_and_channel_count_keeps_length(perturbed_weights, sr, channels):
    stage = RestoreStage(RestoreConfig(weights=str(perturbed_weights), chunk_seconds=1.0, overlap_seconds=0.25))
    x = _signal(sr, channels, 2.3)
    stage.open(StageContext(sample_rate=sr, channels=channels))
    blocks = [x[:, i: i + 3001] for i in range(0, x.shape[-1], 3001)]
    y = np.concatenate(list(stage.stream(iter(blocks))), axis=-1)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.corrcoef(x[0], y[0])[0, 1] > 0.5
    report = stage.report()
    assert report["model"] == "tiny.safetensors" and report["realtime_factor"] is not None


def test_streamed_blocks_equal_one_block(perturbed_weights):
    x = _signal(16000, 2, 3.0)
    cfg = RestoreConfig(weights=str(perturbed_weights), chunk_seconds=1.0, overlap_seconds=0.25)
    ctx = StageContext(sample_rate=16000, channels=2)
    whole = RestoreStage(cfg).process(x, ctx)
    stage = RestoreStage(cfg)
    stage.open(ctx)
    streamed = np.concatenate(list(stage.stream(iter([x[:, i: i + 1234] for i in range(0, x.shape[-1], 1234)]))), axis=-1)
    assert np.allclose(whole, streamed, atol=1e-5)


def test_strength_zero_passes_audio_through(perturbed_weights):
    x = _signal(16000, 2, 1.0)
    y = RestoreStage(RestoreConfig(weights=str(perturbed_weights), strength=0.0)).process(x, StageContext(16000, 2))
    assert np.array_equal(x, y)


def test_missing_weights_make_the_stage_unavailable(tmp_path):
    stage = RestoreStage(RestoreConfig(weights=str(tmp_path / "nope.safetensors")))
    with pytest.raises(StageUnavailable, match="not found"):
        stage.open(StageContext(sample_rate=44100, channels=2))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(StageUnavailable):
        RestoreStage(RestoreConfig(weights=str(broken))).open(StageContext(sample_rate=44100, channels=2))


def test_shipped_model_runs_in_the_stage():
    x = _signal(44100, 2, 1.0)
    y = RestoreStage().process(x, StageContext(sample_rate=44100, channels=2))
    assert y.shape == x.shape and np.isfinite(y).all()
