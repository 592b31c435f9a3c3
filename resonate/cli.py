"""Command line: ``python -m resonate restore|train|evaluate|bench``.

Errors the user can act on print one line starting with ``error:`` and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path

from resonate import jobfiles
from resonate.audio.io import MP3_BITRATES, READ_EXTENSIONS, output_suffix, sanitize_filename
from resonate.device import DEVICE_CHOICES
from resonate.errors import ResonateError
from resonate.pipeline import OUTPUT_RATE_RANGE
from resonate.stages import STAGE_ORDER, load_registry

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130            # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service stopping, ``kill``): handled like Ctrl-C, so the job cleans up after itself."""


def _on_sigterm(signum, frame) -> None:
    # Once: a second SIGTERM must not interrupt the clean-up of the first.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _setting_help(stage: str, name: str, extra: str = "") -> str:
    """A flag's help from the setting's own declaration (range, unit, help), plus ``extra``."""
    from resonate.config import setting_info

    config = load_registry().get(stage)
    info = setting_info(config.Config, name) if config is not None else None
    return ", ".join(p for p in (info.describe() if info else "", extra) if p)


def _add_restore(sub) -> None:
    p = sub.add_parser("restore", help="restore one or more recordings")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="WAV/FLAC/OGG/MP3 files")
    p.add_argument("-o", "--output", required=True, help="output file, or a folder for several inputs")
    p.add_argument("--preset", default="concert", help="concert (default), phone, gentle, broadcast, or a .toml file")
    p.add_argument("--skip", nargs="+", default=[], choices=STAGE_ORDER, metavar="STAGE",
                   help=f"bypass stages ({', '.join(STAGE_ORDER)}), besides any the preset bypasses")
    p.add_argument("--target-lufs", type=float, help=_setting_help("loudness", "target_lufs", "default from the preset"))
    p.add_argument("--true-peak", type=float, help=_setting_help("loudness", "true_peak_dbtp", "default from the preset"))
    p.add_argument("--denoise-strength", type=float, help=_setting_help("denoise", "strength"))
    p.add_argument("--noise-range", nargs=2, type=float, metavar=("START_S", "END_S"),
                   help="noise-only time range for the denoise profile (default: quietest stretch)")
    p.add_argument("--restore-strength", type=float, help=_setting_help("restore", "strength"))
    p.add_argument("--reference", action="append", default=[], metavar="STUDIO.wav[@START-END]",
                   help="the studio version of the songs: the match stage brings the recording's tone to it; "
                        "for several songs repeat it with the time range each covers (@0:00-4:10)")
    p.add_argument("--match-strength", type=float, help=_setting_help("match", "strength"))
    p.add_argument("--loudness-from-reference", action="store_true",
                   help="aim at the studio version's integrated loudness instead of --target-lufs (needs --reference)")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.SETTING=VALUE",
                   help="any stage setting, as a preset file writes it (e.g. loudness.max_compensation_db=9); repeatable")
    p.add_argument("--format", choices=("wav", "mp3"), help="output format (default from -o suffix, else wav)")
    p.add_argument("--bit-depth", default="24", choices=("16", "24", "32f"), help="WAV bit depth")
    p.add_argument("--mp3-bitrate", type=int, default=320, choices=MP3_BITRATES, help="MP3 CBR kbps")
    p.add_argument("--sample-rate", type=int, metavar="HZ",
                   help="resample the output, {}..{} Hz (default: keep the input rate)".format(*OUTPUT_RATE_RANGE))
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--models-dir", help="local folder of Demucs weights (offline use)")
    p.add_argument("--stems", metavar="DIR", help="also write the separated stems to DIR")
    p.add_argument("--cache-dir", help="stem cache folder (default ~/.cache/resonate/stems)")
    p.add_argument("--report", metavar="FILE.json", help="write a JSON report (a list for several inputs)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_restore)


def _setting_value(text: str):
    """A --set value as TOML reads it (numbers, true/false, lists), else the text itself."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _overrides(args) -> dict:
    o: dict[str, dict] = {}
    for item in getattr(args, "set", None) or ():
        key, eq, value = item.partition("=")
        stage, dot, name = key.strip().partition(".")
        if not (eq and dot and stage and name):
            raise ResonateError(f"--set takes STAGE.SETTING=VALUE, got '{item}'")
        o.setdefault(stage, {})[name] = _setting_value(value.strip())
    if args.target_lufs is not None:
        o.setdefault("loudness", {})["target_lufs"] = args.target_lufs
    if args.true_peak is not None:
        o.setdefault("loudness", {})["true_peak_dbtp"] = args.true_peak
    if args.denoise_strength is not None:
        o.setdefault("denoise", {})["strength"] = args.denoise_strength
    if args.noise_range:
        o.setdefault("denoise", {}).update(noise_start_s=args.noise_range[0], noise_end_s=args.noise_range[1])
    if args.restore_strength is not None:
        o.setdefault("restore", {})["strength"] = args.restore_strength
    if getattr(args, "reference", None):
        o.setdefault("match", {})["references"] = list(args.reference)
    if getattr(args, "match_strength", None) is not None:
        o.setdefault("match", {})["strength"] = args.match_strength
    if getattr(args, "loudness_from_reference", False):
        if not getattr(args, "reference", None):
            raise ResonateError("--loudness-from-reference needs a studio version (--reference)")
        if args.target_lufs is not None:
            raise ResonateError("give either --target-lufs or --loudness-from-reference, not both")
        o.setdefault("loudness", {})["follow_reference"] = True
    return o


def _output_paths(inputs: list[Path], output: str, fmt: str) -> list[Path]:
    out = Path(output)
    said_folder = output.endswith(("/", "\\"))
    as_folder = len(inputs) > 1 or out.is_dir() or said_folder
    if not as_folder:
        return [out]
    if out.exists() and not out.is_dir():
        raise ResonateError(f"-o must be a folder when restoring several files: {out}")
    if not out.exists() and not said_folder and out.suffix.lower() in (*READ_EXTENSIONS, ".mp3", ".wav"):
        # Most likely a slip, not a folder wanted with that name.
        raise ResonateError(f"-o {output} names a file, but {len(inputs)} inputs need an output folder "
                            f"(e.g. -o {out.with_suffix('')}{os.sep})")
    names, paths = set(), []
    for src in inputs:
        stem = sanitize_filename(src.stem) + "_restored"
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}_{k}", k + 1
        names.add(name)
        paths.append(out / (name + output_suffix(fmt)))
    return paths


def _stems_dirs(args, inputs: list[Path]) -> list[Path | None]:
    if not args.stems:
        return [None] * len(inputs)
    if len(inputs) == 1:
        return [Path(args.stems)]
    return [Path(args.stems) / sanitize_filename(src.stem) for src in inputs]


def _check_job_paths(args, inputs: list[Path], targets: list[Path], stems_dirs: list[Path | None], fmt: str) -> None:
    """Before any work: no output, report or stem file may be an input, and every folder written to
    must accept files."""
    outputs = [("output", t) for t in targets]
    if args.report:
        outputs.append(("report", Path(args.report)))
    jobfiles.refuse_overwriting_inputs(inputs, outputs)
    if "separate" not in args.skip:
        # Stem files are named after their input (NAME-SOURCE.wav); which sources, only the model knows.
        for src, folder in zip(inputs, stems_dirs):
            if folder is None:
                continue
            stem_name = re.compile(re.escape(sanitize_filename(src.stem, "stems")) + r"-\w+" + re.escape(output_suffix(fmt)))
            for other in inputs:
                if stem_name.fullmatch(other.name) and jobfiles.same_file(other.parent, folder):
                    raise ResonateError(f"the stems of {src} would overwrite the input {other}; choose another --stems folder")
    for folder in sorted({t.parent for t in targets}):
        jobfiles.check_folder_writable(folder, "output")
    if args.report:
        report = Path(args.report)
        if report.is_dir():
            raise ResonateError(f"--report must be a file, not a folder: {report}")
        jobfiles.check_folder_writable(report.parent, "report")
    if "separate" not in args.skip:
        for folder in sorted({d for d in stems_dirs if d is not None}):
            jobfiles.check_folder_writable(folder, "stems")


def _check_references(configs: dict, settings, inputs: list[Path], outputs: list[Path]) -> None:
    """Before any work: every studio reference readable, long enough, not silent, and none of them
    an input or an output of the job."""
    match = configs.get("match")
    if match is None or not match.references or "match" in settings.skip:
        return
    from resonate.stages.match import check_reference_paths, check_references

    check_reference_paths(match.references, inputs, outputs)
    check_references(match.references)


def _failure_message(exc: BaseException) -> tuple[str, int]:
    """One line for a file that failed, and the exit status it calls for."""
    if isinstance(exc, ResonateError):
        return str(exc), EXIT_USER_ERROR
    if isinstance(exc, OSError):   # the file system said no: something the user can act on
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), EXIT_USER_ERROR
    return f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", EXIT_INTERNAL_ERROR


def cmd_restore(args) -> int:
    from tqdm import tqdm

    from resonate.pipeline import ChainSettings, JobEnvironment, OutputOptions, process_file, stage_configs

    inputs = [Path(i) for i in args.inputs]
    fmt = args.format or ("mp3" if args.output.lower().endswith(".mp3") else "wav")
    settings = ChainSettings(preset=args.preset, overrides=_overrides(args)).bypassing(args.skip)
    output = OutputOptions(format=fmt, bit_depth=args.bit_depth, mp3_bitrate=args.mp3_bitrate,
                           sample_rate=args.sample_rate)
    configs = stage_configs(settings)   # a bad preset or setting is one error for the whole batch, not one per file
    targets = _output_paths(inputs, args.output, fmt)
    stems_dirs = _stems_dirs(args, inputs)
    _check_job_paths(args, inputs, targets, stems_dirs, fmt)
    _check_references(configs, settings, inputs, targets + ([Path(args.report)] if args.report else []))
    if args.report:
        removed = jobfiles.remove_leftovers([Path(args.report).parent])
        if removed:
            print(f"warning: {jobfiles.leftovers_message(removed)}", file=sys.stderr)
    signal.signal(signal.SIGTERM, _on_sigterm)

    # One environment for the batch: its model loader loads each model once for all the files.
    env = JobEnvironment(device=args.device, models_dir=args.models_dir, cache_dir=args.cache_dir)
    reports, status = [], 0
    for src, dst, stems_dir in zip(inputs, targets, stems_dirs):
        bars: dict[str, tqdm] = {}

        def progress(stage: str, fraction: float, bars=bars, label=src.name[:24]) -> None:
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=1000, desc=f"{label} {stage:>8}", unit="‰",
                                         leave=False, disable=None, file=sys.stderr)
            bar.update(int(fraction * 1000) - bar.n)

        try:
            report = process_file(src, dst, settings, output, stems_dir=stems_dir, progress=progress,
                                  warn=lambda m: print(f"warning: {m}", file=sys.stderr), env=env)
        except Exception as exc:  # noqa: BLE001 - one file's failure, whatever it is, never stops a batch
            if args.debug:
                raise
            message, code = _failure_message(exc)
            print(f"error: {src}: {message}" if len(inputs) > 1 else f"error: {message}", file=sys.stderr)
            # A crash anywhere in the batch outranks a user error: it is what needs reporting.
            status = EXIT_INTERNAL_ERROR if EXIT_INTERNAL_ERROR in (status, code) else EXIT_USER_ERROR
            reports.append({"input": str(src), "output": str(dst), "error": message})
            continue
        finally:
            for bar in bars.values():
                bar.close()
        reports.append(report)
        out_l = report["output_loudness"]
        print(f"{dst}  {report['seconds']:.1f} s  {out_l['integrated_lufs']} LUFS  "
              f"{out_l['true_peak_dbtp']} dBTP  ({report['elapsed_seconds']:.1f} s, RTF {report['rtf']})")
    if args.report:
        _write_report(Path(args.report), reports[0] if len(inputs) == 1 else reports)
    return status


def _write_report(path: Path, content) -> None:
    from resonate.audio.io import write_text_atomic

    try:
        with jobfiles.staged_output(path) as staged:
            write_text_atomic(staged, json.dumps(content, indent=2))
    except OSError as exc:
        raise ResonateError(f"cannot write the report {path}: {exc.strerror or exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resonate", description="Restore concert recordings into clean masters.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_restore(sub)
    _add_optional_commands(sub)
    return parser


# Commands that live in their own modules: (module, [(command, help, add-arguments fn, run fn)]).
OPTIONAL_COMMANDS = (
    ("resonate.train.commands", (
        ("train", "train the restoration model", "add_train_arguments", "run_train"),
        ("evaluate", "evaluate a restoration model on a folder of pairs", "add_evaluate_arguments", "run_evaluate"),
    )),
    ("resonate.bench", (
        ("bench", "measure speed and memory of each stage and the chain", "add_bench_arguments", "run_bench"),
    )),
    ("resonate.fuse_cli", (
        ("fuse", "align and fuse several recordings of one show, then restore the result", "add_fuse_arguments", "run_fuse"),
    )),
    ("resonate.models_cli", (
        ("models", "list or fetch community models (crowd removal, de-reverb) for the separate stage",
         "add_models_arguments", "run_models"),
    )),
)


def _add_optional_commands(sub) -> None:
    for module_name, commands in OPTIONAL_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("resonate"):
                raise
            continue
        for command, help_text, add_arguments, run in commands:
            p = sub.add_parser(command, help=help_text)
            getattr(module, add_arguments)(p)
            p.add_argument("--debug", action="store_true", help="show tracebacks")
            p.set_defaults(func=getattr(module, run))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ResonateError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"error: {how}; no output was written for the file in progress", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
        if getattr(args, "debug", False):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
