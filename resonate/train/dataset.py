"""Reading pair folders (`{id}_0.wav` clean, `{id}_{k}.wav` recordings) for training and validation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from resonate.errors import ResonateError

PAIR_NAME = re.compile(r"^(?P<song>.+)_(?P<k>\d+)\.(wav|flac)$", re.IGNORECASE)


@dataclass(frozen=True)
class Pair:
    song: str
    clean: Path
    recording: Path


def find_pairs(folder: str | Path) -> list[Pair]:
    """All (studio, concert) pairs in a folder: every `{song}_{k}` with k >= 1 against `{song}_0`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResonateError(f"pair folder not found: {folder}")
    groups: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        m = PAIR_NAME.match(p.name)
        if m:
            groups.setdefault(m["song"], {})[int(m["k"])] = p
    pairs = [Pair(song, files[0], files[k]) for song, files in sorted(groups.items()) if 0 in files
             for k in sorted(files) if k >= 1]
    if not pairs:
        raise ResonateError(f"no pairs in {folder} (expected {{song}}_0.wav with {{song}}_1.wav, ...)")
    return pairs


class PairCrops(Dataset):
    """Random mono crops of aligned pairs with on-the-fly augmentation.

    Each item is one channel of one pair, cropped at a random offset (time shift), with the same
    random gain on input and target, a random polarity, and with probability `clean_fraction`
    the clean crop as its own input (so the model learns to leave clean music alone). With
    `level_dbfs` every crop is first brought to that RMS level, so the gains are spread exactly
    over +-`gain_jitter_db` around it (as far as the peak allows).
    """

    def __init__(self, folder: str | Path, crop_seconds: float, sample_rate: int, clean_fraction: float = 0.12,
                 gain_jitter_db: float = 6.0, seed: int = 0, items_per_epoch: int = 100_000,
                 level_dbfs: float | None = None):
        self.folder = folder
        self.crop = int(crop_seconds * sample_rate)
        self.sample_rate = sample_rate
        self.clean_fraction = clean_fraction
        self.gain_jitter_db = gain_jitter_db
        self.seed = seed
        self.items_per_epoch = items_per_epoch
        self.level_dbfs = level_dbfs
        self.refresh()

    def refresh(self) -> int:
        """Re-list the folder (pairs a running data build has added since); returns the pair count."""
        self.pairs = find_pairs(self.folder)
        self.frames = [sf.info(str(p.recording)).frames for p in self.pairs]
        return len(self.pairs)

    def __len__(self) -> int:
        return self.items_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        i = int(rng.integers(len(self.pairs)))
        pair, frames = self.pairs[i], self.frames[i]
        start = int(rng.integers(0, max(frames - self.crop, 0) + 1))
        clean, _ = sf.read(str(pair.clean), start=start, frames=self.crop, dtype="float32", always_2d=True)
        noisy, _ = sf.read(str(pair.recording), start=start, frames=self.crop, dtype="float32", always_2d=True)
        ch = int(rng.integers(min(clean.shape[1], noisy.shape[1])))
        clean, noisy = clean[:, ch], noisy[:, ch]
        if len(clean) < self.crop:
            clean, noisy = np.pad(clean, (0, self.crop - len(clean))), np.pad(noisy, (0, self.crop - len(noisy)))
        if rng.random() < self.clean_fraction:
            noisy = clean.copy()
        if self.level_dbfs is not None:   # every crop at one level before the jitter: the spread is the jitter's
            scale = 10 ** (self.level_dbfs / 20) / (np.sqrt(np.mean(noisy ** 2)) + 1e-9)
            noisy, clean = noisy * scale, clean * scale
        gain = 10 ** (rng.uniform(-self.gain_jitter_db, self.gain_jitter_db) / 20) * rng.choice([-1.0, 1.0])
        peak = max(np.abs(noisy).max(), np.abs(clean).max(), 1e-6)
        gain = float(np.sign(gain) * min(abs(gain), 0.99 / peak))
        return torch.from_numpy(noisy * gain), torch.from_numpy(clean * gain)


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, int]:
    """Whole clean and recording as (channels, n) float32 and the sample rate (must be equal)."""
    clean, sr_c = sf.read(str(pair.clean), dtype="float32", always_2d=True)
    rec, sr_r = sf.read(str(pair.recording), dtype="float32", always_2d=True)
    if sr_c != sr_r:
        from resonate.audio.resample import resample

        rec = resample(rec.T, sr_r, sr_c).T
    return clean.T, rec.T, sr_c
