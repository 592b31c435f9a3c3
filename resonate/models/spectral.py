"""STFT helpers shared by the restore model, its losses and its tests.

The model sees each channel's STFT with magnitudes compressed by a power law (|X|**0.3): quiet
reverb tails and loud transients then live on comparable scales, which is what lets a small
network learn both. The phase is kept, so the network can correct it, not only rescale it.
"""

from __future__ import annotations

import torch

COMPRESS_POWER = 0.3
_EPS = 1e-8


def hann(n_fft: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, device=device, dtype=dtype)


def stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(batch, n) float -> (batch, n_fft // 2 + 1, frames) complex; frames = n // hop + 1."""
    return torch.stft(x, n_fft, hop, window=hann(n_fft, x.device, x.dtype), center=True,
                      pad_mode="reflect", return_complex=True)


def istft(spec: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    window = hann(n_fft, spec.device, spec.real.dtype)
    return torch.istft(spec, n_fft, hop, window=window, center=True, length=length)


def compress(spec: torch.Tensor, power: float = COMPRESS_POWER) -> torch.Tensor:
    """Complex spectrum -> complex spectrum with |.|**power and the same phase."""
    mag = spec.abs().clamp_min(_EPS)
    return spec * (mag ** (power - 1.0))


def decompress(spec_c: torch.Tensor, power: float = COMPRESS_POWER) -> torch.Tensor:
    mag = spec_c.abs().clamp_min(_EPS)
    return spec_c * (mag ** (1.0 / power - 1.0))
