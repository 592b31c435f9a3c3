import numpy as np
import pytest

from resonate.stages.base import StageContext
from resonate.stages.denoise import DenoiseConfig, DenoiseStage, spectral_gate
from resonate.stages.master import EQBand, MasterConfig, MasterStage

SR = 44100


def _sine(f, seconds=1.0, amp=0.1, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * f * t))[None].astype(np.float32)


def _rms_db(x):
    return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def _master(cfg, x):
    stage = MasterStage(cfg)
    return stage.process(x, StageContext(sample_rate=SR, channels=x.shape[0]))


FLAT = dict(highpass_hz=None, compressor=False, limiter=False)


def test_peak_band_boost_shows_in_band_energy():
    cfg = MasterConfig(**FLAT, bands=(EQBand(1000.0, 6.0, 1.0),))
    at_band, far = _sine(1000), _sine(100)
    assert _rms_db(_master(cfg, at_band)[:, 4410:]) - _rms_db(at_band[:, 4410:]) == pytest.approx(6.0, abs=0.3)
    assert _rms_db(_master(cfg, far)[:, 4410:]) - _rms_db(far[:, 4410:]) == pytest.approx(0.0, abs=0.3)


def test_shelves_and_highpass():
    cfg = MasterConfig(highpass_hz=80.0, compressor=False, limiter=False, high_shelf_hz=4000.0, high_shelf_db=4.0)
    assert _rms_db(_master(cfg, _sine(12000))[:, 4410:]) - _rms_db(_sine(12000)) == pytest.approx(4.0, abs=0.3)
    assert _rms_db(_master(cfg, _sine(20))[:, 4410:]) - _rms_db(_sine(20)) < -15


def test_compressor_reduces_dynamic_range():
    loud, quiet = _sine(440, amp=0.8), _sine(440, amp=0.05)
    cfg = MasterConfig(highpass_hz=None, limiter=False, comp_threshold_db=-20.0, comp_ratio=4.0)
    gain_loud = _rms_db(_master(cfg, loud)[:, 22050:]) - _rms_db(loud)
    gain_quiet = _rms_db(_master(cfg, quiet)[:, 22050:]) - _rms_db(quiet)
    assert gain_loud < -6 and abs(gain_quiet) < 0.5


def test_master_blocks_equal_whole():
    """Stateful plugins keep their state across blocks: no seams."""
    x = np.random.default_rng(0).standard_normal((2, SR)).astype(np.float32) * 0.3
    cfg = MasterConfig(bands=(EQBand(300.0, -3.0, 1.0),), low_shelf_db=2.0)
    whole = _master(cfg, x)
    stage = MasterStage(cfg)
    stage.open(StageContext(sample_rate=SR, channels=2))
    parts = np.concatenate(list(stage.stream(iter([x[:, :1000], x[:, 1000:30001], x[:, 30001:]]))), axis=-1)
    np.testing.assert_allclose(parts, whole, atol=1e-5)


def test_spectral_gate_reduces_stationary_noise_and_keeps_the_tone():
    rng = np.random.default_rng(1)
    noise = 0.02 * rng.standard_normal((1, SR * 3)).astype(np.float32)
    tone = _sine(440, 3.0, 0.2)
    noisy = tone + noise
    out = spectral_gate(noisy, SR, strength=1.0, noise_clip=noise[:, :SR])
    residual = out - tone
    assert _rms_db(residual) < _rms_db(noise) - 6
    assert abs(_rms_db(out) - _rms_db(tone)) < 0.5


def test_denoise_stage_finds_the_quietest_stretch(write_wav):
    rng = np.random.default_rng(2)
    x = 0.01 * rng.standard_normal((2, SR * 6)).astype(np.float32)
    x[:, SR * 3:] += np.repeat(_sine(440, 3.0, 0.3), 2, axis=0)
    path = write_wav(x, SR, subtype="FLOAT")
    stage = DenoiseStage(DenoiseConfig(strength=0.8))
    out = stage.process(x, StageContext(sample_rate=SR, channels=2, input_path=path, total_frames=x.shape[1]))
    assert stage.profile.startswith("quietest") and float(stage.profile.split(" at ")[1].split()[0]) < 1.5
    assert out.shape == x.shape
    assert _rms_db(out[:, : SR * 2]) < _rms_db(x[:, : SR * 2]) - 6   # noise-only part is gated


def test_denoise_user_noise_range(write_wav):
    x = 0.01 * np.random.default_rng(3).standard_normal((1, SR * 4)).astype(np.float32)
    path = write_wav(x, SR, subtype="FLOAT")
    stage = DenoiseStage(DenoiseConfig(noise_start_s=1.0, noise_end_s=2.0))
    stage.open(StageContext(sample_rate=SR, channels=1, input_path=path, total_frames=x.shape[1]))
    assert stage.profile == "1-2 s" and stage.noise_clip.shape == (1, SR)


def test_denoise_config_validation():
    with pytest.raises(ValueError):
        DenoiseConfig(strength=1.5)
    with pytest.raises(ValueError):
        DenoiseConfig(noise_start_s=2.0)
