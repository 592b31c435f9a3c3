"""Saving and loading restore-model weights as safetensors (never pickle).

The model's config travels in the file's metadata as JSON, so a weights file is self-describing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from resonate.errors import ResonateError
from resonate.models.gate import DamageGate, GateConfig
from resonate.models.unet import RestoreUNet, RestoreUNetConfig

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "restore_unet.safetensors"


def write_weights_file(model: torch.nn.Module, path: str | Path, metadata: dict[str, str], extra: dict | None = None,
                       dtype: torch.dtype = torch.float32) -> Path:
    """``model``'s state dict as safetensors at ``path``, atomically: ``metadata`` (format, config)
    plus ``extra`` (strings as they are, anything else as JSON). Every model Resonate ships is
    written here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    metadata = dict(metadata)
    for k, v in (extra or {}).items():
        metadata[k] = v if isinstance(v, str) else json.dumps(v)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def save_weights(model: RestoreUNet, path: str | Path, extra: dict | None = None) -> Path:
    metadata = {"format": "resonate-restore-unet/1", "config": json.dumps(model.config.to_dict())}
    if getattr(model, "gate", None) is not None:      # its tensors are in the state dict as gate.*
        metadata["gate_config"] = json.dumps(model.gate.config.to_dict())
    return write_weights_file(model, path, metadata, extra)


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_model(path: str | Path = DEFAULT_WEIGHTS, device: torch.device | str = "cpu") -> RestoreUNet:
    path = Path(path)
    if not path.exists():
        raise ResonateError(f"restore model weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if "config" not in meta:
                raise ResonateError(f"{path.name} is not a Resonate restore model (no config in its metadata)")
            config = RestoreUNetConfig.from_dict(json.loads(meta["config"]))
            state = {k: f.get_tensor(k) for k in f.keys()}
    except ResonateError:
        raise
    except Exception as exc:  # corrupt or foreign file: one line for the user
        raise ResonateError(f"cannot read restore model weights {path.name}: {exc}") from exc
    model = RestoreUNet(config)
    if "gate_config" in meta:   # the damage gate fitted to this model (resonate.models.gate)
        model.gate = DamageGate(GateConfig.from_dict(json.loads(meta["gate_config"])))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ResonateError(f"{path.name} does not match the restore model (missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return model.eval().to(device)
