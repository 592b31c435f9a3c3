"""The damage gate: how much of the restore model's change to apply, decided per window from what
the window and the change look like.

The restore model is trained on every kind of damage at once, so on a given recording it is
sometimes too timid (a thick crowd it could remove more of) and sometimes changes music that
needed nothing (clean input, or damage it does not know). The gate measures each window the
model processes, with the model's output in hand, and sets ``alpha`` in ``output = x + alpha (y - x)``:
0 leaves the window as it was, 1 is the model as trained, up to ``max_alpha`` pushes the same
change further. "Do no harm" is then a property the gate measures on the input and the
change — not a model that learned to be timid.

Features (all ratios, so the gate is level-invariant like the model): per band, how much energy
the change holds against the input (what the model wants to remove or add there, less the part
that only scales the window) and the input's
spectral shape; how that removal varies over the window's frames; how the change correlates with
the input; the input's flatness, crest factor and clipping; its level modulation. A two-layer MLP
maps them to ``alpha``. It is fitted (``resonate.train.gate``) to maximise the SI-SDR of the
blended output on the training pairs, with clean music among them (where the best ``alpha`` is 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

BAND_EDGES_HZ = (50.0, 150.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0, 9600.0, 16000.0)
N_FFT = 2048
HOP = 1024
FLOOR_DB = -60.0          # frames this far below the window's loudest frame do not count
CHANGE_FLOOR = 1e-4       # -40 dB
SHAPE_FLOOR = 1e-6        # -60 dB
N_FEATURES = 2 * (len(BAND_EDGES_HZ) - 1) + 10


@dataclass(frozen=True)
class GateConfig:
    n_features: int = N_FEATURES
    hidden: int = 8
    max_alpha: float = 1.0
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GateConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _power_frames(x: np.ndarray) -> np.ndarray:
    """|STFT|^2 of a mono signal, (frames, bins); short signals are zero-padded to one frame."""
    if x.shape[-1] < N_FFT:
        x = np.pad(x, (0, N_FFT - x.shape[-1]))
    n_frames = 1 + (x.shape[-1] - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    spec = np.fft.rfft(x[idx] * np.hanning(N_FFT).astype(np.float32), axis=-1)
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float64)


def window_features(x: np.ndarray, y: np.ndarray, sample_rate: int) -> np.ndarray:
    """The gate's features of one window: input ``x`` and model output ``y``, (channels, n) float32."""
    xm = np.asarray(x, dtype=np.float64).mean(axis=0)
    dm = np.asarray(y, dtype=np.float64).mean(axis=0) - xm
    # A change that only scales the window is no change to what it holds (and none to SI-SDR):
    # the features look at the rest.
    corr = float(np.dot(dm, xm) / (np.sqrt(np.dot(dm, dm) * np.dot(xm, xm)) + 1e-30))
    scale = float(np.dot(dm, xm) / (np.dot(xm, xm) + 1e-30))
    dm = dm - scale * xm
    px, pd = _power_frames(xm), _power_frames(dm)
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / sample_rate)
    edges = [min(e, sample_rate / 2) for e in BAND_EDGES_HZ]
    ex = np.stack([px[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    ed = np.stack([pd[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    total = ex.sum() + 1e-30
    eps = total * 1e-9 / max(ex.size, 1)            # relative: level-invariant
    # Floors keep the features in a range a small network reads well: a change 40 dB under the
    # input is as good as none, a band 60 dB under the whole is as good as empty.
    band_change = 10 * np.log10((ed.sum(axis=0) + CHANGE_FLOOR * ex.sum(axis=0) + eps) / (ex.sum(axis=0) + eps))
    band_shape = 10 * np.log10(np.maximum(ex.sum(axis=0) / total, SHAPE_FLOOR))
    frame_x, frame_d = ex.sum(axis=1), ed.sum(axis=1)
    loud = frame_x > frame_x.max() * 10 ** (FLOOR_DB / 10)
    if not loud.any():
        loud = np.ones_like(frame_x, dtype=bool)
    frame_change = 10 * np.log10((frame_d[loud] + CHANGE_FLOOR * frame_x[loud] + eps) / (frame_x[loud] + eps))
    frame_level = 10 * np.log10(frame_x[loud] + eps)
    flatness = float(np.mean(np.exp(np.mean(np.log(px[loud] + eps), axis=1)) / (np.mean(px[loud], axis=1) + eps)))
    peak = float(np.max(np.abs(xm))) + 1e-30
    rms = float(np.sqrt(np.mean(xm ** 2))) + 1e-30
    near_peak = float(np.mean(np.abs(xm) > 0.99 * peak))
    stats = [
        float(np.mean(frame_change)), float(np.std(frame_change)),
        float(np.percentile(frame_change, 10)), float(np.percentile(frame_change, 90)),
        corr, 20 * math.log10(abs(1.0 + scale) + 1e-6), 10 * math.log10(flatness + 1e-12), 20 * math.log10(peak / rms),
        math.log10(near_peak + 1e-6), float(np.std(frame_level)),
    ]
    return np.concatenate([band_change, band_shape, stats]).astype(np.float32)


class DamageGate(nn.Module):
    """Features of a window -> ``alpha`` in [0, max_alpha]. Features are standardised with the
    training set's mean and spread, which travel with the weights."""

    def __init__(self, config: GateConfig | None = None):
        super().__init__()
        self.config = config or GateConfig()
        c = self.config
        self.register_buffer("feature_mean", torch.zeros(c.n_features))
        self.register_buffer("feature_std", torch.ones(c.n_features))
        self.net = nn.Sequential(nn.Linear(c.n_features, c.hidden), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(c.hidden, 1))
        # Start at alpha = 1: the model as trained.
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, -math.log(c.max_alpha - 1.0) if c.max_alpha > 1 else 4.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.feature_mean) / self.feature_std
        return self.config.max_alpha * torch.sigmoid(self.net(z).squeeze(-1))

    def alpha(self, x: np.ndarray, y: np.ndarray, sample_rate: int) -> float:
        with torch.inference_mode():
            f = torch.from_numpy(window_features(x, y, sample_rate))
            return float(self(f.to(self.feature_mean.device)))


def blended_si_sdr(alpha: torch.Tensor, stats: torch.Tensor, cap_db: float = 30.0) -> torch.Tensor:
    """SI-SDR (dB) of ``x + alpha d`` against target ``t`` in closed form, from per-window inner
    products ``stats`` = (<x,t>, <d,t>, <x,x>, <x,d>, <d,d>, <t,t>), capped at ``cap_db`` (beyond
    it the change is inaudible; without a cap, clean windows, whose best is ``alpha = 0`` with an
    infinite score, would outweigh everything else)."""
    xt, dt, xx, xd, dd, tt = stats.unbind(-1)
    zt = xt + alpha * dt
    zz = xx + 2 * alpha * xd + alpha ** 2 * dd
    target = zt ** 2 / tt
    error = (zz - target).clamp_min(0)
    floor = target * 10 ** (-cap_db / 10)
    return 10 * torch.log10((target + 1e-20) / (error + floor + 1e-20))


def blend_stats(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The inner products :func:`blended_si_sdr` needs, over all channels of one window."""
    x, y, t = (np.asarray(a, dtype=np.float64).ravel() for a in (x, y, t))
    d = y - x
    return np.array([x @ t, d @ t, x @ x, x @ d, d @ d, t @ t], dtype=np.float64)
