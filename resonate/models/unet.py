"""The restore model: a small spectrogram U-Net that predicts a bounded complex mask plus a residual.

Each audio channel is processed on its own (stereo = a batch of two). Input: the compressed
complex STFT (real, imaginary) of one channel, 512 frequency bins (the Nyquist bin is passed
through untouched). The encoder divides the frequency axis at every level (by 4 first, then 2) and keeps the time axis;
the bottleneck flattens what is left of frequency and runs a dilated temporal convolution stack
over frames, which gives the ~0.8 s receptive field needed to see reverb tails. The decoder
mirrors the encoder with additive skip connections.

Output, in the compressed domain: ``Y = M * X + R`` with a complex mask ``M`` (magnitude bounded
by ``mask_bound``, free phase) and a complex residual ``R`` for what a mask cannot do (filling
in content the room or the phone removed). At initialisation ``M = 1`` and ``R = 0``, i.e. the
model starts as the identity, which is what "do no harm" on clean input asks for.

Convolutions after the first are depthwise-separable: that is what keeps the stage within the
CPU real-time budget. There is no normalisation layer (none that would depend on the chunk), so
chunked inference matches whole-clip inference away from chunk edges.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resonate.models.spectral import (
    COMPRESS_POWER,
    compress_parts,
    decompress_parts,
    istft,
    minimum_phase,
    stft,
)

EQ_LIMIT_NEPER = math.log(100.0)   # +-40 dB
EQ_FRAME_STRIDE = 8


def moving_average(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Centred moving average over the last axis (``frames`` wide, odd), shorter at the ends.

    Running sums, so the cost does not grow with the width (a pooling layer's does).
    """
    half = frames // 2
    if half == 0 or x.shape[-1] < 2:
        return x
    n = x.shape[-1]
    csum = torch.cumsum(x, dim=-1)
    # Padded so that every window is a difference of two slices (a gather costs more):
    # `half` + 1 zeros in front, the total repeated `half` times behind.
    ext = torch.cat([torch.zeros_like(csum[..., :1]).expand(*csum.shape[:-1], half + 1), csum,
                     csum[..., -1:].expand(*csum.shape[:-1], half)], dim=-1)
    idx = torch.arange(n, device=x.device)
    count = (idx + half + 1).clamp(max=n) - (idx - half).clamp(min=0)
    return (ext[..., 2 * half + 1:] - ext[..., :n]) / count.to(x.dtype)


def eq_shape(gain: torch.Tensor, limit_db: float) -> torch.Tensor:
    """An EQ (log gain, nepers, (b, bins, t)) less its mean over frequency, limited to +-limit_db."""
    limit = limit_db / 20 * math.log(10)
    return (gain - gain.mean(dim=1, keepdim=True)).clamp(-limit, limit)


