"""Training data and training loop for the bandwidth-extension envelope model.

Examples are made from ``shared_data/music`` minus the development tracks (``dev_tracks`` of the
restore data config: the evaluation never sees a training track). Each track's own bandwidth is
measured first with the stage's detector (the sources are lossy and stop at 15-19.6 kHz): the
model is taught to extend only up to that limit, never beyond. The damage is made the way real
recordings get it: a phone-like steep low-pass at 7-14 kHz, MP3 (LAME) or AAC (FFmpeg through
PyAV) at low bit rates, whose encoders pick their own cutoff. The cutoff the model is told is the
one the detector finds on the damaged clip, as in the stage.

An example stores the network's input features (from the damaged clip), the clean clip's band
levels relative to the same frame reference (the target), which bands are valid targets (missing
in the input, under the source's limit) and which frames are loud enough to learn from.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy import signal

from resonate.dsp.bandwidth import BAND_EDGES_HZ, LongTermSpectrum, detect_cutoff
from resonate.models.extend import BandLayout, EnvelopeNet, EnvelopeNetConfig, save_extend_weights

MUSIC_TYPES = (".ogg", ".mp3", ".wav", ".flac")
QUIET_REFERENCE_DB = -75.0      # frames whose reference is below this teach nothing


@dataclass(frozen=True)
class ExtendTrainConfig:
    shared_data: str = "../shared/data"
    dev_config: str = "configs/restore_data_v3.yaml"   # its dev_tracks are held out
    data_file: str = "data/extend_v1/examples.npz"
    out_dir: str = "runs/extend_v1"
    weights: str = "resonate/models/weights/extend_envelope.safetensors"
    sample_rate: int = 44100
    clip_seconds: float = 3.0
    clips_per_minute: float = 14.0
    cutoff_range_hz: tuple[float, float] = (7000.0, 14000.0)
    min_band_hz: float = 1500.0            # at least this much band between cutoff and the source's limit
    damage_mix: tuple[float, float, float] = (0.45, 0.3, 0.25)    # low-pass, MP3, AAC
    mp3_kbps: tuple[int, ...] = (24, 32, 40, 48, 56, 64)          # mono; LAME's cutoff follows
    aac_kbps: tuple[int, ...] = (24, 32, 40, 48, 56)
    validation_tracks: int = 8             # training tracks whose examples only validate
    seed: int = 20261201
    model: EnvelopeNetConfig = field(default_factory=EnvelopeNetConfig)
    steps: int = 3000
    batch: int = 32
    crop_frames: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    log_every: int = 100


def load_train_config(path: str | Path) -> ExtendTrainConfig:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    model = EnvelopeNetConfig.from_dict(raw.pop("model", {}))
    for key in ("cutoff_range_hz", "damage_mix", "mp3_kbps", "aac_kbps"):
        if key in raw:
            raw[key] = tuple(raw[key])
    return ExtendTrainConfig(model=model, **raw)


def split_tracks(cfg: ExtendTrainConfig) -> tuple[list[Path], list[Path]]:
    """(training tracks, development tracks): the development list of the restore data config."""
    dev = set((yaml.safe_load(Path(cfg.dev_config).read_text()) or {}).get("dev_tracks", []))
    music = sorted(p for p in (Path(cfg.shared_data) / "music").rglob("*") if p.suffix.lower() in MUSIC_TYPES)
    held = [p for p in music if p.stem in dev or p.parent.name in dev]
    if not held:
        raise ValueError(f"none of the dev_tracks of {cfg.dev_config} is in {cfg.shared_data}/music")
    return [p for p in music if p not in held], held


def validation_tracks(cfg: ExtendTrainConfig) -> list[Path]:
    """The training tracks whose examples only validate (seeded: the same on every call)."""
    train_tracks, _ = split_tracks(cfg)
    order = np.random.default_rng(cfg.seed).permutation(len(train_tracks))
    return [train_tracks[i] for i in sorted(order[: cfg.validation_tracks])]


def source_limit_hz(audio: np.ndarray, sr: int) -> float:
    """A source's own bandwidth: its detected cutoff, or just under Nyquist when none is found."""
    spectrum = LongTermSpectrum(sr, audio.shape[0])
    spectrum.update(audio)
    found = detect_cutoff(spectrum.power, sr)
    return found.cutoff_hz if found.limited else found.top_hz


