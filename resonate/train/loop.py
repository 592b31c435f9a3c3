"""The training loop (hifi-gan style: one file, readable in one sitting).

accelerate picks the device and mixed precision; AdamW with linear warm-up and cosine decay;
an EMA copy of the weights is what gets validated and exported; a checkpoint is written every
`checkpoint_every` steps and on Ctrl-C/SIGTERM, and `--resume` continues from it; validation
SI-SDR gain on the held-out pairs (penalised when clean input comes out changed) drives early
stopping and picks the best EMA weights.
"""

from __future__ import annotations

import copy
import json
import math
import random
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from resonate.config import config_from_dict
from resonate.device import tune_allocator
from resonate.errors import ResonateError
from resonate.models.inference import Restorer
from resonate.models.io import save_weights
from resonate.models.unet import RestoreUNet, RestoreUNetConfig, count_parameters
from resonate.train.dataset import PairCrops, find_pairs, load_pair
from resonate.train.losses import LossWeights, RestoreLoss
from resonate.train.metrics import si_sdr


@dataclass(frozen=True)
class DataConfig:
    train_dir: str = "data/restore/train"
    val_dir: str = "data/restore/val"
    crop_seconds: float = 2.0
    batch_size: int = 8
    clean_fraction: float = 0.12
    gain_jitter_db: float = 6.0
    num_workers: int = 0
    val_clips: int = 40
    level_dbfs: float | None = None   # bring every crop to this RMS before the gain jitter


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.8, 0.99)
    warmup_steps: int = 200
    max_steps: int = 4000
    grad_clip: float = 5.0


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/restore"
    seed: int = 0
    threads: int = 0                  # torch CPU threads; 0 = leave torch's default
    mixed_precision: str = "auto"     # auto | no | fp16 | bf16
    ema_decay: float = 0.999
    checkpoint_every: int = 100
    val_every: int = 250
    early_stop_patience: int = 6      # validations without improvement before stopping
    export: str = ""                  # also copy the best EMA weights here when training ends
    init_weights: str = ""            # start from these .safetensors weights (fine-tuning); ignored on --resume
    # With init_weights of a smaller model: train only what the growth added (its new channels and
    # blocks); the loaded weights stay as they were, so the grown model can add to what the loaded
    # one does but not unlearn it. Weight decay is then off (it would shrink the frozen weights).
    freeze_loaded: bool = False
    model: RestoreUNetConfig = field(default_factory=RestoreUNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    path = Path(path)
    if not path.exists():
        raise ResonateError(f"training config not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    for key, value in (overrides or {}).items():
        raw[key] = value
    return config_from_dict(TrainConfig, raw, path.name)


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


# "Do no harm": clean music through the model should stay above this SI-SDR against itself.
CLEAN_PASSTHROUGH_DB = 20.0


def spread_pick(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items`` (all of them when there are no more).

    Validation sets are written kind by kind (full damage, then crowd only, room only, ...): the
    first N clips would score a model on one kind and pick checkpoints blind to the others.
    """
    if count >= len(items):
        return list(items)
    if count <= 0:
        return []
    return [items[int(i * len(items) / count)] for i in range(count)]


def validate(model: RestoreUNet, val_dir: str, max_clips: int, device: torch.device) -> tuple[float, float, float]:
    """(selection score, mean SI-SDR gain over the input, median clean-passthrough SI-SDR) in dB.

    The score is the gain, less a penalty when clean input comes out changed: a model that
    restores well but damages clean music must not be picked as the best.
    """
    restorer = Restorer(model, device)
    gains, passthrough = [], []
    for pair in spread_pick(find_pairs(val_dir), max_clips):
        clean, noisy, _ = load_pair(pair)
        gains.append(si_sdr(restorer.process(noisy), clean) - si_sdr(noisy, clean))
        passthrough.append(si_sdr(restorer.process(clean), clean))
    gain, clean_sdr = float(np.mean(gains)), float(np.median(passthrough))
    return gain - 0.25 * max(0.0, CLEAN_PASSTHROUGH_DB - clean_sdr), gain, clean_sdr


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _freeze(model: RestoreUNet, loaded: dict[str, torch.Tensor], log) -> None:
    """Zero the gradient wherever a parameter holds loaded weights (``TrainConfig.freeze_loaded``)."""
    trainable = 0
    for name, p in model.named_parameters():
        keep = (~loaded[name]).to(p.dtype)
        trainable += int(keep.sum())
        p.register_hook(lambda g, keep=keep: g * keep.to(g.device, g.dtype))
    log(f"training only the grown part: {trainable / 1e6:.3f} M parameters")


def train(cfg: TrainConfig, resume: bool = False, log=print) -> dict:
    from accelerate import Accelerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tune_allocator()   # every step re-allocates the same activations: keep them mapped
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(asdict(cfg))), sort_keys=False))
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision))
    device = accelerator.device

    model = RestoreUNet(cfg.model)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=0.0 if cfg.freeze_loaded else cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.optim.warmup_steps, cfg.optim.max_steps))
    criterion = RestoreLoss(cfg.model.n_fft, cfg.model.hop, cfg.model.compress_power, cfg.loss, cfg.model.sample_rate)
    state = {"step": 0, "best_val": -math.inf, "bad_validations": 0, "history": []}

    ckpt_path = out / "last.pt"
    if cfg.init_weights and not resume:
        from resonate.models.io import load_model

        start = load_model(cfg.init_weights, "cpu")
        # The minimum-phase EQ adds at most a zero-initialised output map: a model without it can
        # be fine-tuned with it.
        # So does the level normaliser (it only rescales what the network sees).
        # Wider levels, a wider bottleneck and more temporal blocks start out as the loaded model too
        # (``RestoreUNet.load_compatible``).
        eq_fields = {k: getattr(model.config, k) for k in ("minphase_eq_seconds", "eq_head", "eq_shape_limit_db",
                                                           "level_norm_seconds", "level_norm_reference",
                                                           "bottleneck_dim", "dilations", "channels")}
        grows = (start.config.bottleneck_dim <= model.config.bottleneck_dim
                 and len(start.config.channels) == len(model.config.channels)
                 and all(a <= b for a, b in zip(start.config.channels, model.config.channels))
                 and tuple(model.config.dilations[: len(start.config.dilations)]) == tuple(start.config.dilations))
        if (replace(start.config, **eq_fields) != model.config or not grows
                or (start.config.eq_head and not model.config.eq_head)):
            raise ResonateError(f"{cfg.init_weights} was trained with another model shape than this config")
        loaded = model.load_compatible(start.state_dict())
        ema.load_compatible(start.state_dict())
        log(f"starting from {cfg.init_weights}")
        if cfg.freeze_loaded:
            _freeze(model, loaded, log)
    elif cfg.freeze_loaded and cfg.init_weights:   # resuming: the same tensors stay frozen
        from resonate.models.io import load_model

        _freeze(model, RestoreUNet(cfg.model).load_compatible(load_model(cfg.init_weights, "cpu").state_dict()), log)
    if resume:
        if not ckpt_path.exists():
            raise ResonateError(f"nothing to resume: {ckpt_path} does not exist")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state.update(json.loads(ckpt["state"]))
        log(f"resumed from step {state['step']}")

    dataset = PairCrops(cfg.data.train_dir, cfg.data.crop_seconds, cfg.model.sample_rate, cfg.data.clean_fraction,
                        cfg.data.gain_jitter_db, seed=cfg.seed + 7919 * state["step"], level_dbfs=cfg.data.level_dbfs)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=False, num_workers=cfg.data.num_workers,
                        drop_last=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    ema.to(device)
    log(f"model: {count_parameters(ema) / 1e6:.3f} M parameters; device {device}; "
        f"mixed precision {accelerator.mixed_precision}; {len(dataset.pairs)} training pairs")

    def save_checkpoint() -> None:
        torch.save({"model": accelerator.unwrap_model(model).state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "state": json.dumps(state)}, out / "last.pt.tmp")
        (out / "last.pt.tmp").replace(ckpt_path)

    interrupted = {"flag": False}

    def on_signal(signum, frame):  # finish the current step, checkpoint, stop
        interrupted["flag"] = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    stop_reason = "max_steps"
    progress = tqdm(total=cfg.optim.max_steps, initial=state["step"], desc="train", dynamic_ncols=True,
                    disable=not accelerator.is_local_main_process, mininterval=5.0)
    t0 = time.time()
    try:
        batches = iter(loader)
        while state["step"] < cfg.optim.max_steps:
            noisy, clean = next(batches)
            model.train()
            with accelerator.autocast():
                est_wav, est_c, eq = accelerator.unwrap_model(model).forward_with_spec(noisy)
            loss, parts = criterion(est_wav.float(), est_c.to(torch.complex64), clean, eq, noisy, cfg.model.eq_frames,
                                    cfg.model.eq_shape_limit_db)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            # EMA with warm-up: early on the average must follow the weights, not stay at the init.
            decay = min(cfg.ema_decay, (1 + state["step"]) / (10 + state["step"]))
            with torch.no_grad():
                for e, p in zip(ema.parameters(), accelerator.unwrap_model(model).parameters()):
                    e.lerp_(p.detach(), 1.0 - decay)
            state["step"] += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v:.3f}" for k, v in parts.items()})
            if state["step"] % 20 == 0:
                state["history"].append({"step": state["step"], "loss": round(loss.item(), 5), **parts,
                                         "elapsed_s": round(time.time() - t0, 1)})
                state["history"] = state["history"][-500:]
            if state["step"] % cfg.val_every == 0 or state["step"] == cfg.optim.max_steps:
                pairs = dataset.refresh()
                score, gain, clean_sdr = validate(ema, cfg.data.val_dir, cfg.data.val_clips, device)
                improved = score > state["best_val"]
                if improved:
                    state["best_val"], state["bad_validations"] = score, 0
                    save_weights(ema, out / "best.safetensors", {"step": state["step"], "val_si_sdr_gain_db": round(gain, 3),
                                                                 "val_clean_passthrough_db": round(clean_sdr, 2)})
                else:
                    state["bad_validations"] += 1
                log(f"step {state['step']}: validation score {score:+.2f} (SI-SDR gain {gain:+.2f} dB, clean passthrough "
                    f"{clean_sdr:.1f} dB)" + (" (best)" if improved else "") + f"; {pairs} training pairs")
                if state["bad_validations"] >= cfg.early_stop_patience:
                    stop_reason = "early_stop"
                    break
            if state["step"] % cfg.checkpoint_every == 0:
                save_checkpoint()
            if interrupted["flag"]:
                stop_reason = "interrupted"
                break
    finally:
        progress.close()
        save_checkpoint()
        save_weights(ema, out / "last_ema.safetensors", {"step": state["step"]})
        for s, handler in previous.items():
            signal.signal(s, handler)
    if cfg.export and (out / "best.safetensors").exists():
        Path(cfg.export).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.export).write_bytes((out / "best.safetensors").read_bytes())
    log(f"stopped at step {state['step']} ({stop_reason}); best validation score {state['best_val']:+.2f}")
    return {"step": state["step"], "best_val": state["best_val"], "stop_reason": stop_reason}
