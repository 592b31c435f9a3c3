"""Training loss: compressed-magnitude L1 + compressed-complex L1 (phase-aware) + multi-resolution STFT,
optionally a waveform SI-SDR term (what the evaluation reports; used for fine-tuning) and an L1
term pulling the model's minimum-phase EQ towards the EQ that maps the input onto the target."""

from __future__ import annotations

from dataclasses import dataclass

import auraloss
import torch
from torch import nn

from resonate.models.spectral import compress, stft
from resonate.models.unet import EQ_LIMIT_NEPER, eq_shape, moving_average


@dataclass(frozen=True)
class LossWeights:
    magnitude: float = 1.0
    complex: float = 1.0
    mrstft: float = 0.5
    si_sdr: float = 0.0     # weight per dB of negative SI-SDR
    eq: float = 0.0         # weight per neper of EQ error (models with a minimum-phase EQ)


def eq_target(noisy: torch.Tensor, target: torch.Tensor, n_fft: int, hop: int, frames: int) -> torch.Tensor:
    """The EQ that maps ``noisy`` onto ``target``: half the log ratio of their powers per bin,
    each averaged over ``frames`` STFT frames (as the model averages its own), in nepers.

    This is the EQ whose minimum phase undoes most of what PA and mic filters did to the phase
    (an oracle with it gains ~3 dB SI-SDR on the validation pairs).
    """
    bins = n_fft // 2
    p_y = moving_average(stft(noisy, n_fft, hop)[:, :bins].abs().pow(2), frames)
    p_t = moving_average(stft(target, n_fft, hop)[:, :bins].abs().pow(2), frames)
    floor = 1e-12
    return (0.5 * (torch.log(p_t + floor) - torch.log(p_y + floor))).clamp(-EQ_LIMIT_NEPER, EQ_LIMIT_NEPER)


def si_sdr_db(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR per batch item (dB) over the last axis."""
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / ((est - target).pow(2).sum(-1) + eps))


class RestoreLoss(nn.Module):
    def __init__(self, n_fft: int, hop: int, power: float, weights: LossWeights = LossWeights()):
        super().__init__()
        self.n_fft, self.hop, self.power, self.weights = n_fft, hop, power, weights
        self.mrstft = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=[256, 1024, 2048], hop_sizes=[64, 256, 512], win_lengths=[256, 1024, 2048])

    def forward(self, est_wav: torch.Tensor, est_c: torch.Tensor, target_wav: torch.Tensor,
                eq: torch.Tensor | None = None, noisy_wav: torch.Tensor | None = None,
                eq_frames: int = 1, eq_shape_limit_db: float = 0.0) -> tuple[torch.Tensor, dict]:
        target_c = compress(stft(target_wav, self.n_fft, self.hop), self.power)
        mag = (est_c.abs() - target_c.abs()).abs().mean()
        cplx = (est_c - target_c).abs().mean()
        mr = self.mrstft(est_wav.unsqueeze(1), target_wav.unsqueeze(1))
        w = self.weights
        total = w.magnitude * mag + w.complex * cplx + w.mrstft * mr
        parts = {"mag": float(mag.detach()), "cplx": float(cplx.detach()), "mrstft": float(mr.detach())}
        if w.si_sdr:
            sdr = si_sdr_db(est_wav.reshape(est_wav.shape[0], -1), target_wav.reshape(target_wav.shape[0], -1)).mean()
            total = total - w.si_sdr * sdr
            parts["sisdr"] = float(sdr.detach())
        if w.eq and eq is not None and noisy_wav is not None:
            # Up to a constant per frame: a broadband gain has no phase (and AGC pumping and the
            # crowd's share make it vary a lot), so only the EQ's shape is scored.
            target_eq = eq_target(noisy_wav, target_wav, self.n_fft, self.hop, eq_frames)
            if eq_shape_limit_db > 0:   # the model's EQ is a limited shape: so is what it is scored against
                target_eq = eq_shape(target_eq, eq_shape_limit_db)
            err = eq - target_eq
            eq_err = (err - err.mean(dim=1, keepdim=True)).abs().mean()
            total = total + w.eq * eq_err
            parts["eq"] = float(eq_err.detach())
        return total, parts
