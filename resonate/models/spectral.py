"""STFT helpers shared by the restore model, its losses and its tests.

The model sees each channel's STFT with magnitudes compressed by a power law (|X|**0.3): quiet
reverb tails and loud transients then live on comparable scales, which is what lets a small
network learn both. The phase is kept, so the network can correct it, not only rescale it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    return torch.complex(*compress_parts(spec, power))


def decompress(spec_c: torch.Tensor, power: float = COMPRESS_POWER) -> torch.Tensor:
    return decompress_parts(spec_c.real, spec_c.imag, power)


def compress_parts(spec: torch.Tensor, power: float = COMPRESS_POWER) -> tuple[torch.Tensor, torch.Tensor]:
    """``compress`` returning the real and imaginary parts, as the model consumes them.

    |X|^(p-1) as exp(log(|X|^2) (p-1)/2): no complex abs (hypot) and no ``pow``, the two
    slowest elementwise ops on CPU; this and ``decompress_parts`` took a tenth of the model's time.
    """
    re, im = spec.real, spec.imag
    scale = torch.exp(torch.log((re * re + im * im).clamp_min(_EPS * _EPS)) * ((power - 1.0) / 2))
    return re * scale, im * scale


def decompress_parts(re: torch.Tensor, im: torch.Tensor, power: float = COMPRESS_POWER) -> torch.Tensor:
    """``decompress`` of a spectrum given as its real and imaginary parts."""
    scale = torch.exp(torch.log((re * re + im * im).clamp_min(_EPS * _EPS)) * ((1.0 / power - 1.0) / 2))
    return torch.complex(re * scale, im * scale)


def minimum_phase(log_gain: torch.Tensor, n_fft: int, oversample: int = 4) -> torch.Tensor:
    """Phase (radians) of the minimum-phase filter with the given natural-log magnitude.

    ``log_gain`` is (..., n_fft // 2 + 1) on the rfft bins; the real cepstrum, folded onto
    positive quefrencies, gives ``log H`` whose imaginary part is the phase (the Hilbert-transform
    relation between log magnitude and phase of a minimum-phase filter). The log gain is
    interpolated onto an ``oversample`` times finer grid first: on the STFT's own grid the
    cepstrum of a steep roll-off aliases (0.5 rad of error for a 3rd-order 200 Hz high-pass at
    n_fft 1024, 0.05 rad with 4x).
    """
    n = n_fft * oversample
    if oversample > 1:
        shape = log_gain.shape
        fine = F.interpolate(log_gain.reshape(-1, 1, shape[-1]), size=n // 2 + 1, mode="linear", align_corners=True)
        log_gain = fine.reshape(*shape[:-1], n // 2 + 1)
    cep = torch.fft.irfft(log_gain, n, dim=-1)
    fold = torch.zeros(n, dtype=cep.dtype, device=cep.device)
    fold[0] = 1.0
    fold[1: n // 2] = 2.0
    fold[n // 2] = 1.0
    return torch.fft.rfft(cep * fold, dim=-1).imag[..., ::oversample]
