import threading

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resonate.audio.io import AudioWriter
from resonate.errors import ResonateError, StageUnavailable
from resonate.pipeline import ChainSettings, OutputOptions, process_file, stage_configs
from resonate.stages import REGISTRY, Stage, load_registry
from tests.conftest import tone_mix

DSP_ONLY = ("separate", "restore")


def _run(src, dst, block_frames, **kw):
    settings = kw.pop("settings", ChainSettings(skip=DSP_ONLY))
    return process_file(src, dst, settings, OutputOptions(bit_depth="32f"), block_frames=block_frames, **kw)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=st.integers(256, 200000))
def test_chain_in_blocks_equals_chain_whole(tmp_path, block):
    """Block size is an implementation detail: the chain's output must not depend on it."""
    src = tmp_path / "in.wav"
    if not src.exists():
        sf.write(str(src), tone_mix(6, 22050, 2, noise=0.03).T, 22050, subtype="FLOAT")
        _run(src, tmp_path / "whole.wav", 10 ** 7)
    whole, _ = sf.read(str(tmp_path / "whole.wav"))
    _run(src, tmp_path / "blocks.wav", block)
    blocks, _ = sf.read(str(tmp_path / "blocks.wav"))
    assert blocks.shape == whole.shape
    np.testing.assert_allclose(blocks, whole, atol=2e-5)


def test_no_click_at_block_seams(tmp_path):
    """A pure tone through the chain in small blocks stays smooth: no sample jumps at seams."""
    sr = 22050
    t = np.arange(sr * 4) / sr
    x = np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * 2).astype(np.float32)
    src = tmp_path / "tone.wav"
    sf.write(str(src), x.T, sr, subtype="FLOAT")
    _run(src, tmp_path / "o.wav", 1000)
    y, _ = sf.read(str(tmp_path / "o.wav"))
    d = np.abs(np.diff(y[sr:, 0]))
    assert d.max() < 1.2 * np.percentile(d, 99.9)


def test_clean_track_keeps_its_timbre(tmp_path):
    """Default chain on clean music: band energies (after level matching) move < 1 dB, except the
    preset's intended EQ tilt which we undo by comparing against the master-only chain."""
    sr = 44100
    x = studio_notes(8, sr)
    src = tmp_path / "clean.wav"
    sf.write(str(src), x.T, sr, subtype="FLOAT")
    _run(src, tmp_path / "full.wav", 65536)
    _run(src, tmp_path / "ref.wav", 65536, settings=ChainSettings(skip=DSP_ONLY + ("denoise",)))
    full, _ = sf.read(str(tmp_path / "full.wav"))
    ref, _ = sf.read(str(tmp_path / "ref.wav"))
    edges = [100, 300, 600, 1000, 2000, 4000, 8000]

    def bands(y):
        spec = np.abs(np.fft.rfft(y[:, 0])) ** 2
        f = np.fft.rfftfreq(y.shape[0], 1 / sr)
        return np.array([10 * np.log10(spec[(f >= lo) & (f < hi)].sum()) for lo, hi in zip(edges, edges[1:])])

    diff = bands(full) - bands(ref)
    assert np.max(np.abs(diff - diff.mean())) < 1.0


def studio_notes(seconds, sr):
    """Clean "studio" music: a melody of rich harmonic notes (1/k partials to 8 kHz) with attack
    and decay, slight vibrato, two channels, no added noise."""
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros((2, t.size))
    notes = [110.0, 146.8, 164.8, 220.0, 196.0, 130.8, 174.6, 123.5]
    dur = seconds / len(notes)
    for i, f0 in enumerate(notes):
        m = (t >= i * dur) & (t < (i + 1) * dur + 0.3)
        tt = t[m] - i * dur
        env = np.minimum(1, tt / 0.02) * np.exp(-tt * 1.5)
        phase = 2 * np.pi * f0 * tt + 0.3 * np.sin(2 * np.pi * 5 * tt)
        tone = sum(np.sin(k * phase) / k for k in range(1, int(8000 / f0)))
        out[0, m] += 0.2 * env * tone
        out[1, m] += 0.18 * env * tone
    return out.astype(np.float32)


