"""Build the v3 concert pairs: real music, measured venues, many kinds of crowd, phone chains.

Writes, per example, ``{id}_0.wav`` (the music through the venue's first 50 ms: the training
target), ``{id}_1.wav`` (the recording) and, for the development set, ``{id}_dry.wav`` (the dry
music, a second reference), plus one JSON line of parameters in ``params.jsonl`` (the degradation
type, the steps taken, where the song ends inside the clip).

The development set shares nothing with training but the code: its music tracks, its measured
venues, its crowd voices and two crowd kinds (whistles, the one real applause recording) are
never used for training. Besides full-chain clips it has clips with one degradation each
(crowd, room, PA, phone) so that ``evaluate`` can report per degradation type.

Seeded and resumable (existing pairs are kept); the development set is written first, so
training can start while the training pairs are still being made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from resonate.train import crowd, rooms
from resonate.train.build import load_music, pick_segment
from resonate.train.concert import STEPS, concert_recording

MUSIC_TYPES = (".ogg", ".mp3", ".wav", ".flac")


@dataclass(frozen=True)
class BuildV3Config:
    version: int = 3
    shared_data: str = "../shared/data"
    out_dir: str = "data/restore_v3"
    cache_dir: str = "data/cache"
    sample_rate: int = 44100
    train_seconds: float = 4.0
    dev_seconds: float = 8.0
    train_pairs: int = 1600
    dev_full: int = 48                # full-chain development clips
    dev_per_type: int = 10            # development clips per single degradation (crowd, room, pa, phone)
    seed: int = 20261201
    # Development-only music (file stems) and venues (room file stems): never seen in training.
    dev_tracks: tuple[str, ...] = ()
    dev_rooms: tuple[str, ...] = ()
    dev_only_crowd: tuple[str, ...] = ("whistle", "real_applause")
    voices: int = 60
    dev_voices: int = 12
    simulated_rooms: int = 48
    rt60_range: tuple[float, float] = (0.4, 3.0)
    measured_fraction: float = 0.6    # training examples through a measured (vs simulated) venue
    between_songs_fraction: float = 0.25
    single_step_fraction: float = 0.25


def _split_files(paths: list[Path], dev: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    train = [p for p in paths if p.stem not in dev and p.parent.name not in dev]
    held = [p for p in paths if p.stem in dev or p.parent.name in dev]
    return train, held


def build_v3(cfg: BuildV3Config, log=print) -> dict:
    sr = cfg.sample_rate
    shared = Path(cfg.shared_data)
    music = sorted(p for p in (shared / "music").rglob("*") if p.suffix.lower() in MUSIC_TYPES)
    room_files = sorted(p for p in (shared / "rirs").glob("*") if p.suffix.lower() in (".wav", ".flac"))
    train_music, dev_music = _split_files(music, cfg.dev_tracks)
    train_rooms, dev_rooms = _split_files(room_files, cfg.dev_rooms)
    if not dev_music or not dev_rooms:
        raise ValueError("dev_tracks and dev_rooms must name files in shared_data")
    log(f"music: {len(train_music)} training / {len(dev_music)} development tracks; "
        f"venues: {len(train_rooms)} / {len(dev_rooms)} measured")

    voice_paths = crowd.render_babble_bank(Path(cfg.cache_dir) / "voices", cfg.voices, cfg.seed, sr)
    banks = {"train": crowd.load_bank(voice_paths[: cfg.voices - cfg.dev_voices]),
             "dev": crowd.load_bank(voice_paths[cfg.voices - cfg.dev_voices:])}
    applause_path = next(iter(sorted((shared / "crowd").glob("*.wav"))), None)
    real_applause = load_music(applause_path, sr) if applause_path else None
    kinds = {"train": tuple(k for k in crowd.CROWD_KINDS if k not in cfg.dev_only_crowd),
             "dev": crowd.CROWD_KINDS}

    sources = {"train": [load_music(p, sr) for p in train_music], "dev": [load_music(p, sr) for p in dev_music]}
    room_rng = np.random.default_rng([cfg.seed, 1])
    venues = {
        "measured_train": [rooms.load_measured_rir(p, sr) for p in train_rooms],
        "simulated": [rooms.simulate_rir(room_rng, sr, float(room_rng.uniform(*cfg.rt60_range)))
                      for _ in range(cfg.simulated_rooms)],
        "dev": [rooms.load_measured_rir(p, sr) for p in dev_rooms],
    }
    names = {"measured_train": [p.stem for p in train_rooms], "simulated": [f"sim{i}" for i in range(cfg.simulated_rooms)],
             "dev": [p.stem for p in dev_rooms]}

    plan = [("dev", "full")] * cfg.dev_full + [("dev", t) for t in ("crowd", "room", "pa", "phone") for _ in range(cfg.dev_per_type)]
    plan += [("train", None)] * cfg.train_pairs
    counters = {"dev": 0, "train": 0}
    for split, kind in plan:
        i = counters[split]
        counters[split] += 1
        out = Path(cfg.out_dir) / ("val" if split == "dev" else "train")
        out.mkdir(parents=True, exist_ok=True)
        pair_id = f"{split}{i:04d}"
        if (out / f"{pair_id}_1.wav").exists():
            continue
        rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, i])
        seconds = cfg.dev_seconds if split == "dev" else cfg.train_seconds
        n = int(seconds * sr)
        if kind is None:   # training: mostly the full chain with random steps, some single steps
            if rng.random() < cfg.single_step_fraction:
                kind = str(rng.choice(["crowd", "room", "pa", "phone"]))
            else:
                kind = "full"
        if kind == "full":
            steps = tuple(s for s, p in zip(STEPS, (0.85, 0.95, 0.9, 0.8, 0.7)) if rng.random() < p) or ("room",)
        else:
            steps = (kind, "codec") if kind == "phone" else (kind,)
        clean = pick_segment(rng, sources[split], n)
        bank_key = "dev" if split == "dev" else ("measured_train" if rng.random() < cfg.measured_fraction else "simulated")
        room_index = int(rng.integers(len(venues[bank_key])))
        # The song ends inside some clips: what follows is crowd and reverberation only (what
        # `evaluate` measures crowd attenuation and the reverberation tail on). Room-only clips
        # end half of the time, for the tail.
        music_end = None
        ends = cfg.between_songs_fraction if "crowd" in steps else 0.5 if kind == "room" else 0.0
        if rng.random() < ends:
            music_end = int(rng.uniform(0.4, 0.7) * n)
        bed, crowd_kinds = np.zeros_like(clean), []
        if "crowd" in steps:
            bed, crowd_kinds = crowd.concert_crowd(rng, n, sr, banks[split], clean, kinds[split],
                                                   real_applause if split == "dev" else None, music_end)
        rec = concert_recording(clean, sr, rng, venues[bank_key][room_index], bed, steps, music_end)
        params = {"id": pair_id, "type": kind, "venue": names[bank_key][room_index], **rec.params}
        if crowd_kinds:
            params["crowd"] = crowd_kinds
        sf.write(out / f"{pair_id}_0.wav", rec.target.T, sr, subtype="FLOAT")
        if split == "dev":
            sf.write(out / f"{pair_id}_dry.wav", rec.dry.T, sr, subtype="FLOAT")
        # The recording is written last and renamed into place: its presence marks a complete pair.
        sf.write(out / f"{pair_id}.part.wav", rec.recording.T, sr, subtype="FLOAT")
        (out / f"{pair_id}.part.wav").replace(out / f"{pair_id}_1.wav")
        with open(out / "params.jsonl", "a") as meta:
            meta.write(json.dumps(params) + "\n")
        if i % 50 == 0:
            log(f"{split}: {i} ({kind}: {', '.join(steps)})")
    return counters
