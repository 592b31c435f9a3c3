import numpy as np
import pytest
import soundfile as sf

from resonate.audio.io import (
    AudioWriter,
    probe,
    read_audio,
    sanitize_filename,
    tpdf_dither_quantize,
    write_audio,
)
from resonate.audio.resample import StreamResampler, resample
from resonate.errors import ResonateError


@pytest.mark.parametrize("ext,subtype", [("wav", "PCM_16"), ("wav", "PCM_24"), ("wav", "FLOAT"), ("flac", "PCM_16"),
                                         ("ogg", "VORBIS")])
@pytest.mark.parametrize("channels", [1, 2])
def test_reads_formats_as_float32_channel_first(tmp_path, ext, subtype, channels):
    sr = 22050
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)
    x = np.stack([x] * channels)
    p = tmp_path / f"a.{ext}"
    sf.write(str(p), x.T, sr, subtype=subtype)
    y, rate = read_audio(p)
    assert rate == sr and y.dtype == np.float32 and y.shape[0] == channels
    assert abs(y.shape[1] - sr) < 2048  # Vorbis may pad a little
    if ext != "ogg":
        np.testing.assert_allclose(y, x, atol=1e-3)


@pytest.mark.parametrize("rate", [8000, 96000, 192000])
def test_any_rate_between_8_and_192_khz(tmp_path, rate):
    p = tmp_path / "r.wav"
    sf.write(str(p), np.zeros((rate // 10, 2), np.float32), rate)
    assert probe(p).sample_rate == rate


def test_probe_errors(tmp_path):
    with pytest.raises(ResonateError, match="not found"):
        probe(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ResonateError, match="empty"):
        probe(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"this is not audio" * 100)
    with pytest.raises(ResonateError, match="not an audio file we can read"):
        probe(tmp_path / "junk.wav")
    sf.write(str(tmp_path / "quad.wav"), np.zeros((100, 4), np.float32), 44100)
    with pytest.raises(ResonateError, match="4 channels"):
        probe(tmp_path / "quad.wav")
    sf.write(str(tmp_path / "zero.wav"), np.zeros((0, 2), np.float32), 44100)
    with pytest.raises(ResonateError, match="zero length"):
        probe(tmp_path / "zero.wav")


@pytest.mark.parametrize("bits", [16, 24])
def test_tpdf_dither_statistics(bits):
    """TPDF dither: error is zero-mean with variance 1/4 LSB² (1/12 rounding + 1/6 dither) and
    does not depend on the signal (no distortion)."""
    rng = np.random.default_rng(0)
    lsb = 1.0 / 2 ** (bits - 1)
    x = (0.3 * np.sin(np.linspace(0, 200 * np.pi, 400000)))[None].astype(np.float64)
    q = tpdf_dither_quantize(x, bits, rng).astype(np.float64) * lsb
    err = (q - x)[0] / lsb
    assert abs(err.mean()) < 0.01
    assert abs(err.var() - 0.25) < 0.01
    assert abs(np.corrcoef(err, x[0])[0, 1]) < 0.01
    # A constant exactly between two codes still averages to the right value (no dead zone).
    half = np.full((1, 100000), 0.5 * lsb)
    assert abs(tpdf_dither_quantize(half, bits, rng).mean() - 0.5) < 0.02


def test_32f_is_bit_exact_and_undithered(tmp_path):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 5000)).astype(np.float32)
    p = write_audio(tmp_path / "f.wav", x, 48000, bit_depth="32f")
    y, _ = read_audio(p)
    np.testing.assert_array_equal(x, y)
    assert sf.info(str(p)).subtype == "FLOAT"


@pytest.mark.parametrize("bits,subtype", [("16", "PCM_16"), ("24", "PCM_24")])
def test_pcm_writes_are_accurate(tmp_path, bits, subtype):
    x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(44100) / 44100))[None].astype(np.float32)
    p = write_audio(tmp_path / "p.wav", x, 44100, bit_depth=bits, seed=0)
    y, _ = read_audio(p)
    assert sf.info(str(p)).subtype == subtype
    lsb = 1.0 / 2 ** (int(bits) - 1)
    assert np.max(np.abs(y - x)) <= 2 * lsb + 1e-9


def test_write_is_atomic_on_failure(tmp_path):
    target = tmp_path / "out.wav"
    with pytest.raises(RuntimeError):
        with AudioWriter(target, 44100, 2) as w:
            w.write(np.zeros((2, 1000), np.float32))
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_failed_overwrite(tmp_path):
    target = tmp_path / "out.wav"
    write_audio(target, np.zeros((1, 100), np.float32), 8000)
    before = target.read_bytes()
    with pytest.raises(ValueError):
        with AudioWriter(target, 8000, 1) as w:
            w.write(np.zeros((2, 10), np.float32))   # wrong channel count
    assert target.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("rate", [44100, 96000])
def test_mp3_round_trip(tmp_path, rate):
    t = np.arange(rate * 2) / rate
    x = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    p = write_audio(tmp_path / "a.mp3", x, rate, format="mp3", mp3_bitrate=192)
    y, sr = read_audio(p)
    assert sr == min(rate, 48000) and y.shape[0] == 2
    ref = resample(x, rate, sr)
    assert abs(y.shape[1] - ref.shape[1]) < 3000   # encoder delay/padding
    # Align (encoder delay) and compare the steady part.
    lag = int(np.argmax(np.correlate(y[0, 5000:9000], ref[0, 4000:6000], mode="valid"))) + 5000 - 4000
    seg = slice(10000, 60000)
    a, b = y[0, lag + seg.start: lag + seg.stop], ref[0, seg]
    assert np.corrcoef(a, b)[0, 1] > 0.99


def test_stream_resampler_matches_whole():
    x = np.random.default_rng(2).standard_normal((2, 30000)).astype(np.float32)
    whole = resample(x, 44100, 16000)
    rs = StreamResampler(44100, 16000, 2)
    parts = list(rs.stream([x[:, :7000], x[:, 7000:20001], x[:, 20001:]]))
    y = np.concatenate(parts, axis=-1)
    assert abs(y.shape[1] - whole.shape[1]) <= 1
    n = min(y.shape[1], whole.shape[1])
    assert np.max(np.abs(y[:, 200:n - 200] - whole[:, 200:n - 200])) < 1e-3


@pytest.mark.parametrize("raw,expected", [
    ("../../etc/passwd", "passwd"), ("my song (live).wav", "my song _live_.wav"), ("", "audio"),
    ("C:\\Users\\x\\take 1.mp3", "take 1.mp3"), ("a\x00b;rm -rf.wav", "a_b_rm -rf.wav"), ("...", "audio"),
])
def test_sanitize_filename(raw, expected):
    assert sanitize_filename(raw) == expected
