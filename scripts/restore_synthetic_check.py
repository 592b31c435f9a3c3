"""Score restore weights on the synthetic clips of tests/test_restore_quality.py, over several seeds.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/restore_synthetic_check.py WEIGHTS [WEIGHTS ...] [--seeds 3]

The development set's crowds, rooms and music come from the same generators as the training
pairs; these clips do not (plucked notes, bursts of noise for claps, buzzy formants for voices, an
exponential tail for the room), so they show how a model does on damage it was not trained on.
Per weights file and seed: SI-SDR gain with a crowd 6 dB under the music, how much more is taken
off where the song has ended than where it plays, the same for a 1.5-s hall's tail, and clean
music's SI-SDR through the model. The test suite's thresholds: > 1, > 4, > 0.2 and > 25 dB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import signal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import test_restore_quality as q  # noqa: E402

from resonate.models.inference import Restorer  # noqa: E402
from resonate.models.io import load_model  # noqa: E402
from resonate.train.metrics import si_sdr  # noqa: E402


def scores(restorer: Restorer, seed: int) -> tuple[float, float, float, float]:
    sr = q.SR
    dry = q._music(3 * seed)
    end = dry.shape[-1] // 2
    dry[:, end:] = 0.0
    crowd = q._crowd(3 * seed + 2)
    crowd *= np.std(dry[:, :end]) / np.std(crowd[:, :end]) * 10 ** (-6 / 20)
    noisy = (dry + crowd).astype(np.float32)
    out = restorer.process(noisy)
    music = slice(0, end)
    under = si_sdr(out[:, music], dry[:, music]) - si_sdr(noisy[:, music], dry[:, music])
    after = q._removed_db(noisy, out, slice(end + sr // 4, None), slice(sr // 2, end))
    dry = q._music(3 * seed + 1)
    dry[:, end:] = 0.0
    wet = signal.fftconvolve(dry, q._room(1.5, 3 * seed + 3), axes=-1)[:, : dry.shape[-1]].astype(np.float32)
    tail = q._removed_db(wet, restorer.process(wet), slice(end + sr // 20, end + sr), slice(sr // 2, end))
    clean = q._music(3 * seed + 5).astype(np.float32)
    return under, after, tail, si_sdr(restorer.process(clean), clean)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", nargs="+")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    print(f"{'weights':40s} {'seed':>4s} {'crowd under music':>18s} {'crowd after end':>16s} {'tail':>6s} {'clean':>6s}")
    for w in args.weights:
        restorer = Restorer(load_model(w, "cpu"), "cpu")
        rows = [scores(restorer, s) for s in range(args.seeds)]
        for s, r in enumerate(rows):
            print(f"{w[-40:]:40s} {s:4d} {r[0]:+18.2f} {r[1]:16.2f} {r[2]:6.2f} {r[3]:6.1f}")
        m = np.mean(rows, axis=0)
        print(f"{w[-40:]:40s} {'mean':>4s} {m[0]:+18.2f} {m[1]:16.2f} {m[2]:6.2f} {min(r[3] for r in rows):6.1f} (min)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
