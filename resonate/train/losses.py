"""Training loss: compressed-magnitude L1 + compressed-complex L1 (phase-aware) + multi-resolution STFT,
optionally a waveform SI-SDR term (what the evaluation reports; used for fine-tuning), an L1
term pulling the model's minimum-phase EQ towards the EQ that maps the input onto the target, and
an L1 on band levels in dB (the spectral balance: SI-SDR hardly sees a quiet band, so a model
trained for it may take the highs away with a crowd)."""

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
    band_level: float = 0.0  # weight per dB of band-level error (see band_levels_db)


BAND_EDGES_HZ = tuple(100.0 * 2 ** (k / 3) for k in range(22))   # third octaves from 100 Hz, and 16 kHz on top
BAND_FRAMES = 8             # frames (of 2048 / 512 at 44.1 kHz: ~93 ms) each band level is averaged over
BAND_FLOOR_DB = 60.0        # levels this far under the clip's loudest band level count as this far under


def band_levels_db(wav: torch.Tensor, sample_rate: int, n_fft: int = 2048, hop: int = 512) -> torch.Tensor:
    """Third-octave band levels (dB, (batch, bands, frames / BAND_FRAMES)) of ``wav`` (batch, n):
    power per band, averaged over BAND_FRAMES frames."""
    power = stft(wav, n_fft, hop).abs().pow(2)
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate).to(power.device)
    top = min(16000.0, sample_rate / 2)
    edges = [f for f in BAND_EDGES_HZ if f < top] + [top]
    masks = [m for m in ((freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:])) if m.any()]
    bands = torch.stack([power[:, m].mean(dim=1) for m in masks], 1)
    frames = bands.shape[-1] // BAND_FRAMES * BAND_FRAMES
    if frames == 0:
        return 10 * torch.log10(bands.mean(-1, keepdim=True) + 1e-12)
    pooled = bands[..., :frames].reshape(*bands.shape[:2], -1, BAND_FRAMES).mean(-1)
    return 10 * torch.log10(pooled + 1e-12)


def band_level_error_db(est_wav: torch.Tensor, target_wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean |band level of est - band level of target| in dB, both floored at BAND_FLOOR_DB under
    the target's loudest band level (silence is not scored finer than that)."""
    est, tgt = band_levels_db(est_wav, sample_rate), band_levels_db(target_wav, sample_rate)
    floor = tgt.amax(dim=(1, 2), keepdim=True) - BAND_FLOOR_DB
    return (torch.maximum(est, floor) - torch.maximum(tgt, floor)).abs().mean()


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
    def __init__(self, n_fft: int, hop: int, power: float, weights: LossWeights = LossWeights(),
                 sample_rate: int = 44100):
        super().__init__()
        self.n_fft, self.hop, self.power, self.weights = n_fft, hop, power, weights
        self.sample_rate = sample_rate
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
        if w.band_level:
            band = band_level_error_db(est_wav.reshape(-1, est_wav.shape[-1]), target_wav.reshape(-1, target_wav.shape[-1]),
                                       self.sample_rate)
            total = total + w.band_level * band
            parts["band"] = float(band.detach())
        return total, parts