def phone_lowpass(x: np.ndarray, sr: int, cutoff_hz: float, order: int = 8, zero_phase: bool = True) -> np.ndarray:
    """A phone's steep anti-alias low-pass (Butterworth) and its microphone's low cut."""
    lp = signal.butter(order, cutoff_hz, "lowpass", fs=sr, output="sos")
    hp = signal.butter(2, 100.0, "highpass", fs=sr, output="sos")
    sos = np.concatenate([hp, lp])
    y = signal.sosfiltfilt(sos, x, axis=-1) if zero_phase else signal.sosfilt(sos, x, axis=-1)
    return y.astype(np.float32)


def damage(clean: np.ndarray, sr: int, rng: np.random.Generator, cfg: ExtendTrainConfig, limit_hz: float) -> tuple[np.ndarray, str]:
    from resonate.train.concert import aac_roundtrip
    from resonate.train.degrade import mp3_roundtrip

    kind = rng.choice(["lowpass", "mp3", "aac"], p=np.asarray(cfg.damage_mix) / sum(cfg.damage_mix))
    if kind == "mp3":
        kbps = int(rng.choice(cfg.mp3_kbps))
        return mp3_roundtrip(clean, sr, kbps).astype(np.float32), f"mp3_{kbps}"
    if kind == "aac":
        kbps = int(rng.choice(cfg.aac_kbps))
        return aac_roundtrip(clean, sr, kbps).astype(np.float32), f"aac_{kbps}"
    low, high = cfg.cutoff_range_hz
    cutoff = float(rng.uniform(low, min(high, limit_hz - cfg.min_band_hz)))
    order = int(rng.integers(6, 13))
    zero_phase = bool(rng.random() < 0.5)
    return phone_lowpass(clean, sr, cutoff, order, zero_phase), f"lowpass_{cutoff:.0f}_{order}"


def example_arrays(clean: np.ndarray, damaged: np.ndarray, sr: int, cutoff_hz: float, limit_hz: float) -> dict[str, np.ndarray]:
    """The stored example of one (clean, damaged) mono pair; the features exactly as the stage makes them."""
    layout = BandLayout(sr, cutoff_hz, limit_hz)
    with torch.no_grad():
        x = torch.from_numpy(np.stack([damaged, clean]).astype(np.float32))
        power = layout.power(layout.stft(x))
        ref = layout.reference_db(power[:1])
        levels = layout.band_levels(power[:1], ref)
        target = layout.band_levels(power[1:], ref, below_cutoff=False)
        feats = layout.features(levels)
    valid = (~layout.present) & layout.exists & (BAND_EDGES_HZ[1:] <= limit_hz) & (BAND_EDGES_HZ[:-1] < limit_hz)
    return {"features": feats[0].numpy().astype(np.float16), "target": target[0].numpy().astype(np.float16),
            "valid": valid, "loud": (ref[0, 0] > QUIET_REFERENCE_DB).numpy()}