def test_output_rate_on_request(tmp_path):
    src = tmp_path / "in.wav"
    sf.write(str(src), tone_mix(2, 44100, 2).T, 44100)
    rep = process_file(src, tmp_path / "o.wav", ChainSettings(skip=DSP_ONLY), OutputOptions(sample_rate=48000))
    info = sf.info(str(tmp_path / "o.wav"))
    assert info.samplerate == 48000 and info.frames == 96000
    assert abs(rep["output_loudness"]["integrated_lufs"] + 14) < 0.2


def test_progress_reaches_one_for_every_stage(tmp_path):
    src = tmp_path / "in.wav"
    sf.write(str(src), tone_mix(3, 22050, 1).T, 22050)
    seen: dict[str, list[float]] = {}
    threads = set()

    def progress(stage, fraction):
        threads.add(threading.get_ident())
        seen.setdefault(stage, []).append(fraction)

    rep = process_file(src, tmp_path / "o.wav", ChainSettings(skip=DSP_ONLY), progress=progress, block_frames=4096)
    ran = [s["name"] for s in rep["stages"] if not s["skipped"]]
    assert set(seen) == set(ran)
    # Streamlit accepts UI updates from the script thread only.
    assert threads == {threading.get_ident()}
    for fractions in seen.values():
        assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_unavailable_stage_is_skipped_with_reason(tmp_path, monkeypatch):
    class MissingWeights(Stage):
        name = "denoise"
        Config = load_registry()["denoise"].Config

        def open(self, ctx):
            raise StageUnavailable("weights not found in /nowhere")

        def stream(self, blocks):
            raise AssertionError("must not run")

    monkeypatch.setitem(REGISTRY, "denoise", MissingWeights)
    src = tmp_path / "in.wav"
    sf.write(str(src), tone_mix(1, 22050, 1).T, 22050)
    rep = process_file(src, tmp_path / "o.wav", ChainSettings(skip=DSP_ONLY))
    entry = next(s for s in rep["stages"] if s["name"] == "denoise")
    assert entry["skipped"] and "weights not found" in entry["reason"]
    assert any("weights not found" in w for w in rep["warnings"])
    assert (tmp_path / "o.wav").exists()


def test_failure_mid_stream_leaves_no_output(tmp_path, monkeypatch):
    class Exploding(Stage):
        name = "master"
        Config = load_registry()["master"].Config

        def stream(self, blocks):
            for i, b in enumerate(blocks):
                if i == 2:
                    raise RuntimeError("disk on fire")
                yield b

    monkeypatch.setitem(REGISTRY, "master", Exploding)
    src = tmp_path / "in.wav"
    sf.write(str(src), tone_mix(3, 22050, 1).T, 22050)
    with pytest.raises(RuntimeError):
        process_file(src, tmp_path / "o.wav", ChainSettings(skip=DSP_ONLY + ("denoise",)), block_frames=4096)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_presets_and_overrides():
    cfg = stage_configs(ChainSettings(preset="broadcast", overrides={"loudness": {"target_lufs": -20}}))
    assert cfg["loudness"].target_lufs == -20.0 and cfg["master"].comp_ratio == 3.0
    for name in ("concert", "phone", "gentle", "broadcast"):
        assert stage_configs(ChainSettings(preset=name))["loudness"].true_peak_dbtp == -1.0


def test_writer_failure_mid_stream_leaves_no_output_and_no_thread(tmp_path, monkeypatch):
    real_write = AudioWriter.write

    def failing_write(self, block):
        if self.frames_written >= 8192:
            raise OSError("No space left on device")
        real_write(self, block)

    monkeypatch.setattr(AudioWriter, "write", failing_write)
    src = tmp_path / "in.wav"
    sf.write(str(src), tone_mix(3, 22050, 1).T, 22050)
    before = threading.active_count()
    # A failure of the output side is the user's to act on: one clear error, not a crash.
    with pytest.raises(ResonateError, match="cannot write the output .*o.wav: No space left on device"):
        process_file(src, tmp_path / "o.wav", ChainSettings(skip=DSP_ONLY), block_frames=4096)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]
    assert threading.active_count() == before


