"""How a restore model's effect depends on the input level (the v3 collapse, issue 13).

For each weights file and each input gain, the mean SI-SDR gain over the first N pairs of a
folder, and how far the output is from a scaled copy of the input (residual after the best
scaling, dB relative to the output: -57 dB means the model only scaled its input).

    python scripts/restore_level_check.py --data data/restore_v3/val --clips 12 \
        resonate/models/weights/restore_unet.safetensors runs/restore_v4/best.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resonate.models.inference import Restorer
from resonate.models.io import load_model
from resonate.train.dataset import find_pairs, load_pair
from resonate.train.metrics import si_sdr

GAINS_DB = (-30.0, -20.0, -10.0, 0.0)


def copy_residual_db(out: np.ndarray, x: np.ndarray) -> float:
    scale = float(np.dot(out.ravel(), x.ravel()) / (np.dot(x.ravel(), x.ravel()) + 1e-20))
    res = out - scale * x
    return float(10 * np.log10((np.sum(res ** 2) + 1e-20) / (np.sum(out ** 2) + 1e-20)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--clips", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs = [load_pair(p) for p in find_pairs(args.data)[: args.clips]]
    print(f"{'weights':50s} {'gain dB':>8s} {'SI-SDR gain':>12s} {'copy residual':>14s}")
    for w in args.weights:
        restorer = Restorer(load_model(w, "cpu"), "cpu")
        for g_db in GAINS_DB:
            g = np.float32(10 ** (g_db / 20))
            gains, residuals = [], []
            for clean, noisy, _ in pairs:
                out = restorer.process(noisy * g)
                gains.append(si_sdr(out, clean) - si_sdr(noisy, clean))
                residuals.append(copy_residual_db(out, noisy * g))
            print(f"{w[-50:]:50s} {g_db:8.0f} {np.mean(gains):+12.2f} {np.median(residuals):14.1f}")


if __name__ == "__main__":
    main()
