"""The extend stage: cutoff detection, full band untouched, nothing added below the cutoff,
streaming equal to whole-file, any rate, strength, and the weights' safetensors round trip."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy import signal

from resonate.dsp.bandwidth import LongTermSpectrum, detect_cutoff
from resonate.errors import ResonateError, StageUnavailable
from resonate.models.extend import (
    DEFAULT_EXTEND_WEIGHTS,
    BandExtender,
    EnvelopeNet,
    EnvelopeNetConfig,
    load_extend_model,
    save_extend_weights,
)
from resonate.stages import STAGE_ORDER, load_registry
from resonate.stages.base import StageContext
from resonate.stages.extend import FULL_BAND, ExtendConfig, ExtendStage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = EnvelopeNetConfig(hidden=16, dilations=(1, 2))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A small random envelope model: what is tested here must hold for any weights."""
    torch.manual_seed(0)
    return save_extend_weights(EnvelopeNet(TINY), tmp_path_factory.mktemp("extend") / "tiny.safetensors")


def noise(seconds: float, sr: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, int(seconds * sr)))).astype(np.float32)


@functools.lru_cache(maxsize=4)
def harmonic_music(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Synthetic "music": a sequence of chords of harmonic notes (partials up to Nyquist, falling
    as 1/k), each note with an attack and decay, over a quiet hi-hat-like noise. Full band."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    note = int(0.25 * sr)
    t = np.arange(note) / sr
    env = np.minimum(1.0, t / 0.01) * np.exp(-t / 0.15)
    tones = {}
    for f0 in (110.0, 146.8, 196.0, 220.0, 261.6, 329.6, 392.0):
        ks = np.arange(1, int(0.5 * sr / f0))
        phases = rng.uniform(0, 2 * np.pi, len(ks))
        tones[f0] = env * sum(np.sin(2 * np.pi * f0 * k * t + p) / k for k, p in zip(ks, phases))
    out = 0.003 * rng.standard_normal(n)
    for start in range(0, n - note, note // 2):
        for f0 in rng.choice(list(tones), size=3, replace=False):
            out[start: start + note] += 0.05 * tones[f0]
    out.setflags(write=False)
    return np.stack([out, 0.9 * out]).astype(np.float32)


def band_limit(x: np.ndarray, sr: int, cutoff: float, order: int = 10) -> np.ndarray:
    sos = signal.butter(order, cutoff, "lowpass", fs=sr, output="sos")
    return signal.sosfiltfilt(sos, x, axis=-1).astype(np.float32)


def cutoff_of(x: np.ndarray, sr: int) -> float | None:
    spectrum = LongTermSpectrum(sr, x.shape[0])
    for i in range(0, x.shape[-1], 10007):            # blocks of any length
        spectrum.update(x[:, i: i + 10007])
    return detect_cutoff(spectrum.power, sr).cutoff_hz


@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("cutoff", [7000.0, 9500.0, 12000.0, 15000.0])
def test_cutoff_of_band_limited_noise_within_500_hz(sr, cutoff):
    found = cutoff_of(band_limit(noise(6.0, sr), sr, cutoff), sr)
    assert found is not None and abs(found - cutoff) < 500.0


@pytest.mark.parametrize("cutoff", [8000.0, 11000.0, 14000.0])
def test_cutoff_of_band_limited_music_within_500_hz(cutoff):
    sr = 44100
    music = harmonic_music(8.0, sr)
    assert cutoff_of(music, sr) is None                   # the music itself is full band
    found = cutoff_of(band_limit(music, sr, cutoff), sr)
    assert found is not None and abs(found - cutoff) < 500.0


def test_brick_wall_cutoff_like_an_encoder():
    sr = 44100
    x = noise(4.0, sr)
    spec = np.fft.rfft(x, axis=-1)
    spec[:, np.fft.rfftfreq(x.shape[-1], 1 / sr) > 11000.0] = 0.0
    found = cutoff_of(np.fft.irfft(spec, n=x.shape[-1], axis=-1).astype(np.float32), sr)
    assert found is not None and abs(found - 11000.0) < 500.0


def test_full_band_and_gently_sloping_spectra_have_no_cutoff():
    sr = 44100
    white = noise(4.0, sr)
    pink = signal.lfilter([1.0], [1.0, -0.95], white, axis=-1).astype(np.float32)
    tilted = band_limit(white, sr, 6000.0, order=1)                   # 6 dB/octave: highs quieter, not gone
    for x in (white, pink, tilted):
        assert cutoff_of(x, sr) is None


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    ref, est = reference.ravel().astype(np.float64), estimate.ravel().astype(np.float64)
    target = ref * (est @ ref) / (ref @ ref)
    return 10 * np.log10((target @ target) / ((est - target) @ (est - target) + 1e-20))


def test_full_band_input_passes_unchanged(tiny_weights):
    sr = 44100
    x = harmonic_music(6.0, sr)
    stage = ExtendStage(ExtendConfig(weights=str(tiny_weights)))
    y = stage.process(x, StageContext(sr, 2))
    assert y.shape == x.shape and si_sdr(y, x) >= 30.0
    report = stage.report()
    assert report["detected_cutoff_hz"] is None and not report["extended"] and report["note"] == FULL_BAND


def test_cutoff_above_the_limit_counts_as_full_band(tiny_weights):
    sr = 44100
    x = band_limit(noise(4.0, sr), sr, 18000.0)
    stage = ExtendStage(ExtendConfig(weights=str(tiny_weights)))
    y = stage.process(x, StageContext(sr, 2))
    np.testing.assert_array_equal(y, x)
    assert stage.report()["note"].startswith(FULL_BAND) and stage.report()["detected_cutoff_hz"] > 17000


def band_energy(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spec = np.fft.rfft(x.astype(np.float64), axis=-1)
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / sr)
    return float((np.abs(spec[:, (freqs >= lo) & (freqs < hi)]) ** 2).sum())


@pytest.mark.parametrize("source", ["noise", "music"])
def test_adds_the_band_above_the_cutoff_and_nothing_below(tiny_weights, source):
    sr = 44100
    clean = noise(6.0, sr) if source == "noise" else harmonic_music(6.0, sr)
    x = band_limit(clean, sr, 9000.0)
    stage = ExtendStage(ExtendConfig(weights=str(tiny_weights), top_hz=18000.0))
    y = stage.process(x, StageContext(sr, 2))
    report = stage.report()
    cutoff = report["detected_cutoff_hz"]
    assert report["extended"] and report["added_band_hz"][0] == pytest.approx(cutoff, abs=25)
    added = y - x
    total_added = band_energy(added, sr, 0.0, sr / 2)
    # Below the cutoff only what the STFT's windows leak: 40 dB under what was added (this random
    # model adds more than the input holds) and under what the input has there.
    leaked, near = band_energy(added, sr, 20.0, cutoff - 300.0), band_energy(added, sr, cutoff - 300.0, cutoff)
    assert leaked < 1e-4 * total_added and leaked < 1e-4 * band_energy(x, sr, 20.0, cutoff - 300.0)
    assert near < 1e-3 * total_added
    # Above it: a band where the input had (almost) nothing, and nothing above the top.
    assert band_energy(added, sr, cutoff + 500.0, 17500.0) > 1e3 * band_energy(x, sr, cutoff + 500.0, 17500.0)
    assert band_energy(added, sr, 18500.0, sr / 2) < 1e-4 * band_energy(added, sr, cutoff, 18000.0)
    assert report["added_db"] is not None and np.isfinite(report["added_db"])


def test_the_shipped_model_adds_nothing_below_the_cutoff():
    sr = 44100
    x = band_limit(harmonic_music(6.0, sr) + noise(6.0, sr, seed=2), sr, 10000.0)
    stage = ExtendStage()
    added = stage.process(x, StageContext(sr, 2)) - x
    cutoff = stage.report()["detected_cutoff_hz"]
    assert abs(cutoff - 10000.0) < 500.0
    assert band_energy(added, sr, 20.0, cutoff - 300.0) < 1e-5 * band_energy(x, sr, 20.0, cutoff - 300.0)
    assert band_energy(added, sr, cutoff + 1000.0, 19000.0) > 10 * band_energy(x, sr, cutoff + 1000.0, 19000.0)


def test_adds_only_the_power_the_band_lacks():
    # A codec may still code part of the band above its cutoff. What is added there is the power
    # the input lacks under the predicted level: nothing where the input already holds more, all
    # of it where the input holds 20 dB less.
    sr, cutoff = 44100, 9000.0
    low = band_limit(harmonic_music(6.0, sr) + noise(6.0, sr, seed=2), sr, cutoff)
    model = load_extend_model()
    empty_added = BandExtender(model, sr, cutoff, 18000.0).process(low) - low
    target = band_energy(empty_added, sr, cutoff + 500.0, 17500.0)
    high = signal.sosfiltfilt(signal.butter(8, [cutoff + 200.0, 18000.0], "bandpass", fs=sr, output="sos"),
                              noise(6.0, sr, seed=3), axis=-1)
    high *= np.sqrt(target / band_energy(high, sr, cutoff + 500.0, 17500.0))

    def added_over(scale):
        x = (low + scale * high).astype(np.float32)
        return band_energy(BandExtender(model, sr, cutoff, 18000.0).process(x) - x, sr, cutoff + 500.0, 17500.0)

    assert added_over(10.0) < 1e-3 * target          # 20 dB over the predicted level: nothing added
    assert added_over(0.1) > 0.9 * target            # 20 dB under it: (almost) all of it added
    assert 0.2 * target < added_over(0.7) < 0.8 * target  # half the power there: about half added


def test_streaming_equals_whole_file(tiny_weights):
    sr = 44100
    x = band_limit(noise(5.0, sr), sr, 10000.0)
    cfg = ExtendConfig(weights=str(tiny_weights), chunk_seconds=1.0, overlap_seconds=0.25)
    whole = ExtendStage(cfg).process(x, StageContext(sr, 2))
    stage = ExtendStage(cfg)
    stage.open(StageContext(sr, 2))
    for i in range(0, x.shape[-1], 4096):
        stage.measure(x[:, i: i + 4096])
    stage.plan(lambda: iter([x]))
    streamed = np.concatenate(list(stage.apply(iter([x[:, i: i + 3001] for i in range(0, x.shape[-1], 3001)]))), axis=-1)
    assert stage.report()["extended"]
    np.testing.assert_array_equal(streamed, whole)


def test_chunk_seams_do_not_click(tiny_weights):
    """Overlap-add seams: the added band is as smooth across a chunk boundary as inside a chunk."""
    sr = 44100
    x = band_limit(noise(4.0, sr), sr, 9000.0)
    chunked = ExtendStage(ExtendConfig(weights=str(tiny_weights), chunk_seconds=1.0, overlap_seconds=0.25))
    one = ExtendStage(ExtendConfig(weights=str(tiny_weights), chunk_seconds=8.0))
    a = chunked.process(x, StageContext(sr, 2)) - x
    b = one.process(x, StageContext(sr, 2)) - x
    # The same band at the same level either way (a seam would add broadband energy).
    assert band_energy(a, sr, 20.0, 8500.0) < 1e-4 * band_energy(a, sr, 0.0, sr / 2)
    assert 0.8 < band_energy(a, sr, 9500.0, 19000.0) / band_energy(b, sr, 9500.0, 19000.0) < 1.25


@pytest.mark.parametrize("sr,cutoff,extends", [(16000, 5500.0, True), (22050, 8000.0, True), (16000, None, False),
                                               (96000, 12000.0, True)])
def test_any_rate(tiny_weights, sr, cutoff, extends):
    x = noise(3.0, sr, channels=1)
    if cutoff:
        x = band_limit(x, sr, cutoff)
    stage = ExtendStage(ExtendConfig(weights=str(tiny_weights)))
    y = stage.process(x, StageContext(sr, 1))
    report = stage.report()
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert report["extended"] is extends
    if extends:
        lo, hi = report["added_band_hz"]
        assert abs(lo - cutoff) < 500.0 and hi < sr / 2        # never above Nyquist
    else:
        np.testing.assert_array_equal(y, x)


def test_strength_scales_what_is_added(tiny_weights):
    sr = 44100
    x = band_limit(noise(3.0, sr), sr, 9000.0)
    ctx = StageContext(sr, 2)
    full = ExtendStage(ExtendConfig(weights=str(tiny_weights))).process(x, ctx) - x
    half = ExtendStage(ExtendConfig(weights=str(tiny_weights), strength=0.5)).process(x, ctx) - x
    off = ExtendStage(ExtendConfig(weights=str(tiny_weights), strength=0.0))
    np.testing.assert_allclose(half, 0.5 * full, atol=1e-6)
    np.testing.assert_array_equal(off.process(x, ctx), x)
    assert not off.report()["extended"]


def test_tiny_model_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(1)
    model = EnvelopeNet(TINY).eval()
    with torch.no_grad():                                 # fp16 is what is stored: compare with that
        for p in model.parameters():
            p.copy_(p.half().float())
    path = save_extend_weights(model, tmp_path / "m.safetensors", extra={"step": 7})
    loaded = load_extend_model(path)
    assert loaded.config == TINY
    features = torch.randn(2, 2 * TINY.n_bands + 1, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(features), model(features))
    # Not ours, or missing: a clear error, and the stage is skipped with the reason.
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ResonateError, match="not a Resonate bandwidth-extension model"):
        load_extend_model(foreign)
    with pytest.raises(StageUnavailable):
        ExtendStage(ExtendConfig(weights=str(tmp_path / "absent.safetensors"))).open(StageContext(44100, 2))


def _hiss(x: np.ndarray, sr: int, db: float) -> np.ndarray:
    """x plus white noise ``db`` under its level: the faint sound a restoration leaves above a
    phone's roll-off, enough to hide the recording's cliff."""
    return (x + noise(x.shape[-1] / sr, sr, x.shape[0], seed=7) * (np.std(x) / 0.1 * 10 ** (db / 20))).astype(np.float32)


def test_the_cutoff_hidden_by_the_stages_before_is_found_on_the_recording(tiny_weights):
    sr = 44100
    recording = band_limit(harmonic_music(6.0, sr), sr, 6000.0)
    reaching = _hiss(recording, sr, -30.0)
    assert cutoff_of(reaching, sr) is None            # what reaches the stage looks full band
    stage = ExtendStage(ExtendConfig(weights=str(tiny_weights)))
    stage.open(StageContext(sr, 2, source_sample_rate=sr))
    for i in range(0, recording.shape[-1], 44100):
        stage.measure_source(recording[:, i: i + 44100])
        stage.measure(reaching[:, i: i + 44100])
    stage.plan()
    y = np.concatenate(list(stage.apply(iter([reaching]))), axis=-1)
    report = stage.report()
    assert report["extended"] and report["cutoff_measured_on"] == "the recording as read"
    assert report["detected_cutoff_hz"] == pytest.approx(6000.0, abs=500)
    assert band_energy(y - reaching, sr, 7000.0, 17000.0) > 10 * band_energy(reaching, sr, 7000.0, 17000.0)
    # Without the recording (the whole-array path), the stage sees only what reaches it.
    alone = ExtendStage(ExtendConfig(weights=str(tiny_weights)))
    np.testing.assert_array_equal(alone.process(reaching, StageContext(sr, 2)), reaching)
    assert alone.report()["cutoff_measured_on"] == "its input"


def test_the_pipeline_shows_the_stage_the_recording_as_read(tiny_weights, tmp_path, monkeypatch):
    """Through the real chain: a stage before extend that fills the highs with faint hiss (as
    restoration does above a phone's roll-off) no longer hides the recording's cutoff."""
    import soundfile as sf

    from resonate import stages
    from resonate.pipeline import ChainSettings, OutputOptions, process_file
    from resonate.stages.base import Stage
    from resonate.stages.denoise import DenoiseStage

    sr = 44100

    class Hiss(Stage):
        name = "denoise"
        Config = DenoiseStage.Config    # takes the place of denoise, settings and all

        def stream(self, blocks):
            for b in blocks:
                yield _hiss(b, sr, -30.0)

    monkeypatch.setitem(stages.REGISTRY, "denoise", Hiss)
    src, dst = tmp_path / "phone.wav", tmp_path / "out.wav"
    sf.write(src, band_limit(harmonic_music(6.0, sr), sr, 6000.0).T, sr, subtype="FLOAT")
    settings = ChainSettings(skip=("separate", "restore", "master", "loudness"),
                             overrides={"extend": {"weights": str(tiny_weights)}})
    report = process_file(src, dst, settings, OutputOptions(bit_depth="32f"))
    extend = next(s for s in report["stages"] if s["name"] == "extend")
    assert extend["extended"] and extend["cutoff_measured_on"] == "the recording as read"
    assert extend["detected_cutoff_hz"] == pytest.approx(6000.0, abs=500)


def test_registered_after_match_and_the_shipped_model_loads():
    assert load_registry()["extend"] is ExtendStage
    assert STAGE_ORDER.index("extend") == STAGE_ORDER.index("restore") + 2 == STAGE_ORDER.index("master") - 1
    model = load_extend_model(DEFAULT_EXTEND_WEIGHTS)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert DEFAULT_EXTEND_WEIGHTS.stat().st_size < 2_000_000


def test_app_shows_the_detected_cutoff_and_the_added_band(tmp_path, monkeypatch):
    """The Restore page: the cutoff the extend stage found, and the added band before and after."""
    import io
    from pathlib import Path

    import soundfile as sf
    from streamlit.testing.v1 import AppTest

    from resonate.ui.models import clear_model_cache

    monkeypatch.setenv("RESONATE_APP_CONFIG", str(tmp_path / "app.json"))
    monkeypatch.setenv("RESONATE_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("RESONATE_CACHE_DIR", str(tmp_path / "cache"))
    sr = 44100
    take = band_limit(0.5 * harmonic_music(4.0, sr) + noise(4.0, sr, seed=3), sr, 9000.0)
    buf = io.BytesIO()
    sf.write(buf, take.T, sr, format="WAV", subtype="PCM_16")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=240)
    try:
        at.run()
        at.file_uploader[0].set_value(("phone.wav", buf.getvalue(), "audio/wav")).run()
        next(w for w in at.toggle if w.key == "restore.cfg.separate.bypass").set_value(True).run()
        next(b for b in at.button if b.key == "restore.run").click().run()
        assert not at.exception, [e.value for e in at.exception]
        line = next(m.value for m in at.markdown if m.value.startswith("**Bandwidth extension.**"))
        found = float(line.split("Detected cutoff: ")[1].split(" kHz")[0])
        assert abs(found - 9.0) < 0.5 and "Regenerated" in line
        assert len(at.get("plotly_chart")) == 3        # waveform, spectrogram, and the added band
    finally:
        clear_model_cache()
