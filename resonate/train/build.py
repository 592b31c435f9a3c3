"""Build the synthetic concert-pair dataset: clean music + degradations -> `{id}_0.wav` / `{id}_1.wav`.

Pairs are written in the same convention as real pairs (`_0` = studio/clean, `_1` = concert),
so training, evaluation and real recordings all read one folder format. The validation split is
source-disjoint: its music tracks and rendered scores are never used for training, its rooms
are the measured OpenAIR rooms (training uses simulated ones only) and its crowd voices come from
a separate part of the voice bank. Generation is seeded and single-process (the build shares
the machine), and resumable: existing pairs are kept.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from resonate.audio.resample import resample
from resonate.train import crowd, rooms
from resonate.train.degrade import degrade
from resonate.train.render import render_corpus


@dataclass(frozen=True)
class BuildConfig:
    shared_data: str = "../shared/data"
    out_dir: str = "data/restore"
    cache_dir: str = "data/cache"
    sample_rate: int = 44100
    segment_seconds: float = 4.0
    train_pairs: int = 640
    val_pairs: int = 40
    seed: int = 20261121
    # Held out entirely (validation only): one orchestral and one acoustic track.
    val_tracks: tuple[str, ...] = ("orchestral_USArmyStrings_Brahms_HungarianDance5_PD", "acoustic_RomanSenyk_InspiringAcoustic_CCBY3")
    val_render_fraction: float = 0.15
    render_composers: tuple[str, ...] = (
        "bach", "mozart", "beethoven", "haydn", "monteverdi", "palestrina", "trecento", "josquin", "joplin", "chopin",
        "corelli", "handel", "schubert", "verdi", "weber", "cpebach", "ryansMammoth",
    )
    render_per_composer: int = 8
    render_seconds: float = 50.0
    render_seed: int = 1234
    voices: int = 60
    val_voices: int = 12          # the last `val_voices` of the bank speak only in validation crowds
    simulated_rooms: int = 96
    rt60_range: tuple[float, float] = (0.4, 3.0)
    real_fraction: float = 0.5    # share of segments taken from the real tracks (vs rendered scores)
    extra: dict = field(default_factory=dict)


def _is_val_render(path: Path, fraction: float) -> bool:
    return (zlib.crc32(path.stem.encode()) % 1000) / 1000.0 < fraction


def load_music(path: Path, sr: int) -> np.ndarray:
    audio, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.T
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    audio = resample(audio[:2], file_sr, sr)
    return audio / (np.abs(audio).max() + 1e-9) * 0.9   # some sources decode above full scale


def pick_segment(rng: np.random.Generator, sources: list[np.ndarray], n: int) -> np.ndarray:
    """A random n-sample stretch that is not near-silent (sources weighted by length)."""
    lengths = np.array([s.shape[-1] for s in sources], dtype=np.float64)
    for _ in range(50):
        src = sources[int(rng.choice(len(sources), p=lengths / lengths.sum()))]
        if src.shape[-1] <= n:
            continue
        start = int(rng.integers(0, src.shape[-1] - n))
        seg = src[:, start: start + n]
        if np.sqrt(np.mean(seg ** 2)) > 0.02:
            return seg
    return seg


def build(cfg: BuildConfig, log=print) -> dict:
    sr = cfg.sample_rate
    shared = Path(cfg.shared_data)
    cache = Path(cfg.cache_dir)
    rendered = render_corpus(cache / "rendered", cfg.render_composers, cfg.render_per_composer, cfg.render_seed,
                             cfg.render_seconds, sr, log=log)
    voice_paths = crowd.render_babble_bank(cache / "voices", cfg.voices, cfg.seed, sr)
    banks = {"train": crowd.load_bank(voice_paths[: cfg.voices - cfg.val_voices]),
             "val": crowd.load_bank(voice_paths[cfg.voices - cfg.val_voices:])}
    applause_path = next(iter(sorted((shared / "crowd").glob("*.wav"))), None)
    real_applause = load_music(applause_path, sr) if applause_path else None

    tracks = sorted((shared / "music").glob("*.*"))
    sources: dict[str, dict[str, list[np.ndarray]]] = {s: {"real": [], "rendered": []} for s in ("train", "val")}
    for t in tracks:
        split = "val" if t.stem in cfg.val_tracks else "train"
        sources[split]["real"].append(load_music(t, sr))
    for r in rendered:
        split = "val" if _is_val_render(r, cfg.val_render_fraction) else "train"
        sources[split]["rendered"].append(load_music(r, sr))
    log(f"sources: train {len(sources['train']['real'])} tracks + {len(sources['train']['rendered'])} scores, "
        f"val {len(sources['val']['real'])} tracks + {len(sources['val']['rendered'])} scores")

    room_rng = np.random.default_rng([cfg.seed, 1])
    room_bank = {
        "train": [rooms.simulate_rir(room_rng, sr, float(room_rng.uniform(*cfg.rt60_range))) for _ in range(cfg.simulated_rooms)],
        "val": [rooms.load_measured_rir(p, sr) for p in sorted((shared / "rirs").glob("*.wav"))],
    }
    n = int(cfg.segment_seconds * sr)
    summary = {}
    # Validation first: training can start (and pick up new training pairs as they appear) before
    # the build finishes. Each example has its own seed, so the order changes nothing.
    for split, count in (("val", cfg.val_pairs), ("train", cfg.train_pairs)):
        out = Path(cfg.out_dir) / split
        out.mkdir(parents=True, exist_ok=True)
        meta_path = out / "params.jsonl"
        with open(meta_path, "a") as meta:
            for i in range(count):
                pair_id = f"{split}{i:04d}"
                if (out / f"{pair_id}_1.wav").exists():
                    continue
                rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, i])
                kind = "real" if (rng.random() < cfg.real_fraction or not sources[split]["rendered"]) else "rendered"
                clean = pick_segment(rng, sources[split][kind] or sources[split]["real"], n)
                rir = room_bank[split][int(rng.integers(len(room_bank[split])))]
                bed = crowd.crowd_bed(rng, n, sr, banks[split], real_applause if split == "train" else None)
                noisy, target, params = degrade(clean, sr, rng, rir, bed)
                # The recording is written last and renamed into place: its presence marks a complete pair.
                sf.write(out / f"{pair_id}_0.wav", target.T, sr, subtype="FLOAT")
                sf.write(out / f"{pair_id}.part.wav", noisy.T, sr, subtype="FLOAT")
                (out / f"{pair_id}.part.wav").replace(out / f"{pair_id}_1.wav")
                meta.write(json.dumps({"id": pair_id, "source": kind, **params}) + "\n")
                if i % 50 == 0:
                    log(f"{split}: {i}/{count}")
        summary[split] = count
    return summary
