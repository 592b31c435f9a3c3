"""The v3 concert-pair chain (resonate/train/concert.py) and crowds, on signals the tests make."""

from __future__ import annotations

import numpy as np
import pytest

from resonate.train import crowd
from resonate.train.concert import aac_roundtrip, concert_recording, fade_out_music, phone_limiter
from resonate.train.metrics import si_sdr

SR = 16000


def _music(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    notes = [220, 277, 330, 440]
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * (k + 1) * 0.7 * t) ** 2)
            for k, f in enumerate(notes))
    return (0.1 * np.stack([x, np.roll(x, 31)])).astype(np.float32)


def _room(rt60: float = 0.8, seed: int = 1) -> np.ndarray:
    """Direct sound, then a diffuse tail that starts after the early window (60 ms): the
    early-reflection target is then the dry music itself."""
    rng = np.random.default_rng(seed)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    rir = 0.3 * rng.standard_normal((2, n)) * np.exp(-6.91 * t / rt60) * (t > 0.06)
    rir[:, 0] = 1.0
    return rir.astype(np.float32)


def _bank(seed: int = 2) -> list[np.ndarray]:
    """Stand-in voices: short bursts of band-passed noise (the real bank is espeak-ng speech)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(SR * rng.uniform(0.5, 1.5))).astype(np.float32) * 0.3 for _ in range(6)]


def test_crowd_only_recording_is_the_music_plus_the_crowd_at_the_stated_snr():
    rng = np.random.default_rng(3)
    music = _music(3.0)
    bed, kinds = crowd.concert_crowd(rng, music.shape[-1], SR, _bank(), music, ("chatter", "applause"))
    assert kinds and bed.shape == music.shape
    rec = concert_recording(music, SR, rng, _room(), bed, steps=("crowd",))
    # No room, PA or phone: the target is the dry music, and what is left over is the crowd alone.
    assert si_sdr(rec.target, rec.dry) > 60
    snr = si_sdr(rec.recording, rec.target)
    assert abs(snr - rec.params["snr_db"]) < 1.0


def test_room_only_target_keeps_the_early_part_and_drops_the_tail():
    rng = np.random.default_rng(4)
    music = _music(3.0)
    rec = concert_recording(music, SR, rng, _room(1.5), np.zeros_like(music), steps=("room",))
    # The target is the direct sound (this room has no early reflections); the recording holds the tail.
    assert si_sdr(rec.target, rec.dry) > 60
    assert si_sdr(rec.recording, rec.target) < 10


def test_a_song_that_ends_leaves_a_silent_target_and_a_crowd_in_the_recording():
    rng = np.random.default_rng(5)
    music = _music(4.0)
    end = int(2.0 * SR)
    bed, kinds = crowd.concert_crowd(rng, music.shape[-1], SR, _bank(), music, ("chatter",), between_songs_from=end)
    assert "between_songs" in kinds
    rec = concert_recording(music, SR, rng, _room(0.5), bed, steps=("room", "crowd"), music_end=end)
    after = slice(end + int(0.1 * SR), None)
    assert np.sqrt(np.mean(rec.target[:, after] ** 2)) < 1e-6
    assert np.sqrt(np.mean(rec.recording[:, after] ** 2)) > 1e-3
    assert rec.params["music_end_s"] == pytest.approx(2.0)


def test_fade_out_music_is_silent_after_the_end():
    y = fade_out_music(np.ones((2, 1000)), 1000, end=600, fade_s=0.1)
    assert np.all(y[:, 600:] == 0) and np.all(y[:, :500] == 1) and 0 < y[0, 550] < 1


def test_aac_round_trip_keeps_the_music_in_time():
    x = _music(2.0)
    y = aac_roundtrip(x * 2, SR, 96)
    assert y.shape == x.shape
    assert si_sdr(y, x) > 10


def test_phone_limiter_holds_the_ceiling_it_picked():
    rng = np.random.default_rng(6)
    x = _music(2.0) * np.linspace(0.2, 3.0, 2 * SR)
    y = phone_limiter(x, SR, rng)
    assert np.abs(y).max() < np.abs(x).max() * 0.71   # at least 3 dB taken off the loudest peak
    assert si_sdr(y[:, :SR // 4], x[:, :SR // 4]) > 30      # the quiet start passes untouched


@pytest.mark.parametrize("kind", crowd.CROWD_KINDS)
def test_every_crowd_kind_makes_sound(kind):
    rng = np.random.default_rng(7)
    music = _music(2.0)
    applause = _music(3.0, seed=9) if kind == "real_applause" else None
    for _ in range(20):   # kinds are drawn at random; at least one is always taken
        bed, kinds = crowd.concert_crowd(rng, music.shape[-1], SR, _bank(), music, (kind,), applause)
        if kind in kinds:
            break
    assert kinds == [kind]
    assert np.isfinite(bed).all() and np.std(bed) > 0
