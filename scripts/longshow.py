"""Stream a generated long show through the separate stage with the tiny model, for memory checks.

    /usr/bin/time -v .venv/bin/python scripts/longshow.py 20 /tmp/longshow [--preset concert]

Writes a stereo 44.1 kHz 16-bit file of the given length (once), a tiny model folder and a cache
folder under the work folder, empties the cache, runs the stage block by block as the pipeline does and prints
the time and the stage report. Peak RSS comes from ``/usr/bin/time -v``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from resonate.audio.io import read_blocks  # noqa: E402
from resonate.separation.cache import clear_cache  # noqa: E402
from resonate.separation.testing import make_tiny_htdemucs_repo  # noqa: E402
from resonate.stages.base import StageContext  # noqa: E402
from resonate.stages.separate import SeparateConfig, SeparateStage  # noqa: E402

SR = 44100


def write_show(path: Path, minutes: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", SR, 2, "PCM_16") as f:
        for start in range(0, int(minutes * 60 * SR), 10 * SR):
            t = (start + np.arange(10 * SR)) / SR
            x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.03 * rng.standard_normal((2, t.size))
            f.write(x.T.astype(np.float32))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("minutes", type=float)
    p.add_argument("workdir", type=Path)
    p.add_argument("--preset", default="neutral")
    p.add_argument("--window-seconds", type=float, default=SeparateConfig.window_seconds)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 suits a busy machine)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    wav = args.workdir / f"show_{args.minutes:g}min.wav"
    if not wav.exists():
        write_show(wav, args.minutes)
    models = args.workdir / "models"
    if not (models / "htdemucs.yaml").exists():
        make_tiny_htdemucs_repo(models)
    info = sf.info(str(wav))
    ctx = StageContext(sample_rate=SR, channels=2, total_frames=info.frames, models_dir=models, input_path=wav,
                       cache_dir=args.workdir / "cache")
    clear_cache(ctx.cache_dir)          # so that every run separates (and writes the cache, as users' runs do)
    stage = SeparateStage(SeparateConfig(preset=args.preset, window_seconds=args.window_seconds))
    start = time.perf_counter()
    stage.open(ctx)
    frames = sum(b.shape[-1] for b in stage.stream(read_blocks(wav, 1 << 16)))
    elapsed = time.perf_counter() - start
    assert frames == info.frames, (frames, info.frames)
    print(f"{args.minutes:g} min: {elapsed:.1f} s, RTF {elapsed / (frames / SR):.3f}, {stage.report()}")


if __name__ == "__main__":
    main()
