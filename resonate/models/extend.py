"""Bandwidth extension: a small learned spectral-envelope predictor driving band replication.

What a low-pass removed is regenerated in the STFT domain, the way HE-AAC's spectral band
replication does it, with the envelope learned:

1. **Fine structure** comes from the band below the cutoff: the octave under the cutoff is
   copied up (again and again, to the top), shifted by a whole number of hops' worth of bins so
   that the copy is a true frequency shift of that band (consistent phase from frame to frame),
   and whitened by its own local level.
2. **Envelope**: :class:`EnvelopeNet` reads the band levels below the cutoff over a few hundred
   milliseconds and predicts each missing band's level, per frame, relative to the frame's level.
   The level at each bin is interpolated between band centres, from the last band the input has
   to the first predicted one, so the new band joins the old one without a step.
3. Only bins at and above the cutoff are written (faded in over a few bins), and only the power
   the input lacks there (a codec may still code part of the band): the added signal is summed
   onto the input, scaled by ``strength``. Nothing below the cutoff changes.

Levels are in dB relative to the frame's reference (the mean power from 1 kHz to the cutoff), so
the model does not depend on the recording's level. The band grid is fixed in hertz
(:data:`resonate.dsp.bandwidth.BAND_EDGES_HZ`), so one model serves every sample rate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from resonate.chunking import OverlapAdd
from resonate.dsp.bandwidth import BAND_EDGES_HZ, N_BANDS, analysis_size, band_centres_hz
from resonate.errors import ResonateError
from resonate.models.io import write_weights_file

DEFAULT_EXTEND_WEIGHTS = Path(__file__).resolve().parent / "weights" / "extend_envelope.safetensors"
FORMAT = "resonate-extend-envelope/1"
REFERENCE_LOW_HZ = 1000.0      # the frame reference is the mean power from here to the cutoff
LEVEL_RANGE_DB = (-90.0, 30.0)  # relative levels are clamped to this
POWER_EPS = 1e-12               # -120 dB: silence
WHITEN_HZ = 540.0               # width of the local level the copied fine structure is divided by
FADE_BINS = 4                   # raised-cosine fade at both ends of the added band
GUARD_BINS = 2                  # the fade-in starts this far above the cutoff: window leakage stays above it
FINE_STRUCTURE = 0.5            # depth of the copied fine structure around the envelope (1: as copied, 0: flat)
LEVEL_OFFSET_DB = 0.0           # added to the model's predicted levels (a calibration, see docs)
MODES = ("model", "replicate", "empty")


@dataclass(frozen=True)
class EnvelopeNetConfig:
    n_bands: int = N_BANDS
    hidden: int = 96
    kernel: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EnvelopeNetConfig:
        data = dict(data)
        if "dilations" in data:
            data["dilations"] = tuple(data["dilations"])
        return cls(**data)


class _Block(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation,
                              padding=dilation * (kernel - 1) // 2, padding_mode="replicate")
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(F.gelu(self.conv(x)))


class EnvelopeNet(nn.Module):
    """(batch, 2 * n_bands + 1, frames) features -> (batch, n_bands, frames) band levels in dB.

    Features: each band's level relative to the frame reference (dB / 20; 0 where missing), which
    bands the input has (1/0), and the cutoff (Hz / 24 kHz). Dilated convolutions over frames see
    about +-15 frames (+-170 ms at 44.1 kHz).
    """

    def __init__(self, config: EnvelopeNetConfig | None = None):
        super().__init__()
        self.config = config or EnvelopeNetConfig()
        c = self.config
        self.inp = nn.Conv1d(2 * c.n_bands + 1, c.hidden, c.kernel, padding=(c.kernel - 1) // 2,
                             padding_mode="replicate")
        self.blocks = nn.ModuleList(_Block(c.hidden, c.kernel, d) for d in c.dilations)
        self.out = nn.Conv1d(c.hidden, c.n_bands, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.inp(features))
        for block in self.blocks:
            h = block(h)
        return 20.0 * self.out(h)


# --- weights -----------------------------------------------------------------------------------

def save_extend_weights(model: EnvelopeNet, path: str | Path, extra: dict | None = None, half: bool = True) -> Path:
    """Write ``model`` as safetensors (fp16 by default; the config rides in the metadata)."""
    metadata = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    return write_weights_file(model, path, metadata, extra, torch.float16 if half else torch.float32)


def load_extend_model(path: str | Path = DEFAULT_EXTEND_WEIGHTS, device: torch.device | str = "cpu") -> EnvelopeNet:
    """Load an :class:`EnvelopeNet` from safetensors (never pickle), as float32 on ``device``."""
    path = Path(path)
    if not path.exists():
        raise ResonateError(f"bandwidth-extension weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or "config" not in meta:
                raise ResonateError(f"{path.name} is not a Resonate bandwidth-extension model")
            config = EnvelopeNetConfig.from_dict(json.loads(meta["config"]))
            state = {k: f.get_tensor(k).float() for k in f.keys()}
    except ResonateError:
        raise
    except Exception as exc:  # corrupt or foreign file: one line for the user
        raise ResonateError(f"cannot read bandwidth-extension weights {path.name}: {exc}") from exc
    model = EnvelopeNet(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ResonateError(f"{path.name} does not match the bandwidth-extension model "
                            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return model.eval().to(device)


# --- the band layout of one (sample rate, cutoff) ------------------------------------------------

class BandLayout:
    """Which STFT bins make each band, which bands the input has, and where the added band lies.

    ``cutoff_hz``: the detected cutoff; ``top_hz``: the highest frequency to regenerate (capped
    just under Nyquist). Bands whose upper edge is at or below the cutoff are *present*.
    """

    def __init__(self, sample_rate: int, cutoff_hz: float, top_hz: float, device: torch.device | str = "cpu"):
        self.sample_rate = int(sample_rate)
        self.n_fft = analysis_size(sample_rate)
        self.hop = self.n_fft // 2
        self.device = torch.device(device)
        n_bins = self.n_fft // 2 + 1
        bin_hz = self.sample_rate / self.n_fft
        freqs = np.arange(n_bins) * bin_hz
        self.cutoff_hz = float(cutoff_hz)
        self.cutoff_bin = int(np.ceil(cutoff_hz / bin_hz))
        nyquist_bin = n_bins - 1 - FADE_BINS
        self.top_bin = int(min(nyquist_bin, np.floor(top_hz / bin_hz)))
        self.top_hz = self.top_bin * bin_hz
        # Band averaging over the bins the input has (below the cutoff) and over all bins (targets).
        band = np.clip(np.searchsorted(BAND_EDGES_HZ, freqs, side="right") - 1, 0, N_BANDS - 1)
        onehot = np.zeros((N_BANDS, n_bins), dtype=np.float32)
        onehot[band, np.arange(n_bins)] = 1.0
        below = onehot * (np.arange(n_bins) < self.cutoff_bin)
        self.present = (BAND_EDGES_HZ[1:] <= self.cutoff_hz) & (below.sum(1) > 0)
        self.exists = onehot.sum(1) > 0              # bands under Nyquist
        self.avg_below = self._t(below / np.maximum(below.sum(1, keepdims=True), 1))
        self.avg_all = self._t(onehot / np.maximum(onehot.sum(1, keepdims=True), 1))
        ref = (freqs >= REFERENCE_LOW_HZ) & (np.arange(n_bins) < self.cutoff_bin)
        if not ref.any():
            ref = np.arange(n_bins) < self.cutoff_bin
        self.ref_weights = self._t(ref / max(ref.sum(), 1))
        # Copy-up: the octave under the cutoff, shifted by an even number of bins (with hop =
        # n_fft / 2 the phase then advances alike in source and copy: a true frequency shift).
        width = max(2, 2 * int(round(self.cutoff_bin / 4)))
        self.first_bin = self.cutoff_bin + GUARD_BINS
        dest = np.arange(self.first_bin, self.top_bin + 1)
        self.source_lo = self.cutoff_bin - width
        self.source_rel = torch.as_tensor((dest - self.first_bin) % width, device=self.device)
        # Interpolation between band centres (in dB) at each added bin, for its level.
        centres = band_centres_hz()
        j = np.clip(np.searchsorted(centres, freqs[dest], side="right") - 1, 0, N_BANDS - 2)
        w = np.clip((freqs[dest] - centres[j]) / (centres[j + 1] - centres[j]), 0.0, 1.0)
        self.dest_lo, self.dest_w = torch.as_tensor(j, device=self.device), self._t(w)
        fade = np.ones(len(dest), dtype=np.float32)
        ramp = np.sin(0.5 * np.pi * (np.arange(FADE_BINS) + 0.5) / FADE_BINS) ** 2
        n = min(FADE_BINS, len(dest))
        fade[:n] = ramp[:n]
        fade[len(dest) - n:] = np.minimum(fade[len(dest) - n:], ramp[:n][::-1])
        self.fade = self._t(fade)
        self.whiten_half = max(1, int(round(WHITEN_HZ / bin_hz)) // 2)
        cut = torch.tensor(self.cutoff_hz / 24000.0, device=self.device)
        self.cutoff_feature = cut
        self.present_t = torch.as_tensor(self.present, device=self.device)
        self.exists_t = torch.as_tensor(self.exists, device=self.device)

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device)

    @property
    def extends(self) -> bool:
        return self.top_bin > self.cutoff_bin + GUARD_BINS + 2 * FADE_BINS

    # -- features --

    def window(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        # Square-root Hann at 50 % overlap: analysis times synthesis window sums to one, and half
        # the frames of the usual 75 % (the stage's budget is a twentieth of real time).
        return torch.hann_window(self.n_fft, periodic=True, device=device, dtype=dtype).sqrt()

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x, self.n_fft, self.hop, window=self.window(x.device, x.dtype), center=True,
                          pad_mode="reflect", return_complex=True)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spec, self.n_fft, self.hop, window=self.window(spec.device, spec.real.dtype),
                           center=True, length=length)

    def power(self, spec: torch.Tensor) -> torch.Tensor:
        return (spec.real.square() + spec.imag.square()) * (2.0 / self.n_fft)

    def reference_db(self, power: torch.Tensor) -> torch.Tensor:
        """(batch, bins, frames) -> (batch, 1, frames): the frame's level in dB."""
        return 10.0 * torch.log10(torch.einsum("k,bkt->bt", self.ref_weights, power) + POWER_EPS)[:, None]

    def band_levels(self, power: torch.Tensor, ref_db: torch.Tensor, below_cutoff: bool = True) -> torch.Tensor:
        """(batch, bins, frames) -> (batch, bands, frames): band levels in dB relative to ``ref_db``."""
        avg = self.avg_below if below_cutoff else self.avg_all
        levels = 10.0 * torch.log10(torch.einsum("nk,bkt->bnt", avg, power) + POWER_EPS) - ref_db
        return levels.clamp(*LEVEL_RANGE_DB)

    def features(self, levels: torch.Tensor) -> torch.Tensor:
        """Band levels (present bands meaningful) -> the network's input."""
        mask = self.present_t.to(levels.dtype)[None, :, None].expand_as(levels)
        cut = self.cutoff_feature.to(levels.dtype).expand(levels.shape[0], 1, levels.shape[-1])
        return torch.cat([levels / 20.0 * mask, mask, cut], dim=1)

    # -- generation --

    def envelope_db(self, levels: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Level at each added bin (dB re. the frame reference): measured bands where the input has
        them, predicted ones above, interpolated between band centres (so no step at the cutoff)."""
        values = torch.where(self.present_t[None, :, None], levels, predicted)
        lo = values[:, self.dest_lo]
        hi = values[:, self.dest_lo + 1]
        return lo + (hi - lo) * self.dest_w[None, :, None]

    def local_power(self, band: torch.Tensor) -> torch.Tensor:
        """(batch, bins, frames) spectrum -> its power averaged over ``WHITEN_HZ`` around each bin."""
        half = self.whiten_half
        padded = F.pad(self.power(band).transpose(1, 2), (half, half), mode="replicate")
        cum = F.pad(torch.cumsum(padded, dim=-1), (1, 0))
        return ((cum[..., 2 * half + 1:] - cum[..., : -2 * half - 1]) / (2 * half + 1)).transpose(1, 2)

    def added_band(self, spec: torch.Tensor, mode: str, env_db: torch.Tensor | None = None,
                   ref_db: torch.Tensor | None = None, fine_structure: float = FINE_STRUCTURE) -> torch.Tensor:
        """The spectrum of what is added (zero below the cutoff). ``replicate``: the copied octave
        as it is; ``model``: whitened by its local level and shaped to ``env_db`` (dB re. ``ref_db``),
        its bin-to-bin fine structure kept to depth ``fine_structure`` (in dB: times that factor)."""
        b, n_bins, t = spec.shape
        if mode == "empty" or not self.extends:
            return torch.zeros_like(spec)
        band = spec[:, self.source_lo: self.cutoff_bin]
        copied = band[:, self.source_rel]
        if mode == "model":
            # Local level of the source band: a running mean of its power over WHITEN_HZ.
            local_db = 10.0 * torch.log10(self.local_power(band)[:, self.source_rel] + POWER_EPS)
            target_db = env_db + ref_db
            gain_db = target_db - local_db
            if fine_structure != 1.0:
                source_db = 10.0 * torch.log10(self.power(copied) + POWER_EPS)
                gain_db = gain_db + (fine_structure - 1.0) * (source_db - local_db)
            # Fill only what is missing: a codec above its nominal cutoff often still codes some
            # of the band (LAME's sfb21 at 128 kb/s, AAC's noise substitution). Where the input
            # already holds power P at the target level T, only T - P is added (as power: the
            # copy is uncorrelated with what is there), so the total lands on T, not above it.
            have = self.local_power(spec[:, self.first_bin: self.top_bin + 1])
            target = torch.exp(target_db * (np.log(10.0) / 10.0))
            missing = (1.0 - have / (target + POWER_EPS)).clamp(0.0, 1.0).sqrt()
            copied = copied * torch.exp(gain_db * (np.log(10.0) / 20.0)) * missing
        copied = copied * self.fade[None, :, None]
        return F.pad(copied.transpose(1, 2), (self.first_bin, n_bins - 1 - self.top_bin)).transpose(1, 2)


class BandExtender:
    """Adds the regenerated band to (channels, n) float32 audio, chunk by chunk.

    ``mode``: ``model`` (the learned envelope), ``replicate`` (plain copy-up, a baseline) or
    ``empty`` (adds nothing). Runs on ``device``; chunks of ``chunk_seconds`` overlap by
    ``overlap_seconds`` and are crossfaded by the engine's overlap-add.
    """

    def __init__(self, model: EnvelopeNet | None, sample_rate: int, cutoff_hz: float, top_hz: float,
                 strength: float = 1.0, device: torch.device | str = "cpu", mode: str = "model",
                 chunk_seconds: float = 8.0, overlap_seconds: float = 0.5, fixed_shape: bool = False,
                 fine_structure: float = FINE_STRUCTURE, level_offset_db: float = LEVEL_OFFSET_DB):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if mode == "model" and model is None:
            raise ValueError("mode 'model' needs a model")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval() if model is not None else None
        self.layout = BandLayout(sample_rate, cutoff_hz, top_hz, self.device)
        self.mode, self.strength = mode, float(np.clip(strength, 0.0, 1.0))
        self.fine_structure = float(fine_structure)
        self.level_offset_db = float(level_offset_db)
        hop = self.layout.hop
        self.window = max(2, round(chunk_seconds * sample_rate / hop)) * hop
        self.overlap = min(round(overlap_seconds * sample_rate / hop), self.window // hop // 2) * hop
        self.fixed_shape = fixed_shape
        self.compute_s = 0.0
        self.added_energy = 0.0
        self.input_energy = 0.0

    def added(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n) float32 on the device -> the added signal, same shape."""
        lay = self.layout
        spec = lay.stft(x)
        power = lay.power(spec)
        ref_db = lay.reference_db(power)
        predicted = None
        if self.mode == "model":
            levels = lay.band_levels(power, ref_db)
            predicted = self.model(lay.features(levels)) + self.level_offset_db
            env_db = lay.envelope_db(levels, predicted)
        else:
            env_db = None
        return lay.istft(lay.added_band(spec, self.mode, env_db, ref_db, self.fine_structure), x.shape[-1])

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).to(self.device)
            add = self.added(x).float().cpu().numpy()
        self.compute_s += time.perf_counter() - start
        add *= self.strength
        self.added_energy += float(np.sum(add.astype(np.float64) ** 2))
        self.input_energy += float(np.sum(chunk.astype(np.float64) ** 2))
        return (chunk + add).astype(np.float32)

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        if self.strength == 0.0 or self.mode == "empty" or not self.layout.extends:
            yield from blocks
            return
        yield from OverlapAdd(self._run, self.window, self.overlap, self.fixed_shape,
                              min_length=self.layout.n_fft).stream(blocks)

    def process(self, x: np.ndarray) -> np.ndarray:
        parts = list(self.stream([np.asarray(x, dtype=np.float32)]))
        return np.concatenate(parts, axis=-1) if parts else np.zeros_like(x, dtype=np.float32)

    @property
    def added_db(self) -> float | None:
        """Energy added relative to the input's, in dB (None when nothing was added)."""
        if self.added_energy <= 0 or self.input_energy <= 0:
            return None
        return 10.0 * float(np.log10(self.added_energy / self.input_energy))
