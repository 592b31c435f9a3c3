"""The match stage: a recording's long-term spectrum brought onto its studio version's.

Closed-form checks on synthetic music-like noise (pink noise in notes of random loudness, so
every band has a noise floor well below its average): a known EQ comes back undone, streaming
equals the whole file, the output is aligned with the input, clamps hold, nothing is boosted
where the recording has no content, several references crossfade, bad references are refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from resonate.pipeline import ChainSettings, process_file, stage_configs
from resonate.stages.base import StageContext
from resonate.stages.match import MatchConfig, MatchStage, Reference, SpectrumMeter

SR = 44100
ROOT = Path(__file__).resolve().parent.parent


def music_like(seconds: float, seed: int = 0, channels: int = 2) -> np.ndarray:
    """Pink noise in 0.25-s notes whose loudness varies over 30 dB (a band's floor is its quiet notes)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = rng.standard_normal((channels, n))
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / SR)
    spectrum[:, 1:] /= np.sqrt(f[1:] / 100)
    spectrum[:, 0] = 0
    x = np.fft.irfft(spectrum, n)
    notes = int(np.ceil(n / (SR // 4)))
    envelope = np.repeat(10 ** (-rng.uniform(0, 30, notes) / 20), SR // 4)[:n]
    x = x * envelope
    return (x / np.abs(x).max() * 0.5).astype(np.float32)


def peaking(x: np.ndarray, f0: float, gain_db: float, q: float) -> np.ndarray:
    """RBJ peaking EQ."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / SR
    alpha = np.sin(w) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w), 1 - alpha * a]
    den = [1 + alpha / a, -2 * np.cos(w), 1 - alpha / a]
    return signal.lfilter(b, den, x).astype(np.float32)


def band_db(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    meter = SpectrumMeter(SR)
    meter.update(x)
    return meter.band_centres, 10 * np.log10(meter.psd() @ meter.band_matrix + 1e-30)


def fir_response_db(stage: MatchStage, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    h = stage.filters[k]
    freqs, response = signal.freqz(h, worN=1 << 15, fs=SR)
    return freqs, 20 * np.log10(np.abs(response) + 1e-12)


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return music_like(40.0)


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory, source) -> Path:
    path = tmp_path_factory.mktemp("ref") / "studio.wav"
    sf.write(str(path), source[:, : 20 * SR].T, SR, subtype="FLOAT")
    return path


def coloured(x: np.ndarray) -> np.ndarray:
    """What a PA and a hall might do: boomy low-mids, a dip at 1 kHz, dull highs."""
    return peaking(peaking(peaking(x, 150, 6, 0.7), 1000, -5, 1.0), 6000, -8, 0.7)


def run(stage: MatchStage, x: np.ndarray) -> np.ndarray:
    return stage.process(x, StageContext(sample_rate=SR, channels=x.shape[0]))


def test_a_known_eq_comes_back_within_1_db_per_band(source, reference_file):
    clean = source[:, 20 * SR:]                 # another stretch of the same "song" than the reference
    recording = coloured(clean)
    # A third of an octave: the EQ's own features are that narrow (the default, one octave, suits
    # a reference that is another stretch of the song; here it is the same noise).
    out = run(MatchStage(MatchConfig(references=(str(reference_file),), smoothing_octaves=1 / 3)), recording)
    centres, out_db = band_db(out)
    _, clean_db = band_db(clean)
    _, rec_db = band_db(recording)
    bands = (centres >= 40) & (centres <= 16000)
    error = out_db - clean_db
    error -= np.median(error[bands])
    before = rec_db - clean_db
    before -= np.median(before[bands])
    assert np.abs(before[bands]).max() > 6          # the EQ was there
    assert np.abs(error[bands]).max() < 1.0, dict(zip(centres[bands].round(), error[bands].round(2)))


def test_a_difference_no_larger_than_the_songs_own_change_is_not_corrected(tmp_path, source):
    """A studio version whose sections alternate between bright and dull (+-6 dB at 6 kHz): its
    long-term spectrum is brighter than a flat stretch of the song, but by less than the song
    itself changes, so the margin leaves 6 kHz alone; without it the stage boosts there."""
    from resonate.stages.match import section_spread_db

    sections = [peaking(source[:, i: i + 5 * SR], 6000, 6 if (i // (5 * SR)) % 2 else -6, 0.7)
                for i in range(0, 20 * SR, 5 * SR)]
    path = tmp_path / "studio_sections.wav"
    sf.write(str(path), np.concatenate(sections, axis=-1).T, SR, subtype="FLOAT")
    recording = source[:, 20 * SR:]
    responses = {}
    for margin in (0.0, 1.0):
        stage = MatchStage(MatchConfig(references=(str(path),), variation_margin=margin))
        run(stage, recording)
        freqs, response = fir_response_db(stage)
        responses[margin] = response[np.argmin(np.abs(freqs - 6000))]
    assert responses[0.0] > 2.0, responses
    assert abs(responses[1.0]) < 0.25 * responses[0.0], responses
    # The spread itself: half the +-6 dB swing's 12 dB in that band, none far from it.
    freqs = np.fft.rfftfreq(4096, 1 / SR)
    flat = np.ones(len(freqs))
    swing = 10 ** (12 / 10 * np.exp(-np.log2(np.maximum(freqs, 1) / 6000) ** 2 / 0.1))
    spread = section_spread_db([flat, swing, flat, swing], freqs, octaves=1 / 24)
    assert spread[np.argmin(np.abs(freqs - 6000))] == pytest.approx(6.0, abs=0.2)
    assert spread[np.argmin(np.abs(freqs - 500))] < 0.1


def test_streaming_in_small_blocks_equals_the_whole_file_and_is_aligned(source, reference_file):
    recording = coloured(source[:, 20 * SR: 32 * SR])
    whole = run(MatchStage(MatchConfig(references=(str(reference_file),))), recording)
    stage = MatchStage(MatchConfig(references=(str(reference_file),)))
    stage.open(StageContext(sample_rate=SR, channels=2))
    rng = np.random.default_rng(1)
    cuts = np.unique(np.concatenate([[0], rng.integers(1, recording.shape[1], 300), [recording.shape[1]]]))
    blocks = [recording[:, a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    for b in blocks:
        stage.measure(b)
    stage.plan(lambda: iter(blocks))
    streamed = np.concatenate(list(stage.apply(iter(blocks))), axis=-1)
    assert streamed.shape == recording.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=2e-6)
    # Aligned: the output's cross-correlation with the input peaks at lag 0.
    lags = signal.correlation_lags(recording.shape[1], recording.shape[1])
    xc = signal.correlate(whole[0], recording[0], method="fft")
    assert lags[np.argmax(xc)] == 0
    # Strength 0 is the input itself, sample for sample.
    untouched = run(MatchStage(MatchConfig(references=(str(reference_file),), strength=0.0)), recording)
    np.testing.assert_allclose(untouched, recording, atol=1e-6)


def test_the_clamp_holds_and_strength_scales_the_correction(source, reference_file):
    recording = peaking(peaking(source[:, 20 * SR:], 3000, -20, 1.0), 300, 18, 1.0)
    stage = MatchStage(MatchConfig(references=(str(reference_file),), max_correction_db=6.0))
    run(stage, recording)
    freqs, response = fir_response_db(stage)
    assert abs(stage.corrections[0].gain_db).max() <= 6.0 + 1e-9
    assert response.max() < 6.2 and response.min() > -6.2
    assert response.min() < -5.5            # the cut reaches the clamp
    assert response.max() > 3.0             # the boost is there (how far also depends on the band's noise floor)
    half = MatchStage(MatchConfig(references=(str(reference_file),), max_correction_db=6.0, strength=0.5))
    run(half, recording)
    np.testing.assert_allclose(half.corrections[0].gain_db, 0.5 * stage.corrections[0].gain_db, atol=1e-9)


@pytest.mark.parametrize("case", ["codec cutoff", "noise floor"])
def test_no_boost_where_the_recording_has_no_content(source, reference_file, case):
    clean = source[:, 20 * SR:]
    sos = signal.butter(16, 8000, "low", fs=SR, output="sos")     # what a low-bitrate codec leaves
    recording = signal.sosfiltfilt(sos, clean).astype(np.float32)
    if case == "noise floor":   # steady hiss above the cutoff, as a phone's preamp adds
        hiss = np.random.default_rng(5).standard_normal(recording.shape) * 1e-4
        recording = recording + signal.sosfiltfilt(signal.butter(4, 8000, "high", fs=SR, output="sos"), hiss)
    stage = MatchStage(MatchConfig(references=(str(reference_file),)))
    run(stage, recording.astype(np.float32))
    freqs, response = fir_response_db(stage)
    above = freqs > 9000
    assert response[above].max() < 0.5
    if case == "codec cutoff":
        assert stage.report()["content_top_hz"][0] < 12000
    # Below the cutoff it still corrects (the lowpass's own slope starts there).
    assert np.abs(response[(freqs > 200) & (freqs < 5000)]).max() < 1.0


def test_several_references_crossfade_without_clicks(tmp_path, source):
    bright, dark = tmp_path / "bright.wav", tmp_path / "dark.wav"
    sf.write(str(bright), peaking(source[:, :15 * SR], 4000, 8, 0.7).T, SR, subtype="FLOAT")
    sf.write(str(dark), peaking(source[:, :15 * SR], 4000, -8, 0.7).T, SR, subtype="FLOAT")
    recording = source[:, 20 * SR: 40 * SR]
    refs = (f"{bright}@0:00-0:10", f"{dark}@0:10-0:20")
    stage = MatchStage(MatchConfig(references=refs, crossfade_s=2.0))
    out = run(stage, recording)
    assert out.shape == recording.shape
    # Closed form: each reference's FIR over the whole recording, blended by raised cosines over
    # 9-11 s (each range measured on its own stretch).
    delay = (len(stage.filters[0]) - 1) // 2
    ys = [signal.fftconvolve(recording, h[None, :], axes=-1)[:, delay: delay + recording.shape[1]] for h in stage.filters]
    t = np.arange(recording.shape[1]) / SR
    w = np.clip((t - 9.0) / 2.0, 0, 1)
    w = 0.5 - 0.5 * np.cos(np.pi * w)
    expected = (1 - w) * ys[0] + w * ys[1]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # The two corrections really differ around 4 kHz, and the seam has no step: the output moves
    # no faster there than either correction's output does.
    f, r0 = fir_response_db(stage, 0)
    _, r1 = fir_response_db(stage, 1)
    assert (r0 - r1)[np.argmin(np.abs(f - 4000))] > 5
    seam = slice(8 * SR, 12 * SR)
    step = np.abs(np.diff(out[:, seam], axis=-1)).max()
    assert step <= 1.01 * max(np.abs(np.diff(y[:, seam], axis=-1)).max() for y in ys)


def test_reference_ranges_are_parsed_and_checked():
    assert Reference.parse("a@b.wav@1:02-4:10.5") == Reference("a@b.wav", 62.0, 250.5)
    assert Reference.parse("song.flac@-1:00:00") == Reference("song.flac", None, 3600.0)
    assert Reference.parse("take@home.wav") == Reference("take@home.wav")
    from resonate.errors import ResonateError

    with pytest.raises(ResonateError, match="ends before it starts"):
        Reference.parse("s.wav@4:10-0:30")
    with pytest.raises(ResonateError, match="give each a time range"):
        MatchConfig(references=("a.wav", "b.wav@1:00-2:00"))
    with pytest.raises(ResonateError, match="overlap"):
        MatchConfig(references=("a.wav@0:00-2:00", "b.wav@1:00-3:00"))


def test_with_a_reference_the_master_eq_stays_neutral_unless_set():
    # The phone preset has a tonal EQ (concert has none).
    master = stage_configs(ChainSettings("phone"))["master"]
    assert master.high_shelf_db != 0 and master.bands
    matched = stage_configs(ChainSettings("phone", {"match": {"references": ["studio.wav"]}}))["master"]
    assert matched.low_shelf_db == matched.high_shelf_db == 0 and matched.bands == ()
    assert (matched.comp_ratio, matched.limiter, matched.highpass_hz) == (master.comp_ratio, master.limiter,
                                                                          master.highpass_hz)
    chosen = stage_configs(ChainSettings("phone", {"match": {"references": ["studio.wav"]},
                                                     "master": {"high_shelf_db": 2.0}}))["master"]
    assert chosen.high_shelf_db == 2.0 and chosen.low_shelf_db == 0
    # The app hands every control's value over: the preset's own values are not "set by the user".
    as_app = stage_configs(ChainSettings("phone", {"match": {"references": ["studio.wav"]},
                                                     "master": {"high_shelf_db": master.high_shelf_db}}))["master"]
    assert as_app.high_shelf_db == 0
    bypassed = stage_configs(ChainSettings("phone", {"match": {"references": ["studio.wav"]}}, skip=("match",)))
    assert bypassed["master"].high_shelf_db == master.high_shelf_db


def test_the_job_report_carries_the_curve_and_says_why_match_was_skipped(tmp_path, source, reference_file):
    src = tmp_path / "show.wav"
    recording = coloured(source[:, 20 * SR: 32 * SR])
    sf.write(str(src), recording.T, SR, subtype="FLOAT")
    fast = ("separate", "denoise", "restore")
    plain = process_file(src, tmp_path / "plain.wav", ChainSettings(skip=fast))
    match = next(s for s in plain["stages"] if s["name"] == "match")
    assert match["skipped"] and match["reason"] == "no studio reference given"
    assert not [w for w in plain["warnings"] if "match" in w or "reference" in w]     # skipped, not warned about
    out = tmp_path / "matched.wav"
    report = process_file(src, out, ChainSettings(overrides={"match": {"references": [str(reference_file)]}},
                                                  skip=fast + ("master", "loudness")))
    match = next(s for s in report["stages"] if s["name"] == "match")
    assert not match["skipped"]
    curve = match["curves"][0]
    assert len(curve["freq_hz"]) == len(curve["reference_db"]) == len(curve["recording_db"]) == len(curve["applied_db"])
    at_6k = np.argmin(np.abs(np.array(curve["freq_hz"]) - 6000))
    assert curve["applied_db"][at_6k] > 1                 # it lifts the dull highs back
    y, rate = sf.read(str(out), always_2d=True)
    assert rate == SR and y.shape == recording.T.shape


def test_bad_references_are_refused_with_one_error_line(tmp_path, capsys):
    from resonate.cli import main

    src = tmp_path / "show.wav"
    sf.write(str(src), music_like(12.0, seed=3).T, SR)
    short, silent, broken = tmp_path / "short.wav", tmp_path / "silent.wav", tmp_path / "broken.wav"
    sf.write(str(short), music_like(5.0, seed=4).T, SR)
    sf.write(str(silent), np.zeros((12 * SR, 2), np.float32), SR)
    broken.write_text("not audio")
    out = tmp_path / "out.wav"
    sf.write(str(out), np.zeros((SR, 2), np.float32), SR)     # an existing output is a path like any other
    cases = {
        "silent": ([str(src), "-o", str(out), "--reference", str(silent)], "silent"),
        "unreadable": ([str(src), "-o", str(out), "--reference", str(broken)], "broken.wav"),
        "missing": ([str(src), "-o", str(out), "--reference", str(tmp_path / "nope.flac")], "not found"),
        "the input": ([str(src), "-o", str(out), "--reference", str(src)], "also the input"),
        "the output": ([str(src), "-o", str(out), "--reference", str(out)], "also the output"),
        "overlapping": ([str(src), "-o", str(out), "--reference", f"{src}@0:00-0:30", "--reference",
                         f"{short}@0:20-0:40"], "overlap"),
    }
    before = out.read_bytes()
    for name, (args, words) in cases.items():
        code = main(["restore", *args, "--skip", "separate", "restore"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (name, lines)
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], (name, lines)
    assert out.read_bytes() == before
    # And as a user runs it: a separate process, exit status 2, one line.
    done = subprocess.run([sys.executable, "-m", "resonate", "restore", str(src), "-o", str(tmp_path / "new.wav"),
                           "--reference", str(short)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "at least 10 s" in lines[0]
    assert not (tmp_path / "new.wav").exists()


def test_the_cli_takes_a_reference_and_a_strength(tmp_path, source, reference_file):
    from resonate.cli import main

    src = tmp_path / "show.wav"
    sf.write(str(src), coloured(source[:, 20 * SR: 32 * SR]).T, SR, subtype="FLOAT")
    report = tmp_path / "report.json"
    code = main(["restore", str(src), "-o", str(tmp_path / "out.wav"), "--reference", str(reference_file),
                 "--match-strength", "0.5", "--skip", "separate", "denoise", "restore", "--report", str(report)])
    assert code == 0
    match = next(s for s in json.loads(report.read_text())["stages"] if s["name"] == "match")
    assert match["strength"] == 0.5 and match["references"] == ["studio.wav"] and match["curves"]


def test_loudness_follows_the_studio_version(tmp_path, source):
    # The studio version is mastered 6 dB louder than the recording's -14 LUFS default target
    # would put it; with --loudness-from-reference the output lands on its loudness instead.
    from resonate.cli import main
    from resonate.dsp.loudness import integrated_lufs

    studio = source[:, : 20 * SR] * (10 ** (-8.0 / 20) / 10 ** (integrated_lufs(source[:, : 20 * SR], SR) / 20))
    ref = tmp_path / "studio.wav"
    sf.write(str(ref), studio.T, SR, subtype="FLOAT")
    src = tmp_path / "show.wav"
    sf.write(str(src), coloured(source[:, 20 * SR: 32 * SR]).T, SR, subtype="FLOAT")
    common = ["--reference", str(ref), "--skip", "separate", "denoise", "restore", "extend",
              "--set", "loudness.max_compensation_db=24", "--bit-depth", "32f"]
    assert main(["restore", str(src), "-o", str(tmp_path / "follow.wav"), "--loudness-from-reference",
                 "--report", str(tmp_path / "follow.json"), *common]) == 0
    assert main(["restore", str(src), "-o", str(tmp_path / "target.wav"), *common]) == 0
    follow = sf.read(str(tmp_path / "follow.wav"), dtype="float32")[0].T
    assert integrated_lufs(follow, SR) == pytest.approx(-8.0, abs=0.5)
    assert integrated_lufs(sf.read(str(tmp_path / "target.wav"), dtype="float32")[0].T, SR) == pytest.approx(-14.0, abs=0.5)
    loud = next(s for s in json.loads((tmp_path / "follow.json").read_text())["stages"] if s["name"] == "loudness")
    assert loud["target_from_reference"] and loud["target_lufs"] == pytest.approx(-8.0, abs=0.05)


def test_several_studio_versions_give_their_loudness_together(tmp_path, source):
    from resonate.dsp.loudness import integrated_lufs
    from resonate.stages.match import references_lufs

    quiet, loud = tmp_path / "quiet.wav", tmp_path / "loud.wav"
    sf.write(str(quiet), (0.1 * source[:, : 20 * SR]).T, SR, subtype="FLOAT")
    sf.write(str(loud), (0.4 * source[:, 20 * SR: 30 * SR]).T, SR, subtype="FLOAT")
    lq, ll = integrated_lufs(0.1 * source[:, : 20 * SR], SR), integrated_lufs(0.4 * source[:, 20 * SR: 30 * SR], SR)
    expected = 10 * np.log10((20 * 10 ** (lq / 10) + 10 * 10 ** (ll / 10)) / 30)   # power, weighted by length
    refs = [Reference(str(quiet), 0.0, 60.0), Reference(str(loud), 60.0, 90.0)]
    assert references_lufs(refs) == pytest.approx(expected, abs=0.05)
    assert references_lufs(refs[:1]) == pytest.approx(lq, abs=0.05)
    # Without a studio version the setting changes nothing (the report says the target was the setting's).
    configs = stage_configs(ChainSettings("concert", {"loudness": {"follow_reference": True}}))
    assert configs["loudness"].target_lufs == -14.0 and not configs["loudness"].follow_reference


@pytest.mark.parametrize("extra, message", [
    (["--loudness-from-reference"], "needs a studio version"),
    (["--loudness-from-reference", "--reference", "REF", "--target-lufs", "-10"], "not both"),
])
def test_loudness_from_reference_needs_a_reference_and_no_target(tmp_path, reference_file, capsys, extra, message):
    from resonate.cli import main

    src = tmp_path / "show.wav"
    sf.write(str(src), np.zeros((2, SR), np.float32).T, SR)
    args = [a if a != "REF" else str(reference_file) for a in extra]
    assert main(["restore", str(src), "-o", str(tmp_path / "out.wav"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not (tmp_path / "out.wav").exists()


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RESONATE_APP_CONFIG", str(tmp_path / "app.json"))
    monkeypatch.setenv("RESONATE_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("RESONATE_CACHE_DIR", str(tmp_path / "cache"))
    yield
    from resonate.ui.models import clear_model_cache

    clear_model_cache()


def test_the_restore_page_takes_a_studio_version_and_shows_the_correction(app_env, source):
    import io

    from streamlit.testing.v1 import AppTest

    def wav(x: np.ndarray) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, x.T, SR, format="WAV", subtype="PCM_16")
        return buf.getvalue()

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    uploader = next(u for u in at.get("file_uploader") if u.key == "restore.reference_upload")
    assert uploader.label.startswith("Studio version")
    at.file_uploader[0].set_value(("show.wav", wav(coloured(source[:, 20 * SR: 32 * SR])), "audio/wav")).run()
    uploader = next(u for u in at.get("file_uploader") if u.key == "restore.reference_upload")
    uploader.set_value(("studio.wav", wav(source[:, : 15 * SR]), "audio/wav")).run()
    for stage in ("separate", "restore"):
        next(t for t in at.toggle if t.key == f"restore.cfg.{stage}.bypass").set_value(True).run()
    next(b for b in at.button if b.key == "restore.run").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    assert any("Matched to the studio version" in m.value for m in at.markdown)
    charts = at.get("plotly_chart")
    assert len(charts) == 3                 # waveform, spectrogram, and the correction
    curve = json.loads(charts[-1].proto.spec)
    assert [trace["name"] for trace in curve["data"]] == ["Studio version", "Recording (before)", "Applied EQ"]


def test_a_reference_in_another_format_rate_and_channel_count_gives_the_same_correction(tmp_path, source,
                                                                                        reference_file):
    from resonate.audio.resample import resample

    other = tmp_path / "studio_48k_mono.flac"
    mono = source[:, : 20 * SR].mean(axis=0, keepdims=True)
    sf.write(str(other), resample(mono, SR, 48000).T, 48000, subtype="PCM_24")
    recording = coloured(source[:, 20 * SR: 32 * SR])
    stages = [MatchStage(MatchConfig(references=(str(r),))) for r in (reference_file, other)]
    for stage in stages:
        run(stage, recording)
    freqs = stages[0].corrections[0].freqs
    band = (freqs > 40) & (freqs < 16000)
    a, b = (s.corrections[0].gain_db[band] for s in stages)
    assert np.abs(a).max() > 3 and np.abs(a - b).max() < 1.0


def test_the_batch_page_takes_a_studio_version_per_file(app_env, source, reference_file):
    import io

    from streamlit.testing.v1 import AppTest

    from resonate.ui.history import read_run

    def wav(x: np.ndarray) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, x.T, SR, format="WAV", subtype="PCM_16")
        return buf.getvalue()

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("app_pages/batch.py").run()
    recording = wav(coloured(source[:, 20 * SR: 26 * SR]))
    at.file_uploader[0].set_value([("one.wav", recording, "audio/wav"), ("two.wav", recording, "audio/wav")]).run()
    next(t for t in at.text_input if t.key == "batch.reference.1").set_value(str(reference_file)).run()
    for stage in ("separate", "restore"):
        next(t for t in at.toggle if t.key == f"batch.cfg.{stage}.bypass").set_value(True).run()
    next(b for b in at.button if b.key == "batch.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    files = read_run(at.session_state["batch.result"])["files"]
    matched = [not next(s for s in f["report"]["stages"] if s["name"] == "match")["skipped"] for f in files]
    assert matched == [False, True]
