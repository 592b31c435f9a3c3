"""Fixtures for the separation tests: a tiny Demucs in a local model folder, and one separated show.

Bind the fixtures you use in a test module (``tiny_models = separation_fixtures.tiny_models``).
The model folder is built once per session and loaded through the same ``--models-dir`` path
that real weights take.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from resonate.separation.testing import make_tiny_htdemucs_repo
from resonate.stages.base import StageContext
from resonate.stages.separate import SeparateConfig, SeparateStage

SR = 44100
SHOW_SECONDS = 7.0
# ~3 s windows over a 1 s model segment: three seams in the show, so seams get tested.
SHOW_CONFIG = dict(window_seconds=3.0, preset="neutral", shifts=0)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """The tiny model's ops are too small to share out: on a busy machine, extra threads only wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def single_thread():
    with one_torch_thread():
        yield


def show_signal(seconds: float, sr: int = SR, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 55 * t) * (t % 0.5 < 0.1)
    return np.stack([tone * (1 - 0.2 * c) + 0.03 * rng.standard_normal(t.size) for c in range(channels)]).astype(np.float32)


def run_stage(config: SeparateConfig, ctx: StageContext, x: np.ndarray, block: int = 8192) -> tuple[SeparateStage, np.ndarray]:
    stage = SeparateStage(config)
    stage.open(ctx)
    out = list(stage.stream(iter([x[:, i:i + block] for i in range(0, x.shape[-1], block)])))
    return stage, np.concatenate(out, axis=-1)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demucs-models")
    make_tiny_htdemucs_repo(folder, "htdemucs")
    make_tiny_htdemucs_repo(folder, "htdemucs_6s")
    return folder


@dataclass
class SeparatedShow:
    x: np.ndarray
    y: np.ndarray
    stems: dict[str, np.ndarray]        # read back from the exported 32-bit float files
    ctx: StageContext
    report: dict


@pytest.fixture(scope="session")
def separated_show(tiny_models, tmp_path_factory) -> SeparatedShow:
    """A 7 s stereo show through the stage once (neutral preset, stems exported as float WAV)."""
    root = tmp_path_factory.mktemp("show")
    x = show_signal(SHOW_SECONDS)
    wav = root / "show.wav"
    sf.write(str(wav), x.T, SR, subtype="FLOAT")
    ctx = StageContext(
        sample_rate=SR, channels=2, total_frames=x.shape[-1], models_dir=tiny_models, input_path=wav,
        stems_dir=root / "stems", cache_dir=root / "cache", output_format={"format": "wav", "bit_depth": "32f"},
    )
    with one_torch_thread():
        stage, y = run_stage(SeparateConfig(**SHOW_CONFIG), ctx, x)
    stems = {Path(p).stem.split("-")[-1]: sf.read(p, dtype="float32", always_2d=True)[0].T
             for p in stage.report()["stem_files"]}
    return SeparatedShow(x, y, stems, ctx, stage.report())
