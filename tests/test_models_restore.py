"""The restore U-Net: identity at initialisation, size, weight files, chunked inference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from resonate.errors import ResonateError
from resonate.models.inference import Restorer
from resonate.models.io import DEFAULT_WEIGHTS, load_model, read_metadata, save_weights
from resonate.models.spectral import (
    compress,
    compress_parts,
    decompress,
    decompress_parts,
    istft,
    minimum_phase,
    stft,
)
from resonate.models.unet import RestoreUNet, RestoreUNetConfig, count_parameters

TINY = RestoreUNetConfig(sample_rate=8000, n_fft=256, hop=64, channels=(4, 8), first_factor=4,
                         bottleneck_dim=16, dilations=(1, 2))
TINY_EQ = dataclasses.replace(TINY, minphase_eq_seconds=0.5)
TINY_EQ_HEAD = dataclasses.replace(TINY_EQ, eq_head=True)
TINY_LEVEL = dataclasses.replace(TINY_EQ_HEAD, level_norm_seconds=0.5, level_norm_reference=0.5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _perturbed(config: RestoreUNetConfig, seed: int) -> RestoreUNet:
    """A model of this config moved off its identity initialisation (random, seeded)."""
    torch.manual_seed(seed)
    model = RestoreUNet(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


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
    # the real/imaginary-part versions the model uses are the same maps
    re, im = compress_parts(spec)
    assert torch.allclose(torch.complex(re, im), compress(spec), rtol=1e-5, atol=1e-7)
    assert torch.allclose(decompress_parts(re, im), spec, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("config", [TINY, TINY_EQ_HEAD, TINY_LEVEL], ids=["plain", "eq-head", "level-norm"])
def test_waveform_and_spectrum_entry_points_agree(config):
    model = _perturbed(config, seed=5)
    x = torch.from_numpy(_music_like(8000, 1.0))
    with torch.inference_mode():
        spec = compress(stft(x, config.n_fft, config.hop), config.compress_power)
        via_spec = istft(decompress(model.forward_spec(spec), config.compress_power), config.n_fft, config.hop, x.shape[-1])
        assert torch.allclose(model(x), via_spec, atol=1e-5)
        assert torch.allclose(model.forward_with_spec(x)[0], via_spec, atol=1e-5)


@pytest.mark.parametrize("config", [TINY, TINY_EQ, TINY_EQ_HEAD, TINY_LEVEL],
                         ids=["plain", "minphase-eq", "eq-head", "level-norm"])
def test_fresh_model_is_the_identity(config):
    torch.manual_seed(0)
    model = RestoreUNet(config).eval()
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


@pytest.mark.parametrize("config", [TINY, TINY_EQ, TINY_EQ_HEAD, TINY_LEVEL],
                         ids=["plain", "minphase-eq", "eq-head", "level-norm"])
def test_chunked_inference_matches_whole_clip(config):
    model = _perturbed(config, seed=2)
    x = _music_like(8000, 6.0)
    whole = Restorer(model, chunk_seconds=10.0).process(x)
    chunked = Restorer(model, chunk_seconds=2.0, overlap_seconds=0.5).process(x)
    assert chunked.shape == x.shape
    assert np.abs(whole - x).max() > 1e-3  # the perturbed model really changes the audio
    err = np.sqrt(np.mean((chunked - whole) ** 2) / np.mean(whole ** 2))
    assert err < 0.01


@pytest.mark.parametrize("gain_db", [-30.0, -12.0, 12.0])
def test_level_normalised_model_commutes_with_gain(gain_db):
    """model(g x) = g model(x): the output does not depend on how loud the recording is."""
    model = _perturbed(TINY_LEVEL, seed=6)
    x = torch.from_numpy(_music_like(8000, 2.0))
    g = 10 ** (gain_db / 20)
    with torch.inference_mode():
        y, y_scaled = model(x), model(g * x)
    assert (y - x).abs().max() > 1e-3          # the perturbed model really changes the audio
    assert torch.allclose(y_scaled, g * y, rtol=1e-3, atol=1e-5 * g)


def test_without_level_normalisation_the_output_depends_on_level():
    """The defect v4 removes: without the normaliser a trained mask acts differently on a quieter
    copy of the same recording (this is how v3 learned its training set's level)."""
    model = _perturbed(TINY_EQ_HEAD, seed=6)
    x = torch.from_numpy(_music_like(8000, 2.0))
    g = 10 ** (-30 / 20)
    with torch.inference_mode():
        y, y_scaled = model(x), model(g * x)
    assert not torch.allclose(y_scaled, g * y, rtol=1e-2, atol=1e-3 * g)


def test_minimum_phase_matches_a_known_filter():
    """The phase from the log magnitude alone equals the true phase of minimum-phase filters
    (a PA-style peaking EQ and low shelf, a phone mic's high- and low-pass)."""
    from scipy import signal

    from resonate.train.degrade import peaking, shelf

    sr, n_fft = 44100, 1024
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    band = (freqs > 300) & (freqs < 4000)
    def phase_error(sos, oversample=4):
        _, h = signal.sosfreqz(sos, worN=freqs, fs=sr)
        phase = minimum_phase(torch.tensor(np.log(np.maximum(np.abs(h), 1e-6))), n_fft, oversample).numpy()
        return np.abs(np.angle(np.exp(1j * (phase - np.angle(h)))))[band].max()

    assert phase_error(np.concatenate([peaking(1000, 8, 1.0, sr), shelf(120, 9, sr, high=False)])) < 0.05
    # Butterworth filters have zeros on the unit circle (infinite attenuation at DC/Nyquist), so
    # the floored log magnitude gives an approximate phase; the finer grid is what keeps it close.
    mic = np.concatenate([signal.butter(2, 150, "highpass", fs=sr, output="sos"), signal.butter(4, 6000, fs=sr, output="sos")])
    assert phase_error(mic) < 0.4 < phase_error(mic, oversample=1)


def test_minphase_eq_turns_a_mask_into_an_inverse_filter():
    """A mask that is a constant EQ, given the model's minimum-phase EQ phase, undoes a phone-mic
    style filter in magnitude and phase; the same mask with the noisy phase does much less."""
    from scipy import signal

    from resonate.train.metrics import si_sdr

    sr, cfg = 8000, TINY_EQ
    sos = np.concatenate([signal.butter(2, 300, "highpass", fs=sr, output="sos"), signal.butter(3, 2500, fs=sr, output="sos")])
    x = _music_like(sr, 2.0)
    y = torch.from_numpy(signal.sosfilt(sos, x, axis=-1).astype(np.float32))
    freqs = np.arange(cfg.bins) * sr / cfg.n_fft
    _, h = signal.sosfreqz(sos, worN=freqs, fs=sr)
    inverse = np.clip(1.0 / np.maximum(np.abs(h), 1e-3), 0.0, 20.0)
    spec = compress(stft(y, cfg.n_fft, cfg.hop), cfg.compress_power)
    mag = torch.tensor(inverse ** cfg.compress_power, dtype=torch.float32)[None, :, None].expand(2, -1, spec.shape[-1])
    phase = RestoreUNet(cfg)._minphase_eq_phase(mag)

    def render(rotation):
        est = torch.cat([mag * rotation * spec[:, : cfg.bins], spec[:, cfg.bins:]], dim=1)
        return istft(decompress(est, cfg.compress_power), cfg.n_fft, cfg.hop, y.shape[-1]).numpy()

    with_phase, magnitude_only = si_sdr(render(phase), x), si_sdr(render(torch.ones_like(phase)), x)
    # Measured: about +10 dB with the phase, -24 dB with the magnitude alone (the inverse is capped
    # at +26 dB, so the band edges stay imperfect).
    assert with_phase > 5 and with_phase > magnitude_only + 20


def test_strength_zero_is_bypass_and_half_is_the_mix():
    model = _perturbed(TINY, seed=3)
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


def test_eq_head_starts_as_the_model_it_was_grown_from():
    """Fine-tuning a model without the EQ head into one with it starts from the same output."""
    base = _perturbed(TINY_EQ, seed=4)
    grown = RestoreUNet(dataclasses.replace(TINY_EQ, eq_head=True)).eval()
    grown.load_compatible(base.state_dict())
    x = torch.from_numpy(_music_like(8000, 1.0))
    with torch.inference_mode():
        assert torch.equal(base(x), grown(x))
        # and the head does move the EQ once it has weights
        grown.ups[-1].pointwise.bias[5 * TINY.first_factor:] = 0.5
        _, _, eq_grown = grown.forward_with_spec(x)
        _, _, eq_base = base.forward_with_spec(x)
    assert torch.allclose(eq_grown, (eq_base + 0.5).clamp(max=eq_base.max().item() + 0.5), atol=1e-5)


def test_a_constant_mask_is_read_as_that_eq():
    """A mask that is the same in every frame is that EQ, for the minimum phase."""
    model = RestoreUNet(TINY_EQ)
    gain_db = torch.linspace(-12, 12, TINY_EQ.bins)
    mag = ((10 ** (gain_db / 20)) ** TINY_EQ.compress_power)[None, :, None].expand(2, -1, 40)
    eq = model.eq_gain(mag)
    assert torch.allclose(eq, (gain_db / 20 * np.log(10))[None, :, None].expand_as(eq), atol=1e-3)


def test_eq_shape_ignores_broadband_gain_and_is_limited():
    """With ``eq_shape_limit_db`` only the EQ's shape (and at most that much of it) sets the phase."""
    cfg = dataclasses.replace(TINY_EQ, eq_shape_limit_db=6.0)
    model = RestoreUNet(cfg)
    gain_db = torch.linspace(-12, 12, cfg.bins)                       # a tilt, mean 0 dB

    def eq_for(broadband_db):
        mag = ((10 ** ((gain_db + broadband_db) / 20)) ** cfg.compress_power)[None, :, None].expand(1, -1, 40)
        return model.eq_gain(mag)

    assert torch.allclose(eq_for(0.0), eq_for(-9.0), atol=1e-4)     # a broadband cut has no phase
    expected = (gain_db.clamp(-6, 6) / 20 * np.log(10))[None, :, None].expand(1, -1, 40)
    assert torch.allclose(eq_for(0.0), expected, atol=1e-3)


def test_on_cpu_the_model_runs_on_a_thread_of_its_own_that_ends_with_the_stream():
    import threading

    model = _perturbed(TINY, seed=3)
    seen: set[int] = set()
    forward = model.forward

    def spy(x):
        seen.add(threading.get_ident())
        return forward(x)

    model.forward = spy
    x = _music_like(8000, 5.0)
    before = threading.active_count()
    y = Restorer(model, chunk_seconds=2.0, overlap_seconds=0.5).process(x)
    assert seen and threading.get_ident() not in seen and len(seen) == 1   # one model thread
    assert threading.active_count() == before                             # and it is gone
    model.forward = forward
    np.testing.assert_array_equal(y, Restorer(model, chunk_seconds=2.0, overlap_seconds=0.5).process(x))
