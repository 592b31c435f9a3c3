"""Where the restore model's SI-SDR gain stops: how much the minimum phase of its EQ is worth,
against the oracle EQ and against a blind "match the average music spectrum" EQ.

For every pair in a folder (as `evaluate` reads them) it measures the SI-SDR gain over the input of
- the model's output;
- the input with only the minimum phase of the model's own EQ applied (magnitude untouched);
- the same with the oracle EQ (input -> target, 1-s average, shape only, +-12 dB: what the EQ
  head is trained towards);
- the model's output with the minimum phase of a blind EQ: the octave-smoothed difference between
  the median long-term spectrum of the clean training targets and the output's own, +-12 dB;
and, for that blind EQ, what it does to clean input (the "do no harm" pass-through).

Run:  .venv/bin/python scripts/eq_phase_diagnostics.py --model resonate/models/weights/restore_unet.safetensors \
          --data data/restore_v2/val --reference data/restore_v2/train      (about 30 s on 2 cores)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resonate.models.io import load_model  # noqa: E402
from resonate.models.spectral import istft, stft  # noqa: E402
from resonate.models.unet import eq_shape  # noqa: E402
from resonate.train.dataset import find_pairs, load_pair  # noqa: E402
from resonate.train.losses import eq_target, si_sdr_db  # noqa: E402

NEPER_PER_DB = math.log(10) / 20


def long_term_log_spectrum(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Natural-log mean power per bin over the whole clip and all channels, level removed."""
    p = stft(x, n_fft, hop).abs().pow(2).mean(dim=(0, -1)).double()
    log_p = torch.log(p + 1e-10)
    return log_p - log_p[10:300].mean()   # level from the bins where music always has energy


def octave_smoother(bins: int) -> torch.Tensor:
    k = np.maximum(np.arange(bins), 1)
    m = np.zeros((bins, bins))
    for i, c in enumerate(k):
        m[i, int(c * 2 ** -0.5): min(bins, math.ceil(c * 2 ** 0.5) + 1)] = 1.0
    return torch.from_numpy(m / m.sum(axis=1, keepdims=True))


def with_phase_of(model, x: torch.Tensor, log_gain: torch.Tensor) -> torch.Tensor:
    """``x`` with the minimum phase of ``log_gain`` (bins below Nyquist: static (bins,) or
    (b, bins, frames)) applied the way the model applies its own EQ's."""
    cfg = model.config
    gain = log_gain[None, :, None] if log_gain.dim() == 1 else log_gain
    phi = model._minphase_angle(gain.float())
    spec = stft(x, cfg.n_fft, cfg.hop)
    spec[:, : cfg.bins] *= torch.polar(torch.ones_like(phi), phi)
    return istft(spec, cfg.n_fft, cfg.hop, x.shape[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="pair folder to measure")
    ap.add_argument("--reference", required=True, help="pair folder whose clean targets give the average spectrum")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model).eval()
    cfg = model.config
    n_fft, hop, limit = cfg.n_fft, cfg.hop, 12 * NEPER_PER_DB
    smooth = octave_smoother(n_fft // 2 + 1)

    ref_pairs = find_pairs(args.reference)[::3]
    reference = torch.stack([long_term_log_spectrum(torch.from_numpy(load_pair(p)[0]), n_fft, hop)
                             for p in ref_pairs]).median(dim=0).values

    def blind_eq(x: torch.Tensor) -> torch.Tensor:
        g = (smooth @ (0.5 * (reference - long_term_log_spectrum(x, n_fft, hop)))).clamp(-limit, limit)
        return (g - g.mean())[: cfg.bins]

    rows: dict[str, list[float]] = {}
    for pair in find_pairs(args.data):
        clean, rec, _ = load_pair(pair)
        n = min(clean.shape[-1], rec.shape[-1])
        clean, rec = torch.from_numpy(clean[:, :n]), torch.from_numpy(rec[:, :n])
        if rec.shape[0] != clean.shape[0]:
            rec = rec.mean(dim=0, keepdim=True).expand_as(clean).contiguous()
        base = si_sdr_db(rec, clean)
        with torch.inference_mode():
            out, _, model_eq = model.forward_with_spec(rec)
            oracle = eq_shape(eq_target(rec, clean, n_fft, hop, cfg.eq_frames), cfg.eq_shape_limit_db)
            clean_out = model(clean)
        gains = {
            "model output": si_sdr_db(out, clean),
            "input + model's EQ phase": si_sdr_db(with_phase_of(model, rec, model_eq), clean),
            "input + oracle EQ phase": si_sdr_db(with_phase_of(model, rec, oracle), clean),
            "model output + blind EQ phase": si_sdr_db(with_phase_of(model, out, blind_eq(out)), clean),
        }
        for name, sdr in gains.items():
            rows.setdefault(name, []).append(float((sdr - base).mean()))
        rows.setdefault("EQ shape error, model (dB)", []).append(float((model_eq - oracle).abs().mean() / NEPER_PER_DB))
        rows.setdefault("EQ shape error, no EQ (dB)", []).append(float(oracle.abs().mean() / NEPER_PER_DB))
        rows.setdefault("clean pass-through, model (SI-SDR dB)", []).append(float(si_sdr_db(clean_out, clean).mean()))
        rows.setdefault("clean pass-through, + blind EQ phase (SI-SDR dB)", []).append(
            float(si_sdr_db(with_phase_of(model, clean_out, blind_eq(clean_out)), clean).mean()))

    print(f"{len(rows['model output'])} pairs in {args.data}; SI-SDR gains over the input unless noted")
    for name, v in rows.items():
        print(f"{name:50s} mean {np.mean(v):+7.2f}  median {np.median(v):+7.2f}  min {np.min(v):+7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
