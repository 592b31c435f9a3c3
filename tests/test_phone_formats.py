"""Phone and video formats (M4A/AAC, MP4/MOV, WebM) read through PyAV: probed from headers,
decoded in blocks at the file's own rate, and a clear error for files that are not audio.
The files are made here, with PyAV itself, from a synthetic signal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import resonate.audio.io as aio
from resonate.audio.io import READ_EXTENSIONS, probe, read_blocks
from resonate.errors import ResonateError
from tests.conftest import tone_mix

ROOT = Path(__file__).resolve().parent.parent
# AAC's encoder priming and final padding; Opus's pre-skip and last-frame padding.
PADDING = 2048


def source(seconds: float, rate: int, channels: int) -> np.ndarray:
    """Music-like partials plus a 200 Hz -> 6 kHz chirp, so that a one-sample shift shows."""
    x = tone_mix(seconds, rate, channels, noise=0.0) * np.float32(0.8)
    t = np.arange(x.shape[1]) / rate
    chirp = 0.2 * np.sin(2 * np.pi * (200 * t + (6000 - 200) / (2 * seconds) * t * t))
    return (x + chirp.astype(np.float32)).astype(np.float32)


def encode(path: Path, fmt: str, codec: str, x: np.ndarray, rate: int, video: bool = False) -> Path:
    layout = "stereo" if x.shape[0] == 2 else "mono"
    with av.open(str(path), "w", format=fmt) as c:
        if video:     # a phone video: a (tiny) picture track before the sound
            v = c.add_stream("mpeg4", rate=10)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        s = c.add_stream(codec, rate=rate)
        s.layout = layout
        step = 4096
        for i in range(0, x.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i: i + step]), format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for p in s.encode(frame):
                c.mux(p)
            if video and i % rate < step:
                img = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i // rate * 40) % 255, np.uint8), format="rgb24")
                img.pts = i // rate
                for p in v.encode(img):
                    c.mux(p)
        for p in s.encode(None):
            c.mux(p)
        if video:
            for p in v.encode(None):
                c.mux(p)
    return path


def correlation(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    """Normalised correlation of ``a`` with ``b`` shifted by ``lag`` samples (b later)."""
    n = min(a.shape[-1], b.shape[-1]) - 2 * abs(lag) - 1
    a, b = a[:, abs(lag): abs(lag) + n], b[:, abs(lag) + lag: abs(lag) + lag + n]
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


CASES = [  # suffix, container, codec, rate, channels
    ("m4a", "ipod", "aac", 44100, 2),
    ("m4a", "ipod", "aac", 48000, 1),
    ("mp4", "mp4", "aac", 44100, 2),
    ("mov", "mov", "aac", 48000, 2),
    ("webm", "webm", "libopus", 48000, 2),
    ("aac", "adts", "aac", 44100, 1),
]


@pytest.mark.parametrize("suffix, fmt, codec, rate, channels", CASES)
def test_phone_formats_read_back_in_blocks(tmp_path, suffix, fmt, codec, rate, channels):
    x = source(3.0, rate, channels)
    path = encode(tmp_path / f"clip.{suffix}", fmt, codec, x, rate)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.backend) == (rate, channels, "av")
    assert abs(info.frames - x.shape[1]) <= PADDING
    blocks = list(read_blocks(path, 10000))
    assert all(b.dtype == np.float32 and b.shape[0] == channels for b in blocks)
    assert all(b.shape[1] == 10000 for b in blocks[:-1]) and 0 < blocks[-1].shape[1] <= 10000
    y = np.concatenate(blocks, axis=-1)
    assert abs(y.shape[1] - x.shape[1]) <= PADDING and y.shape[1] <= info.frames
    if suffix == "aac":
        # Raw ADTS has no place to say that the encoder primed 1024 samples: they stay in front.
        y = y[:, 1024:]
    corr = {lag: correlation(x, y, lag) for lag in (-2, -1, 0, 1, 2)}
    assert corr[0] > 0.98 and max(corr, key=corr.get) == 0, corr


def test_phone_video_reads_its_sound_and_ignores_the_picture(tmp_path):
    x = source(3.0, 44100, 2)
    path = encode(tmp_path / "VID_0001.mp4", "mp4", "aac", x, 44100, video=True)
    with av.open(str(path)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
    info = probe(path)
    assert (info.sample_rate, info.channels) == (44100, 2)
    y = np.concatenate(list(read_blocks(path, 65536)), axis=-1)
    assert abs(y.shape[1] - x.shape[1]) <= PADDING and correlation(x, y, 0) > 0.98


class _NoDecoding:
    """A container that refuses to decode: probing must read headers (and packets) only."""

    def __init__(self, c):
        self._c = c

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.close()

    def decode(self, *args, **kwargs):
        raise AssertionError("probe decoded audio")

    def __getattr__(self, name):
        return getattr(self._c, name)


@pytest.mark.parametrize("suffix, fmt, codec, rate", [("m4a", "ipod", "aac", 44100), ("webm", "webm", "libopus", 48000),
                                                      ("aac", "adts", "aac", 44100)])
def test_probe_reads_headers_without_decoding(tmp_path, monkeypatch, suffix, fmt, codec, rate):
    path = encode(tmp_path / f"long.{suffix}", fmt, codec, source(20.0, rate, 2), rate)
    real_open = aio._open_av
    monkeypatch.setattr(aio, "_open_av", lambda p: _NoDecoding(real_open(p)))
    info = probe(path)
    assert abs(info.frames - 20 * rate) <= PADDING
    monkeypatch.setattr(aio, "_open_av", real_open)
    with pytest.raises(AssertionError, match="decoded"):   # the guard does bite where decoding happens
        monkeypatch.setattr(aio, "_open_av", lambda p: _NoDecoding(real_open(p)))
        next(read_blocks(path, 4096))


@pytest.mark.parametrize("suffix, fmt, codec, rate", [("m4a", "ipod", "aac", 44100), ("webm", "webm", "libopus", 48000)])
def test_excerpts_are_the_same_samples_as_the_whole(tmp_path, suffix, fmt, codec, rate):
    """``start``/``stop`` (A/B excerpts, noise ranges): M4A seeks (its timestamps count samples),
    WebM decodes from the start; either way the excerpt lines up with the whole file."""
    path = encode(tmp_path / f"clip.{suffix}", fmt, codec, source(6.0, rate, 2), rate)
    whole = np.concatenate(list(read_blocks(path, 8192)), axis=-1)
    for start, stop in [(0, 1000), (3 * rate + 17, 4 * rate), (int(1.5 * rate), None)]:
        part = np.concatenate(list(read_blocks(path, 5000, start, stop)), axis=-1)
        ref = whole[:, start:stop]
        assert part.shape == ref.shape
        assert correlation(ref, part, 0) > 0.9999


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "resonate", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_files_that_are_not_audio_get_one_clear_error(tmp_path):
    rng = np.random.default_rng(1)
    text = tmp_path / "x.wav"
    text.write_text("these are my concert notes, not a recording\n" * 20)
    noise_m4a = tmp_path / "random.m4a"
    noise_m4a.write_bytes(rng.bytes(200_000))
    noise_webm = tmp_path / "random.webm"
    noise_webm.write_bytes(rng.bytes(5000))
    for p in (text, noise_m4a, noise_webm):
        with pytest.raises(ResonateError, match="not an audio file we can read"):
            probe(p)
        with pytest.raises(ResonateError, match="not an audio file we can read"):
            next(read_blocks(p))
    for p in (text, noise_m4a):
        proc = _run_cli("restore", p, "-o", tmp_path / "out.wav", "--skip", "separate", "restore")
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
        assert "not an audio file we can read" in lines[0] and "possibly a pipe" not in lines[0]
        assert not (tmp_path / "out.wav").exists()


def test_a_video_without_sound_says_so(tmp_path):
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            img = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            img.pts = i
            for p in v.encode(img):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    with pytest.raises(ResonateError, match="has no audio track"):
        probe(path)


def test_a_phone_recording_restores_through_the_cli(tmp_path):
    x = source(4.0, 48000, 2) * np.float32(0.5)
    src = encode(tmp_path / "Voice Memo.m4a", "ipod", "aac", x, 48000)
    out = tmp_path / "master.wav"
    proc = _run_cli("restore", src, "-o", out, "--skip", "separate", "restore", "denoise")
    assert proc.returncode == 0, proc.stderr
    import soundfile as sf

    y, rate = sf.read(str(out), always_2d=True)
    assert rate == 48000 and y.shape[1] == 2 and y.shape[0] == probe(src).frames


def test_the_uploaders_offer_the_phone_formats(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RESONATE_APP_CONFIG", str(tmp_path / "app.json"))
    monkeypatch.setenv("RESONATE_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("RESONATE_CACHE_DIR", str(tmp_path / "cache"))
    assert {".m4a", ".aac", ".mp4", ".mov", ".webm"} <= set(READ_EXTENSIONS)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    assert set(READ_EXTENSIONS) <= set(at.file_uploader[0].allowed_type)          # Restore (+ aliases)
    at.switch_page("app_pages/batch.py").run()
    assert set(READ_EXTENSIONS) <= set(at.file_uploader[0].allowed_type)          # Batch
