"""Blend a grown restore model back toward the model it was grown from.

    python scripts/blend_grown.py GROWN.safetensors BASE.safetensors SHARE OUT.safetensors

The base is loaded into the grown shape (``RestoreUNet.load_compatible``: it then computes
exactly what the base computed) and every weight is taken ``SHARE`` of the way from there to the
grown model's: 0 gives the base's function, 1 the grown model. docs/restore-model.md (v12).
"""

from __future__ import annotations

import sys

import torch

from resonate.models.io import load_model, save_weights
from resonate.models.unet import RestoreUNet


def main(grown_path: str, base_path: str, share: float, out_path: str) -> None:
    grown, base_small = load_model(grown_path), load_model(base_path)
    torch.manual_seed(0)
    base = RestoreUNet(grown.config)
    base.load_compatible(base_small.state_dict())
    start, end = base.state_dict(), grown.state_dict()
    grown.load_state_dict({k: start[k] + share * (end[k] - start[k]) if end[k].is_floating_point() else end[k]
                           for k in end})
    save_weights(grown, out_path, {"blend": f"{share} of {grown_path} over {base_path}"})
    print(f"wrote {out_path}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])
