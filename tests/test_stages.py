import numpy as np
import pytest

from resonate.dsp.spectral_gate import spectral_gate
from resonate.stages.base import StageContext
from resonate.stages.denoise import DenoiseConfig, DenoiseStage
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



@pytest.mark.parametrize("strength,with_clip", [(0.4, True), (0.8, False)])
def test_stationary_gate_matches_noisereduce(strength, with_clip):
    """Our stationary gate is noisereduce's algorithm, computed faster.

    noisereduce pads its mask with zeros at the ends of the frequency axis before smoothing,
    which pulls the DC and Nyquist bins down by up to ~3.5 dB; ours extends the edge values. So
    the outputs are compared between 80 Hz and 20 kHz (away from chunk ends), where the only
    difference left is float32 vs float64 arithmetic (measured about -100 dB). A real change to
    the algorithm (threshold, mask levels, smoothing) shows up at -40 dB or louder.
    """
    import noisereduce as nr
    from scipy import signal

    from tests.conftest import tone_mix

    cfg = DenoiseConfig()
    x = tone_mix(4, SR, 2, noise=0.05, seed=4)
    noise = (0.05 * np.random.default_rng(9).standard_normal((2, SR))).astype(np.float32) if with_clip else None
    ours = spectral_gate(x, SR, strength, True, noise, cfg.gate)
    ref = nr.reduce_noise(
        y=x, sr=SR, stationary=True, y_noise=noise, prop_decrease=strength, n_std_thresh_stationary=cfg.threshold_std,
        n_fft=cfg.n_fft, hop_length=cfg.n_fft // 4, freq_mask_smooth_hz=(cfg.freq_smooth_bins + 0.01) * SR / (cfg.n_fft / 2),
        time_mask_smooth_ms=cfg.time_smooth_ms, padding=0, n_jobs=1,
    )
    assert ours.shape == x.shape and ours.dtype == np.float32
    band = signal.butter(8, [80, 20000], btype="band", fs=SR, output="sos")
    a, b = (signal.sosfiltfilt(band, y, axis=-1)[:, 8192:-8192] for y in (ours, ref))
    assert _rms_db(a - b) - _rms_db(b) < -60
    assert _rms_db(x[:, 8192:-8192] - ref[:, 8192:-8192]) - _rms_db(b) > -30    # the gate did remove something

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


@pytest.mark.parametrize("seconds", [1.0, 61.3])
def test_quietest_stretch_spans_reads(write_wav, seconds):
    """The quiet stretch is found wherever it lies, also across the one-minute reads and in a
    last, partial quarter-second."""
    from resonate.stages.denoise import quietest_stretch

    sr = 8000
    n = int(seconds * sr)
    x = 0.2 * np.random.default_rng(5).standard_normal((2, n)).astype(np.float32)
    quiet = slice(n - int(0.6 * sr), n - int(0.1 * sr)) if seconds > 5 else slice(int(0.25 * sr), int(0.75 * sr))
    x[:, quiet] *= 0.01
    if seconds > 5:
        x[:, int(59.9 * sr): int(60.4 * sr)] *= 0.05   # quiet too, but louder; straddles a read
    start, stop = quietest_stretch(write_wav(x, sr, subtype="FLOAT"), sr, 0.5)
    assert stop - start == sr // 2
    assert abs(start - quiet.start) <= sr // 4


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


def _bass_and_air(seconds=2.0):
    """Bass notes (where a 30 Hz high-pass turns the phase most) over quiet noise."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(0.2 * np.sin(2 * np.pi * f * t + f) for f in (55.0, 82.5, 110.0, 165.0))
    x = x + 0.02 * np.random.default_rng(3).standard_normal(len(t))
    return x[None].astype(np.float32)


@pytest.mark.parametrize("freq", [25.0, 40.0, 110.0, 300.0, 1000.0, 12000.0])
def test_linear_phase_eq_has_the_filters_magnitude(freq):
    """Linear-phase mode changes the timing, not the tone: per frequency the same gain as the
    minimum-phase pedalboard filters."""
    eq = dict(highpass_hz=30.0, low_shelf_db=-3.0, bands=(EQBand(300.0, -4.0, 1.0),),
              high_shelf_hz=9000.0, high_shelf_db=3.0, compressor=False, limiter=False)
    x = _sine(freq, seconds=3.0)
    gains = [_rms_db(_master(MasterConfig(**eq, linear_phase=lp), x)[:, SR:2 * SR]) - _rms_db(x[:, SR:2 * SR])
             for lp in (True, False)]
    assert gains[0] == pytest.approx(gains[1], abs=0.1)


def test_linear_phase_high_pass_keeps_the_waveform():
    """The default 30 Hz high-pass (two first-order sections) in linear phase is the same
    magnitude with no phase at all: it equals zero-phase filtering (forward and backward through
    one first-order section) away from the edges. The minimum-phase one turns bass notes by up to
    60 degrees."""
    from scipy import signal

    from resonate.train.metrics import si_sdr

    x = _bass_and_air()
    linear = _master(MasterConfig(compressor=False, limiter=False), x)
    minimum = _master(MasterConfig(compressor=False, limiter=False, linear_phase=False), x)
    b, a = signal.butter(1, 30.0 / (SR / 2), "high")
    zero_phase = signal.filtfilt(b, a, x.astype(np.float64), axis=-1)
    middle = slice(SR // 2, -SR // 2)
    assert linear.shape == x.shape
    assert si_sdr(linear[:, middle], zero_phase[:, middle]) > 50.0
    assert si_sdr(linear, x) > 18.0 and si_sdr(minimum, x) < 6.0


def test_linear_phase_latency_is_removed():
    x = np.zeros((2, SR), np.float32)
    x[:, 20000] = 0.5
    cfg = MasterConfig(highpass_hz=40.0, low_shelf_db=2.0, compressor=False, limiter=False)
    stage = MasterStage(cfg)
    y = stage.process(x, StageContext(sample_rate=SR, channels=2))
    assert y.shape == x.shape
    assert np.all(np.argmax(np.abs(y), axis=-1) == 20000)
    assert stage.report()["eq_phase"].startswith("linear")
