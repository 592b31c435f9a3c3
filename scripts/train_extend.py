"""Build the examples for, and train, the bandwidth-extension envelope model.

    nice -n 5 .venv/bin/python scripts/train_extend.py build --config configs/extend_v1.yaml
    nice -n 5 .venv/bin/python scripts/train_extend.py train --config configs/extend_v1.yaml [--steps N]

``build`` writes the examples (``data_file``: features of damaged clips, clean band levels, which
bands are targets) from the training tracks; ``train`` fits the model on them and writes the
safetensors weights (``weights``) and its log (``out_dir``/history.json). One torch thread: the
model is small, and the machine is shared. Details: docs/bandwidth-extension.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from resonate.train.extend import build_examples, load_train_config, train_envelope  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "train"], help="build the examples, or train on them")
    parser.add_argument("--config", required=True, help="YAML config (configs/extend_v1.yaml)")
    parser.add_argument("--steps", type=int, help="override the config's training steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_train_config(args.config)
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    result = build_examples(cfg) if args.command == "build" else train_envelope(cfg)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