@dataclass(frozen=True)
class RestoreUNetConfig:
    sample_rate: int = 44100
    n_fft: int = 1024
    hop: int = 256
    channels: tuple[int, ...] = (16, 24, 32, 48)   # one per encoder level
    first_factor: int = 4                           # the first level divides frequency by 4, the others by 2
    bottleneck_dim: int = 128
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    mask_bound: float = 2.5                            # |M| <= 2.5 in the compressed domain ~ +26 dB
    compress_power: float = COMPRESS_POWER
    # Give the mask's slowly varying part (an EQ) the phase of a minimum-phase filter; see
    # ``forward_spec``. 0 turns it off (models before v2).
    minphase_eq_seconds: float = 0.0
    # A sixth output map that corrects that EQ estimate (log gain, nepers), trained against the
    # power ratio of target to input (see ``losses.eq_target``); zero at init, so a model without
    # it starts out unchanged. Its EQ sets the phase only: the magnitude stays the mask's.
    eq_head: bool = False
    # > 0: only the EQ's shape sets the phase (its mean over frequency removed per frame; a
    # broadband gain has no phase), limited to +-this many dB. Large corrections, such as a
    # boost where a phone's low-pass left only noise, barely change the phase where the music
    # is but smear it in time. 0: the v2 behaviour (the log gain as is, limited to +-40 dB).
    eq_shape_limit_db: float = 0.0
    # > 0: the network sees each frame divided by the recording's level around it (the RMS of
    # the compressed spectrum, averaged over this many seconds), and its residual is scaled back
    # by that level, so ``model(g x) = g model(x)`` for any gain g. A model that sees absolute
    # levels learns the level of its training set instead of the damage (v3 did: on quieter real
    # recordings its output was the input times 0.93). 0: models before v4.
    level_norm_seconds: float = 0.0
    # The level the network sees after that normalisation (the compressed spectrum's RMS): the
    # typical level of the recordings it was first trained on, so weights trained without the
    # normaliser are a sensible start.
    level_norm_reference: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RestoreUNetConfig:
        known = {f for f in cls.__dataclass_fields__}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**d)

    @property
    def bins(self) -> int:
        return self.n_fft // 2  # modelled bins; the Nyquist bin is passed through

    def validate(self) -> None:
        if self.bins % self.total_factor != 0:
            raise ValueError("n_fft/2 must be divisible by the product of the frequency factors")

    @property
    def eq_frames(self) -> int:
        """STFT frames the minimum-phase EQ is averaged over (``minphase_eq_seconds``)."""
        return max(1, int(round(self.minphase_eq_seconds * self.sample_rate / self.hop)))

    @property
    def level_frames(self) -> int:
        """STFT frames the level normaliser averages over (``level_norm_seconds``, odd)."""
        return max(1, int(round(self.level_norm_seconds * self.sample_rate / self.hop)) // 2 * 2 + 1)

    @property
    def out_maps(self) -> int:
        return 6 if self.eq_head else 5

    @property
    def total_factor(self) -> int:
        return self.first_factor * 2 ** (len(self.channels) - 1)


class Down(nn.Module):
    """Divide frequency by `factor`: (depthwise strided ->) pointwise -> PReLU."""

    def __init__(self, cin: int, cout: int, factor: int = 2, dense: bool = False):
        super().__init__()
        kernel, stride, pad = (2 * factor, 3), (factor, 1), (factor // 2, 1)
        if dense:
            self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad)
        else:
            self.conv = nn.Sequential(
                nn.Conv2d(cin, cin, kernel, stride=stride, padding=pad, groups=cin),
                nn.Conv2d(cin, cout, 1),
            )
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Up(nn.Module):
    """Multiply frequency by `factor`: depthwise (3, 3) -> pointwise -> sub-pixel shuffle along frequency."""

    def __init__(self, cin: int, cout: int, factor: int = 2, last: bool = False):
        super().__init__()
        self.cout, self.factor = cout, factor
        # The last level is pointwise only: a depthwise pass at that resolution costs more than the
        # rest of the decoder, and its spatial context is already in the skip and the level below.
        self.depthwise = nn.Identity() if last else nn.Conv2d(cin, cin, (3, 3), padding=(1, 1), groups=cin)
        self.pointwise = nn.Conv2d(cin, factor * cout, 1)
        self.act = None if last else nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, t = x.shape
        k = self.factor
        y = self.pointwise(self.depthwise(x))                       # (b, k*cout, f, t)
        y = y.view(b, self.cout, k, f, t).permute(0, 1, 3, 2, 4).reshape(b, self.cout, k * f, t)
        return y if self.act is None else self.act(y)


class TemporalBlock(nn.Module):
    """Residual dilated depthwise-separable 1-D convolution over frames."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, 3, padding=dilation, dilation=dilation, groups=dim)
        self.pointwise = nn.Conv1d(dim, dim, 1)
        self.act = nn.PReLU(dim)
        self.scale = nn.Parameter(torch.full((1, dim, 1), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.pointwise(self.act(self.depthwise(x)))


class RestoreUNet(nn.Module):
    def __init__(self, config: RestoreUNetConfig | None = None):
        super().__init__()
        # The damage gate fitted to these weights (resonate.models.gate), set by ``load_model`` when
        # the file has one (its tensors are then ``gate.*``); the Restorer uses it, ``forward`` does not.
        self.gate: nn.Module | None = None
        self.config = config or RestoreUNetConfig()
        self.config.validate()
        c = list(self.config.channels)
        self.downs = nn.ModuleList(
            [Down(2, c[0], self.config.first_factor, dense=True)] + [Down(c[i - 1], c[i]) for i in range(1, len(c))]
        )
        self.low_bins = self.config.bins // self.config.total_factor
        flat = c[-1] * self.low_bins
        d = self.config.bottleneck_dim
        self.to_frames = nn.Conv1d(flat, d, 1)
        self.temporal = nn.Sequential(*[TemporalBlock(d, k) for k in self.config.dilations])
        self.from_frames = nn.Conv1d(d, flat, 1)
        # The last level goes straight to the 5 output maps at full resolution (mask magnitude logit,
        # mask phase (p, q), residual (re, im)); nothing else runs at full resolution, which is
        # what keeps the model fast.
        self.ups = nn.ModuleList(
            [Up(c[i], c[i - 1]) for i in range(len(c) - 1, 0, -1)] + [Up(c[0], self.config.out_maps, self.config.first_factor, last=True)]
        )
        self._init_identity()

    def _init_identity(self) -> None:
        head = self.ups[-1].pointwise
        nn.init.zeros_(head.weight)
        bound = self.config.mask_bound
        bias = torch.tensor([math.log(1.0 / (bound - 1.0)), 1.0, 0.0, 0.0, 0.0, 0.0][: self.config.out_maps])
        with torch.no_grad():
            # pointwise output channel index = output map * factor + sub-pixel position.
            head.bias.copy_(bias.repeat_interleave(self.config.first_factor))

    def load_compatible(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Load weights of a smaller model of the same design: as many levels, each at most as
        wide, an output head with at most one map fewer (the EQ head), a bottleneck at most as wide
        and at most as many temporal blocks (the loaded ones first). The result computes exactly what the loaded
        model computed, so a fine-tune starts from its quality with more capacity to use:

        * a grown output dimension keeps the loaded rows and the fresh initialisation for the new
          ones (except the output head's new map, which starts at zero);
        * a grown input dimension gets zero weights from the new inputs into the old outputs, so
          new channels never reach the old ones until training moves those weights;
        * an added temporal block starts with its residual scale at zero, i.e. as the identity.

        Returns, per tensor, where its values came from the loaded weights (True) rather than
        from the growth (False), for training only what is new (``TrainConfig.freeze_loaded``).
        """
        last = len(self.ups) - 1
        head = (f"ups.{last}.pointwise.weight", f"ups.{last}.pointwise.bias")
        own = self.state_dict()
        state = dict(state)
        loaded = {key: torch.zeros(t.shape, dtype=torch.bool) for key, t in own.items()}
        for key, value in list(state.items()):
            if key.startswith("gate.") and key not in own:   # a damage gate fitted to the old model
                del state[key]
                continue
            if key not in own:
                raise ValueError(f"unexpected tensor {key} in the weights being loaded")
            target = own[key]
            loaded[key][tuple(slice(0, n) for n in value.shape)] = True
            if value.shape == target.shape:
                continue
            if value.dim() != target.dim() or any(a > b for a, b in zip(value.shape, target.shape)):
                raise ValueError(f"{key}: {tuple(value.shape)} does not fit into {tuple(target.shape)}")
            grown = torch.zeros_like(target) if key in head else target.clone()
            if value.dim() >= 2 and value.shape[1] < target.shape[1] and not key.endswith("scale"):
                grown[: value.shape[0], value.shape[1]:] = 0.0
            grown[tuple(slice(0, n) for n in value.shape)] = value
            state[key] = grown
        for key in own:
            if key not in state:
                if not key.startswith("temporal."):
                    raise ValueError(f"the weights being loaded have no {key}")
                if key.endswith(".scale"):
                    state[key] = torch.zeros_like(own[key])
                else:
                    state[key] = own[key]
        self.load_state_dict(state)
        return loaded

    def forward_spec(self, xc: torch.Tensor, return_eq: bool = False):
        """Compressed complex spectrum (b, bins+1, t) -> compressed complex estimate, same shape.

        With ``return_eq`` also the EQ (log gain, (b, bins, t)) whose minimum phase was applied,
        or None when the model has no minimum-phase EQ.
        """
        est_re, est_im, eq = self.forward_parts(xc.real, xc.imag)
        est = torch.complex(est_re, est_im)
        return (est, eq) if return_eq else est

    def forward_parts(self, xr: torch.Tensor, xi: torch.Tensor):
        """``forward_spec`` on real and imaginary parts: (estimate re, estimate im, EQ or None).

        The mask arithmetic is written out in real numbers: complex abs, division and ``polar``
        on full-resolution tensors cost more than the decoder's last layer.
        """
        bins = self.config.bins
        level = self.input_level(xr[:, :bins], xi[:, :bins])   # (b, 1, T) or None
        if level is None:
            x = torch.stack([xr[:, :bins], xi[:, :bins]], dim=1)   # (b, 2, F, T)
        else:
            x = torch.stack([xr[:, :bins] / level, xi[:, :bins] / level], dim=1)
        skips = []
        h = x
        for down in self.downs:
            h = down(h)
            skips.append(h)
        b, ch, f, t = h.shape
        z = self.to_frames(h.reshape(b, ch * f, t))
        z = self.temporal(z)
        h = h + self.from_frames(z).view(b, ch, f, t)
        for up, skip in zip(self.ups, reversed(skips)):
            h = up(h + skip)
        out = h.float()   # the mask arithmetic in float32, also under autocast
        mag = self.config.mask_bound * torch.sigmoid(out[:, 0])
        eq = phi = None
        if self.config.minphase_eq_seconds > 0:
            eq = self.eq_gain(mag, out[:, 5] if self.config.eq_head else None)
            phi = self._minphase_angle(eq)
        p, q = out[:, 1], out[:, 2]                           # the mask's phasor, p + iq
        scale = mag * torch.rsqrt((p * p + q * q).clamp_min(1e-12))
        if phi is not None:
            c, s = torch.cos(phi), torch.sin(phi)
            p, q = p * c - q * s, p * s + q * c
        mr, mi = scale * p, scale * q
        x_re, x_im = xr[:, :bins], xi[:, :bins]
        res_re, res_im = out[:, 3], out[:, 4]
        if level is not None:   # the residual was made at the normalised level
            res_re, res_im = res_re * level, res_im * level
        # M X + R, two fused multiply-adds per part (each full-size pass costs ~1 ms per chunk).
        est_re = torch.addcmul(torch.addcmul(res_re, mr, x_re), mi, x_im, value=-1.0)
        est_im = torch.addcmul(torch.addcmul(res_im, mr, x_im), mi, x_re)
        est_re, est_im = torch.cat([est_re, xr[:, bins:]], dim=1), torch.cat([est_im, xi[:, bins:]], dim=1)
        return est_re, est_im, eq

    def input_level(self, xr: torch.Tensor, xi: torch.Tensor) -> torch.Tensor | None:
        """The level (b, 1, t) the network input is divided by, or None without level normalisation.

        The RMS over frequency of the compressed spectrum, averaged over ``level_norm_seconds``
        (centred, so chunked inference matches whole-clip inference away from chunk edges). It
        scales as g**compress_power with the input gain g, exactly as the compressed spectrum does.
        """
        if self.config.level_norm_seconds <= 0:
            return None
        power = (xr * xr + xi * xi).mean(dim=1, keepdim=True)
        level = moving_average(power, self.config.level_frames).clamp_min(1e-12).sqrt()
        return level / self.config.level_norm_reference

    def _minphase_eq_phase(self, mag: torch.Tensor) -> torch.Tensor:
        """Unit phasors (b, bins, t) of the minimum phase of the EQ read off ``mag``."""
        phi = self._minphase_angle(self.eq_gain(mag))
        return torch.polar(torch.ones_like(phi), phi)

    def eq_gain(self, mag: torch.Tensor, correction: torch.Tensor | None = None) -> torch.Tensor:
        """The EQ (log gain in nepers, (b, bins, t)) whose minimum phase ``forward_spec`` applies.

        PA EQ, speaker and microphone roll-offs are minimum-phase filters, so undoing them needs
        the inverse's minimum phase along with its magnitude; the phase follows from the log
        magnitude (Hilbert transform), so the network only has to get the gain right. The gain
        is the mask's log gain plus the EQ head's ``correction`` (when the model has one),
        averaged over ``minphase_eq_seconds`` (the EQ, not the frame-by-frame gating) and
        limited to +-40 dB. That average moves slowly, so the phase is computed on every
        ``EQ_FRAME_STRIDE``-th frame and interpolated in between (the phase from the cepstrum is
        continuous, not wrapped).
        """
        cfg = self.config
        gain = (torch.log(mag.clamp_min(1e-6)) / cfg.compress_power).clamp(-EQ_LIMIT_NEPER, EQ_LIMIT_NEPER)
        gain = moving_average(gain, cfg.eq_frames)
        if correction is not None:
            gain = (gain + moving_average(correction.float(), cfg.eq_frames)).clamp(-EQ_LIMIT_NEPER, EQ_LIMIT_NEPER)
        if cfg.eq_shape_limit_db > 0:
            gain = eq_shape(gain, cfg.eq_shape_limit_db)
        return gain

    def _minphase_angle(self, gain: torch.Tensor) -> torch.Tensor:
        """The minimum phase (radians, (b, bins, t)) of the EQ ``gain`` (see ``eq_gain``)."""
        cfg = self.config
        frames = gain.shape[-1]
        coarse = max(2, -(-(frames - 1) // EQ_FRAME_STRIDE) + 1) if frames > 1 else 1
        if coarse < frames:
            gain = F.interpolate(gain, size=coarse, mode="linear", align_corners=True)
        gain = torch.cat([gain, gain[:, -1:]], dim=1)                       # + Nyquist bin
        phi = minimum_phase(gain.transpose(1, 2), cfg.n_fft).transpose(1, 2)[:, : cfg.bins]
        if coarse < frames:
            phi = F.interpolate(phi, size=frames, mode="linear", align_corners=True)
        return phi

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(batch, n) waveform -> (batch, n) restored waveform."""
        cfg = self.config
        n = wav.shape[-1]
        est_re, est_im, _ = self.forward_parts(*compress_parts(stft(wav, cfg.n_fft, cfg.hop), cfg.compress_power))
        return istft(decompress_parts(est_re, est_im, cfg.compress_power), cfg.n_fft, cfg.hop, n)

    def forward_with_spec(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``forward``, also returning the compressed complex estimate and the EQ (for the losses)."""
        cfg = self.config
        n = wav.shape[-1]
        est_re, est_im, eq = self.forward_parts(*compress_parts(stft(wav, cfg.n_fft, cfg.hop), cfg.compress_power))
        est_c = torch.complex(est_re, est_im)
        return istft(decompress_parts(est_re, est_im, cfg.compress_power), cfg.n_fft, cfg.hop, n), est_c, eq


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["RestoreUNet", "RestoreUNetConfig", "count_parameters"]