def test_spool_gives_back_the_blocks_it_was_given(tmp_path):
    from resonate.pipeline import _read_spool, _write_spool_block

    rng = np.random.default_rng(3)
    blocks = [rng.standard_normal((2, n)).astype(np.float32) for n in (5, 0, 65536, 1, 300001)]
    blocks[2] = np.asfortranarray(blocks[2])     # a transposed view from a stage is fine too
    path = tmp_path / "spool.f32"
    with open(path, "wb") as f:
        for b in blocks:
            _write_spool_block(f, b)
    back = list(_read_spool(path, 2, 1 << 20))
    assert [b.shape for b in back] == [b.shape for b in blocks]
    assert all(np.array_equal(a, b) and a.flags.writeable for a, b in zip(back, blocks))
    # Long blocks come back in pieces of at most block_frames.
    pieces = list(_read_spool(path, 2, 70000))
    assert max(p.shape[-1] for p in pieces) == 70000
    assert np.array_equal(np.concatenate(pieces, axis=-1), np.concatenate(blocks, axis=-1))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 4)
    with pytest.raises(ResonateError, match="cut short"):
        list(_read_spool(path, 2, 1 << 20))


def test_two_pass_stages_chain_each_measured_on_what_reaches_it(tmp_path, monkeypatch):
    """A second two-pass stage (as reference matching will be) chains with loudness: each is
    measured on everything that reaches it, before it applies, and runs at the output rate."""
    from resonate.stages import TwoPassStage

    events: list[str] = []

    class Halve(TwoPassStage):
        name = "master"
        Config = load_registry()["master"].Config

        def open(self, ctx):
            self.rate, self.frames, self.peak = ctx.sample_rate, 0, 0.0

        def measure(self, block):
            events.append("halve.measure")
            self.frames += block.shape[-1]
            self.peak = max(self.peak, float(np.abs(block).max(initial=0.0)))

        def plan(self, reread):
            events.append("halve.plan")
            assert sum(b.shape[-1] for b in reread()) == self.frames

        def apply(self, blocks):
            for b in blocks:
                events.append("halve.apply")
                yield b * np.float32(0.5)

        def report(self):
            return {"rate": self.rate, "frames": self.frames, "peak": self.peak}

    src = tmp_path / "in.wav"
    x = tone_mix(2, 22050, 2)
    sf.write(str(src), x.T, 22050, subtype="FLOAT")
    work = tmp_path / "work"
    work.mkdir()
    settings = ChainSettings(skip=DSP_ONLY + ("denoise",))
    out = OutputOptions(bit_depth="32f", sample_rate=48000)
    plain = process_file(src, tmp_path / "plain.wav", ChainSettings(skip=settings.skip + ("master",)), out,
                         work_dir=work)
    monkeypatch.setitem(REGISTRY, "master", Halve)
    loudness = REGISTRY["loudness"]
    monkeypatch.setattr(loudness, "measure", lambda self, b, real=loudness.measure: (
        events.append("loudness.measure"), real(self, b))[1])
    rep = process_file(src, tmp_path / "o.wav", settings, out, block_frames=8192, work_dir=work)
    stages = {s["name"]: s for s in rep["stages"]}
    frames = sf.info(str(tmp_path / "o.wav")).frames
    assert stages["master"]["rate"] == 48000 and stages["master"]["frames"] == frames == 96000
    assert stages["master"]["peak"] == pytest.approx(np.abs(x).max(), abs=0.02)
    # Loudness measured the halved stream: 6 dB quieter than without the stage before it.
    assert stages["loudness"]["measured_lufs"] == pytest.approx(
        next(s for s in plain["stages"] if s["name"] == "loudness")["measured_lufs"] - 6.02, abs=0.05)
    # Each stage saw the whole stream before it applied; loudness measured only what Halve applied.
    last = {e: max(i for i, x in enumerate(events) if x == e) for e in set(events)}
    first = {e: events.index(e) for e in set(events)}
    assert last["halve.measure"] < first["halve.plan"] < first["halve.apply"] < first["loudness.measure"]
    assert list(work.iterdir()) == []                # both spools and their folder are gone
