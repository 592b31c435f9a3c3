import numpy as np
import pyloudnorm as pyln
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resonate.dsp.limiter import TruePeakLimiter
from resonate.dsp.loudness import LoudnessMeter, integrated_lufs, true_peak_dbtp
from resonate.stages.base import StageContext
from resonate.stages.loudness import LoudnessConfig, LoudnessStage
from tests.conftest import tone_mix


def _stream_meter(x, sr, block):
    m = LoudnessMeter(sr, x.shape[0])
    for i in range(0, x.shape[1], block):
        m.update(x[:, i: i + block])
    return m


@pytest.mark.parametrize("sr", [8000, 44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
def test_streamed_loudness_matches_pyloudnorm(sr, channels):
    x = tone_mix(12, sr, channels, noise=0.05)
    x[:, : sr * 3] *= 0.05   # a quiet passage exercises the relative gate
    ours = _stream_meter(x, sr, 12345).integrated_lufs()
    ref = pyln.Meter(sr).integrated_loudness(x.T.astype(np.float64))
    assert abs(ours - ref) < 0.1


def test_silence_and_short_clips_are_safe():
    assert integrated_lufs(np.zeros((2, 48000), np.float32), 48000) == float("-inf")
    short = 0.1 * np.ones((1, 480), np.float32)   # 10 ms: measured ungated
    assert np.isfinite(integrated_lufs(short, 48000))


def test_true_peak_finds_intersample_peak():
    sr = 48000
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * sr / 4 * t + np.pi / 4)[None] * 0.5   # samples at ±0.354, true peak 0.5
    assert np.max(np.abs(x)) < 0.36
    assert abs(true_peak_dbtp(x, sr) - 20 * np.log10(0.5)) < 0.2



@pytest.mark.parametrize("blocks", [[65536, 65536, 3000], [1, 23, 24, 25, 8192, 8193, 40000, 9]])
def test_true_peak_envelope_equals_4x_upsampling(blocks):
    """The polyphase envelope is the zero-stuffed 4x interpolation, whatever the block sizes."""
    from scipy import signal

    from resonate.dsp.loudness import _INTERP, OVERSAMPLE, TruePeakEnvelope

    x = tone_mix(sum(blocks) / 44100 + 0.01, 44100, 2, noise=0.3)[:, : sum(blocks)]
    env = TruePeakEnvelope(2)
    streamed = np.concatenate([env.update(x[:, i - n: i]) for n, i in zip(blocks, np.cumsum(blocks))])
    # Reference: upsample the whole signal (with `delay` samples of leading silence) in one go.
    padded = np.concatenate([np.zeros((2, env.delay)), x.astype(np.float64)], axis=-1)
    up = signal.upfirdn(_INTERP, padded, up=OVERSAMPLE, axis=-1)[:, len(_INTERP) // 2:]
    ref = np.abs(up[:, : OVERSAMPLE * x.shape[1]]).reshape(2, -1, OVERSAMPLE).max(axis=(0, 2))
    # float32 arithmetic: agreement to ~1e-6 of full scale (1e-5 dB), far below any ceiling margin.
    assert streamed.shape == ref.shape
    np.testing.assert_allclose(streamed, ref, atol=2e-6)

@settings(max_examples=20, deadline=None)
@given(levels_db=st.lists(st.floats(-40, 6), min_size=2, max_size=8), block=st.integers(500, 70000),
       seed=st.integers(0, 100))
def test_true_peak_skipping_is_exact_above_floor(levels_db, block, seed):
    """Stretches skipped because they cannot beat the floor change nothing above it."""
    from resonate.dsp.loudness import TruePeakEnvelope, TruePeakMeter

    sr = 44100
    x = tone_mix(len(levels_db) * 0.25, sr, 2, noise=0.3, seed=seed)
    gains = np.repeat(np.float32(10) ** (np.array(levels_db, dtype=np.float32) / 20), x.shape[1] // len(levels_db) + 1)
    x = x * gains[: x.shape[1]]
    floor = 0.5
    full, skipped, meter = TruePeakEnvelope(2), TruePeakEnvelope(2), TruePeakMeter(sr, 2)
    for i in range(0, x.shape[1], block):
        a, b = full.update(x[:, i: i + block]), skipped.update(x[:, i: i + block], floor)
        meter.update(x[:, i: i + block])
        # (stretches below the floor may be computed by direct convolution instead of FFTs:
        # equal to float32 rounding)
        assert np.all(b <= a + 2e-6)
        np.testing.assert_allclose(b[a > floor], a[a > floor], atol=2e-6)
    assert meter.dbtp() == pytest.approx(true_peak_dbtp(x, sr), abs=1e-4)   # float32 FFTs of other sizes


def test_sparse_true_peak_interpolates_only_what_can_beat_the_floor():
    """Quiet music with a few loud bursts: only the bursts' stretches are interpolated, by direct
    convolution, and they match the FFT path; everything else is provably below the floor."""
    from resonate.dsp.loudness import _interpolated_peaks, _sparse_interpolated_peaks

    x = tone_mix(2.0, 44100, 2, noise=0.3) * np.float32(0.05)
    for start in (10_000, 50_003, 70_000):
        x[:, start: start + 300] *= 20
    ctx = np.concatenate([np.zeros((2, 24), np.float32), x], axis=-1)
    full = _interpolated_peaks(ctx, x.shape[1])
    floor = 0.5 * float(full.max())
    sparse = _sparse_interpolated_peaks(ctx, x.shape[1], floor)
    assert sparse is not None and np.count_nonzero(sparse) < 0.05 * x.shape[1]
    above = full > floor
    assert above.sum() > 100
    np.testing.assert_allclose(sparse[above], full[above], atol=2e-6)
    assert np.all(sparse <= full + 2e-6)
    # too many candidate stretches: the FFT path is taken
    assert _sparse_interpolated_peaks(ctx, x.shape[1], 1e-6) is None


@settings(max_examples=15, deadline=None)
@given(gain_db=st.floats(0, 24), block=st.integers(100, 20000), seed=st.integers(0, 100))
def test_limiter_holds_ceiling_and_keeps_length(gain_db, block, seed):
    sr = 44100
    x = tone_mix(1.5, sr, 2, noise=0.1, seed=seed) * np.float32(10 ** (gain_db / 20))
    lim = TruePeakLimiter(sr, 2, ceiling_dbtp=-1.0)
    out = [lim.process(x[:, i: i + block]) for i in range(0, x.shape[1], block)] + [lim.flush()]
    y = np.concatenate(out, axis=-1)[:, lim.latency:]
    assert y.shape == x.shape
    assert true_peak_dbtp(y, sr) <= -1.0 + 1e-3


def test_limiter_is_transparent_below_ceiling():
    sr = 44100
    x = tone_mix(1, sr, 2) * 0.5
    lim = TruePeakLimiter(sr, 2, ceiling_dbtp=-1.0)
    y = np.concatenate([lim.process(x), lim.flush()], axis=-1)[:, lim.latency:]
    np.testing.assert_allclose(y, x, atol=1e-6)


def _run_loudness(x, sr, cfg):
    stage = LoudnessStage(cfg)
    stage.open(StageContext(sample_rate=sr, channels=x.shape[0]))
    stage.measure(x)
    return np.concatenate(list(stage.stream(iter([x[:, :30000], x[:, 30000:]]))), axis=-1), stage


@pytest.mark.parametrize("target", [-14.0, -16.0, -23.0, -30.0])
def test_loudness_stage_lands_on_target(target):
    sr = 44100
    x = tone_mix(8, sr, 2, noise=0.01) * 0.05
    y, stage = _run_loudness(x, sr, LoudnessConfig(target_lufs=target))
    assert y.shape == x.shape
    assert abs(integrated_lufs(y, sr) - target) < 0.1
    assert true_peak_dbtp(y, sr) <= -1.0 + 1e-3


def test_loudness_stage_never_boosts_silence():
    sr = 44100
    x = np.zeros((2, sr * 2), np.float32)
    x[:, 1000] = 1e-6
    y, stage = _run_loudness(x, sr, LoudnessConfig())
    assert stage.gain_db == 0.0 and np.max(np.abs(y)) <= 1e-6
