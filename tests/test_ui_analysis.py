"""The app's views and A/B player, tested without a browser: bounded plots, level matching."""

from __future__ import annotations

import base64
import io
import re
import zipfile

import numpy as np
import pytest
import soundfile as sf
from conftest import tone_mix

from resonate.dsp.loudness import integrated_lufs
from resonate.ui import abplayer
from resonate.ui.analysis import envelope, spectrogram

SR = 44100


def test_envelope_is_bounded_and_covers_the_extremes(write_wav):
    x = tone_mix(12.0)
    x[1, 300_000] = 0.9                     # one spike in one channel must survive the pooling
    env = envelope(write_wav(x, subtype="FLOAT"), points=500)
    assert env.times.size == env.lows.size == env.highs.size <= 500
    assert env.highs.max() == pytest.approx(0.9, abs=1e-6)
    assert env.lows.min() == pytest.approx(x.min(), abs=1e-6)
    assert np.all(env.lows <= env.highs)
    assert env.times[-1] < 12.0


def test_spectrogram_is_pooled_log_frequency_and_finds_the_tone(write_wav):
    t = np.arange(int(20 * SR)) / SR
    x = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None]
    spec = spectrogram(write_wav(x), columns=100, bands=80)
    assert spec.db.shape[0] == 80 and spec.db.shape[1] <= 100
    assert np.all(np.diff(np.log(spec.freqs)) == pytest.approx(np.log(spec.freqs[1] / spec.freqs[0])))
    peak = spec.freqs[np.argmax(spec.db.mean(axis=1))]
    assert 900 < peak < 1100
    assert spec.db.max() - spec.db.min() <= 90.0 + 1e-3


def test_excerpt_bounds_clamp_to_30_60_s_and_the_file():
    assert abplayer.excerpt_bounds(300, 100, 10) == (100, 30)
    assert abplayer.excerpt_bounds(300, 280, 90) == (240, 60)
    assert abplayer.excerpt_bounds(20, 5, 30) == (0, 20)


def test_ab_excerpts_play_at_equal_loudness_even_after_mp3(write_wav):
    quiet = tone_mix(35.0, seed=1) * 0.2
    loud = tone_mix(35.0, seed=2) * 0.9
    original, restored = write_wav(quiet, name="a.wav"), write_wav(loud, name="b.wav")
    ex = abplayer.level_matched_excerpts(original, restored, start_s=2.0, seconds=30.0)
    assert ex.seconds == 30.0 and ex.original.shape[-1] == 30 * SR
    la, lb = integrated_lufs(ex.original, SR), integrated_lufs(ex.restored, SR)
    assert abs(la - lb) < 0.1
    assert ex.original_gain_db == 0.0 and ex.restored_gain_db < -10     # the louder one is turned down
    # What the browser decodes: the MP3s we send, still matched.
    decoded = [sf.read(io.BytesIO(abplayer.encode_mp3(x, SR)), dtype="float32")[0].T for x in (ex.original, ex.restored)]
    assert abs(integrated_lufs(decoded[0], SR) - integrated_lufs(decoded[1], SR)) < 0.1


def test_player_html_carries_both_excerpts_and_the_keyboard_toggle(write_wav):
    a = write_wav(tone_mix(3.0, seed=1) * 0.3, name="a.wav")
    b = write_wav(tone_mix(3.0, seed=2) * 0.6, name="b.wav")
    html = abplayer.player_html(abplayer.level_matched_excerpts(a, b, 0.0, 30.0))
    blobs = re.findall(r'"[ab]": "([A-Za-z0-9+/=]+)"', html)
    assert len(blobs) == 2
    for blob in blobs:
        x, sr = sf.read(io.BytesIO(base64.b64decode(blob)))
        assert sr == SR and x.shape[0] >= 3 * SR
    assert 'k === "a"' in html and 'k === " "' in html and "linearRampToValueAtTime" in html


def test_uploads_are_spooled_with_safe_names_and_zipped(tmp_path, monkeypatch):
    from resonate.ui import session

    class Upload(io.BytesIO):
        name = "../../my show?.wav"

    path = session.spool_upload(Upload(b"RIFFdata"), tmp_path / "up")
    assert path.parent == tmp_path / "up" and path.name == "my show_.wav" and path.read_bytes() == b"RIFFdata"
    archive = session.zip_files([path], tmp_path / "out.zip")
    assert zipfile.ZipFile(archive).namelist() == ["my show_.wav"]
