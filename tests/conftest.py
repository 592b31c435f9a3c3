"""Shared fixtures: small synthetic signals written to temp files. No network, no shared data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("RESONATE_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "resonate-test-cache"))


def tone_mix(seconds: float, sr: int = 44100, channels: int = 2, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """A music-like test signal: a few harmonic partials with a slow swell, plus white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)
    music = sum(a * np.sin(2 * np.pi * f * t + p) for a, f, p in [(0.2, 220, 0), (0.1, 440, 1), (0.05, 1320, 2), (0.03, 3300, 0.5)])
    chans = [music * env * (1 - 0.1 * c) + noise * rng.standard_normal(t.size) for c in range(channels)]
    return np.stack(chans).astype(np.float32)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: extra torch threads only add contention on a small shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_wav(tmp_path):
    def _write(x: np.ndarray, sr: int = 44100, name: str = "in.wav", subtype: str = "PCM_16") -> Path:
        p = tmp_path / name
        sf.write(str(p), np.atleast_2d(x).T, sr, subtype=subtype)
        return p
    return _write
