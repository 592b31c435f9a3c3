"""Command-line entry points for the restore model: build-data, prepare-real, train, evaluate, fit-gate.

`python -m resonate train|evaluate` uses `add_*_arguments` / `run_*`; all of them are also reachable
as `python -m resonate.train.commands <command>`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from resonate.config import config_from_dict
from resonate.device import DEVICE_CHOICES, pick_device
from resonate.errors import ResonateError
from resonate.models.io import DEFAULT_WEIGHTS


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML training config (see configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    parser.add_argument("--out-dir", help="override the config's out_dir")
    parser.add_argument("--max-steps", type=int, help="override optim.max_steps")


def run_train(args: argparse.Namespace) -> int:
    from resonate.train.loop import load_config, train

    overrides = {"out_dir": args.out_dir} if args.out_dir else {}
    cfg = load_config(args.config, overrides)
    if args.max_steps is not None:
        from dataclasses import replace

        cfg = replace(cfg, optim=replace(cfg.optim, max_steps=args.max_steps))
    result = train(cfg, resume=args.resume)
    print(json.dumps(result))
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(DEFAULT_WEIGHTS), help="restore weights (.safetensors)")
    parser.add_argument("--data", required=True, help="folder of {song}_0.wav (clean) and {song}_{k}.wav pairs")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--align", action="store_true", help="align every pair first (real recordings)")
    parser.add_argument("--max-clips", type=int, default=0)
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--chain", action="store_true",
                        help="also run the default chain without separation on every clip (slower)")
    parser.add_argument("--json", help="also write the summary and per-clip figures to this file")


def run_evaluate(args: argparse.Namespace) -> int:
    from resonate.train.evaluate import evaluate_folder, format_table, summary, summary_lines, to_json

    results = evaluate_folder(args.model, args.data, pick_device(args.device), align=args.align,
                              max_clips=args.max_clips, strength=args.strength, chain=args.chain)
    print(format_table(results))
    for line in summary_lines(summary(results)):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results), indent=2))
    return 0


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML data-build config (see configs/)")


def run_build(args: argparse.Namespace) -> int:
    from resonate.train.build import BuildConfig, build

    raw = yaml.safe_load(Path(args.config).read_text()) or {}
    if raw.get("version") == 3:   # the v3 concert pairs (resonate/train/build_v3.py)
        from resonate.train.build_v3 import BuildV3Config, build_v3

        print(json.dumps(build_v3(config_from_dict(BuildV3Config, raw, Path(args.config).name))))
        return 0
    cfg = config_from_dict(BuildConfig, raw, Path(args.config).name)
    print(json.dumps(build(cfg)))
    return 0


def add_prepare_real_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder of {song}_0.wav masters and {song}_{k}.wav recordings")
    parser.add_argument("--out", required=True, help="where aligned segment pairs are written")
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--min-confidence", type=float, default=0.05)


def run_prepare_real(args: argparse.Namespace) -> int:
    """Align each real pair and cut it into segment pairs in the training folder format."""
    from resonate.train.align import align_pair
    from resonate.train.dataset import find_pairs, load_pair

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for pair in find_pairs(args.input):
        clean, rec, sr = load_pair(pair)
        if rec.shape[0] != clean.shape[0]:
            rec = np.repeat(rec.mean(axis=0, keepdims=True), clean.shape[0], axis=0)
        clean, rec, al = align_pair(clean, rec, sr)
        if al.confidence < args.min_confidence:
            print(f"skip {pair.recording.name}: alignment confidence {al.confidence:.3f}")
            continue
        print(f"{pair.recording.name}: offset {al.offset_s:+.3f} s, drift {al.drift * 1e6:+.0f} ppm, "
              f"confidence {al.confidence:.2f}")
        seg = int(args.segment_seconds * sr)
        for j in range(clean.shape[-1] // seg):
            name = f"{pair.recording.stem}s{j:03d}"
            sf.write(out / f"{name}_0.wav", clean[:, j * seg:(j + 1) * seg].T, sr, subtype="FLOAT")
            sf.write(out / f"{name}_1.wav", rec[:, j * seg:(j + 1) * seg].T, sr, subtype="FLOAT")
            written += 1
    print(f"{written} aligned segment pairs in {out}")
    return 0


def add_fit_gate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="restore weights (.safetensors) to fit a damage gate to")
    parser.add_argument("--data", required=True, help="training pairs ({id}_0.wav target, {id}_1.wav recording)")
    parser.add_argument("--pairs", type=int, default=600, help="how many pairs to run the model over")
    parser.add_argument("--out", help="write the model with its gate here (default: --model, replaced)")
    parser.add_argument("--max-alpha", type=float, default=1.0,
                        help="the most of the model's change the gate may apply (1 = the model as trained: "
                             "the gate can only hold back; above 1 it may also push further)")
    parser.add_argument("--seed", type=int, default=0)


def run_fit_gate(args: argparse.Namespace) -> int:
    """Fit the damage gate to a model's outputs on training pairs and store it in the weights file."""
    from resonate.models.gate import GateConfig
    from resonate.models.io import load_model, read_metadata, save_weights
    from resonate.train.gate import collect, fit

    features, stats = collect(args.model, args.data, args.pairs, args.seed)
    gate, figures = fit(features, stats, GateConfig(max_alpha=args.max_alpha), seed=args.seed)
    model = load_model(args.model)
    model.gate = gate
    keep = {k: v for k, v in read_metadata(args.model).items() if k not in ("format", "config", "gate_config", "gate_fit")}
    save_weights(model, args.out or args.model, {**keep, "gate_fit": figures})
    print(json.dumps(figures))
    return 0


COMMANDS = {
    "build-data": (add_build_arguments, run_build, "render music, synthesise crowds and rooms, write pairs"),
    "prepare-real": (add_prepare_real_arguments, run_prepare_real, "align real concert/studio pairs into segments"),
    "train": (add_train_arguments, run_train, "train the restore model from a YAML config"),
    "evaluate": (add_evaluate_arguments, run_evaluate, "SI-SDR / LSD of the model vs input and noisereduce"),
    "fit-gate": (add_fit_gate_arguments, run_fit_gate, "fit a model's damage gate on training pairs"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resonate.train.commands")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _, help_text) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except ResonateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