def build_examples(cfg: ExtendTrainConfig, log=print) -> dict:
    """Make the examples (``cfg.data_file``): seeded, the validation tracks' examples marked."""
    from resonate.train.build import load_music

    sr = cfg.sample_rate
    train_tracks, dev_tracks = split_tracks(cfg)
    validation = set(validation_tracks(cfg))
    n = int(cfg.clip_seconds * sr)
    rows: dict[str, list] = {"features": [], "target": [], "valid": [], "loud": [], "val": []}
    meta: list[dict] = []
    limits: dict[str, float] = {}
    started = time.time()
    for t, path in enumerate(train_tracks):
        audio = load_music(path, sr)
        limit = source_limit_hz(audio, sr)
        limits[str(path.relative_to(Path(cfg.shared_data) / "music"))] = round(limit, 1)
        if limit < cfg.cutoff_range_hz[0] + cfg.min_band_hz:
            continue
        track_rng = np.random.default_rng([cfg.seed, t])
        count = max(1, int(round(audio.shape[-1] / sr / 60.0 * cfg.clips_per_minute)))
        made = 0
        for _ in range(count * 3):
            if made >= count or audio.shape[-1] <= n:
                break
            start = int(track_rng.integers(0, audio.shape[-1] - n))
            clean = audio[int(track_rng.integers(audio.shape[0])), start: start + n]
            if np.sqrt(np.mean(clean ** 2)) < 0.02:
                continue
            damaged, how = damage(clean[None], sr, track_rng, cfg, limit)
            spectrum = LongTermSpectrum(sr, 1)
            spectrum.update(damaged)
            found = detect_cutoff(spectrum.power, sr)
            if not found.limited or not 6000.0 <= found.cutoff_hz <= limit - cfg.min_band_hz:
                continue
            ex = example_arrays(clean, damaged[0], sr, found.cutoff_hz, limit)
            if not ex["valid"].any():
                continue
            for key in ("features", "target", "valid", "loud"):
                rows[key].append(ex[key])
            rows["val"].append(path in validation)
            meta.append({"track": path.stem, "damage": how, "cutoff_hz": round(found.cutoff_hz, 1), "limit_hz": round(limit, 1)})
            made += 1
        log(f"[{t + 1}/{len(train_tracks)}] {path.name}: limit {limit:.0f} Hz, {made} examples "
            f"({time.time() - started:.0f} s)")
    out = Path(cfg.data_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, features=np.stack(rows["features"]), target=np.stack(rows["target"]),
             valid=np.stack(rows["valid"]), loud=np.stack(rows["loud"]), val=np.array(rows["val"]))
    (out.parent / "examples.json").write_text(json.dumps({"limits": limits, "examples": meta,
                                                          "dev_tracks": [p.stem for p in dev_tracks]}, indent=1))
    return {"examples": len(meta), "validation": int(np.sum(rows["val"])), "seconds": round(time.time() - started, 1)}


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, loud: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in dB over valid bands of loud frames."""
    weight = valid[:, :, None].float() * loud[:, None, :].float()
    return ((pred - target).abs() * weight).sum() / weight.sum().clamp_min(1.0)


def train_envelope(cfg: ExtendTrainConfig, log=print) -> dict:
    """Train :class:`EnvelopeNet` on ``cfg.data_file``; write the weights and a log to ``cfg.out_dir``."""
    torch.manual_seed(cfg.seed)
    data = np.load(cfg.data_file)
    feats = torch.from_numpy(data["features"].astype(np.float32))
    target = torch.from_numpy(data["target"].astype(np.float32))
    valid = torch.from_numpy(data["valid"])
    loud = torch.from_numpy(data["loud"])
    is_val = torch.from_numpy(data["val"])
    train_idx = torch.nonzero(~is_val).flatten()
    val_idx = torch.nonzero(is_val).flatten()
    model = EnvelopeNet(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    frames = feats.shape[-1]
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    history = []
    best = (float("inf"), -1)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    started = time.time()

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            losses = [masked_l1(model(feats[i]), target[i], valid[i], loud[i]).item() for i in val_idx.split(64)]
        model.train()
        return float(np.mean(losses)) if losses else float("nan")

    running = []
    for step in range(1, cfg.steps + 1):
        pick = train_idx[torch.randint(len(train_idx), (cfg.batch,), generator=gen)]
        start = int(torch.randint(0, max(1, frames - cfg.crop_frames), (1,), generator=gen))
        sl = slice(start, start + cfg.crop_frames)
        loss = masked_l1(model(feats[pick][..., sl]), target[pick][..., sl], valid[pick], loud[pick][..., sl])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % cfg.log_every == 0 or step == cfg.steps:
            val = validate()
            entry = {"step": step, "train_l1_db": round(float(np.mean(running)), 3), "val_l1_db": round(val, 3),
                     "seconds": round(time.time() - started, 1)}
            running = []
            history.append(entry)
            log(json.dumps(entry))
            if val < best[0]:
                best = (val, step)
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    params = sum(p.numel() for p in model.parameters())
    extra = {"step": best[1], "val_l1_db": round(best[0], 3), "parameters": params,
             "examples": int(len(train_idx)), "train_config": json.dumps(asdict(replace(cfg, model=cfg.model)))}
    save_extend_weights(model, cfg.weights, extra)
    return {"best_step": best[1], "val_l1_db": round(best[0], 3), "parameters": params,
            "train_examples": int(len(train_idx)), "val_examples": int(len(val_idx)),
            "seconds": round(time.time() - started, 1), "weights": cfg.weights}
