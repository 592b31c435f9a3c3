"""Peak memory and speed of the separate stage in a community-model mode, against the show's length.

A tiny random Mel-Band RoFormer (the real architecture from bs-roformer, saved in the community's
YAML + state-dict format and loaded through the models folder like downloaded weights) runs over
generated stereo shows of each length, in a fresh process per length, with every other stage
bypassed and the stem cache off. Memory should stay flat: the stage holds one model window and
the overlap-add's crossfade, whatever the length. The figures say nothing about the speed of the
real models (384-dim, 6-12 layers), only about the engine around them.

    .venv/bin/python scripts/bench_community.py --minutes 5 20

prints, per length: audio seconds, processing seconds, RTF, model windows, and peak RSS (MB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SR = 44100
BLOCK = 1 << 18


def write_show(path: Path, seconds: float, seed: int = 0) -> None:
    """Tones with a noisy 'crowd', written block by block so this process stays small too."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", SR, 2, subtype="PCM_16") as f:
        for start in range(0, int(seconds * SR), BLOCK):
            n = min(BLOCK, int(seconds * SR) - start)
            t = (start + np.arange(n)) / SR
            tone = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t)
            f.write(np.stack([tone, 0.8 * tone], axis=1) + 0.05 * rng.standard_normal((n, 2)))


def child(wav: Path, models_dir: Path, out: Path) -> None:
    """One run in this process; prints a JSON line with its figures."""
    import torch

    from resonate.pipeline import ChainSettings, process_file
    from resonate.stages import STAGE_ORDER

    torch.set_num_threads(1)
    skip = tuple(s for s in STAGE_ORDER if s != "separate")
    settings = ChainSettings(overrides={"separate": {"model": "tiny_crowd_melband", "keep_percent": 20, "cache": False}},
                             skip=skip)
    started = time.perf_counter()
    report = process_file(wav, out, settings, models_dir=models_dir, device="cpu")
    elapsed = time.perf_counter() - started
    sep = next(s for s in report["stages"] if s["name"] == "separate")
    if sep["skipped"]:
        raise SystemExit(f"separate was skipped: {sep['reason']}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": report["seconds"], "elapsed": round(elapsed, 1), "rtf": round(elapsed / report["seconds"], 4),
                      "windows": sep["windows"], "chunk_seconds": sep["chunk_seconds"], "peak_rss_mb": round(peak_mb)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 20.0], help="show lengths to measure")
    parser.add_argument("--work-dir", help="where the shows and models go (default: a temporary folder, removed)")
    parser.add_argument("--child", nargs=3, metavar=("WAV", "MODELS_DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*(Path(a) for a in args.child))
        return

    from resonate.separation import community
    from resonate.separation.testing import make_tiny_community_models

    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        # A 1 s model window (a multiple of the tiny model's 64-sample hop), 25 % crossfade.
        catalogue = make_tiny_community_models(work / "published", work / "models", audio={"chunk_size": 64 * 690})
        env = dict(os.environ, OMP_NUM_THREADS="1", **{community.CATALOGUE_ENV: str(catalogue)})
        print(f"{'minutes':>8} {'audio s':>8} {'time s':>8} {'RTF':>8} {'windows':>8} {'peak RSS MB':>12}")
        for minutes in args.minutes:
            wav = work / f"show_{minutes:g}min.wav"
            write_show(wav, minutes * 60)
            out = subprocess.run([sys.executable, __file__, "--child", str(wav), str(work / "models"),
                                  str(work / "out.wav")], env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr[-2000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{minutes:>8g} {r['seconds']:>8.0f} {r['elapsed']:>8.1f} {r['rtf']:>8.4f} {r['windows']:>8} "
                  f"{r['peak_rss_mb']:>12}")
            wav.unlink()


if __name__ == "__main__":
    main()
