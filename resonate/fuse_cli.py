"""``python -m resonate fuse A B [C ...] -o OUT [chain options as for restore]``.

Aligns and fuses the recordings (``resonate/fuse.py``) into a temporary float32 file in the job's
work folder (a ``resonate-spool-<pid>-*`` folder, removed when the job ends and by any later job if
this one is killed), then runs the normal chain on it with ``process_file``. The chain options are
the restore command's own (copied from its parser), so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from resonate import cli, jobfiles
from resonate.audio.io import output_suffix, probe, sanitize_filename
from resonate.errors import ResonateError
from resonate.fuse import FUSION_MODES, FuseConfig, fuse_files

# Restore's options that fuse does not take over as they are: its inputs and the flags the command
# registry adds itself.
_NOT_COPIED = {"help", "inputs", "debug"}


def _restore_parser() -> argparse.ArgumentParser:
    scratch = argparse.ArgumentParser(add_help=False)
    sub = scratch.add_subparsers()
    cli._add_restore(sub)
    return sub.choices["restore"]


def add_fuse_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recordings", nargs="+", metavar="RECORDING",
                   help="two or more recordings of the same show (WAV/FLAC/OGG/MP3)")
    for action in _restore_parser()._actions:
        if action.dest not in _NOT_COPIED:
            p._add_action(action)
    p.add_argument("--fusion", choices=FUSION_MODES, default=FuseConfig.mode,
                   help="per time-frequency cell: complex average of the recordings near the median, of those near "
                        "the quietest (quiet; with three or more), their mean magnitude with the median one's "
                        "phase (magphase), or the quietest (min)")
    p.add_argument("--work-dir", metavar="DIR", help="folder for the temporary fused file (default: $TMPDIR)")
    p.description = ("Align several recordings of one show (offsets, clock drift), fuse them per "
                     "time-frequency cell, and run the restore chain on the result.")


def run_fuse(args) -> int:
    recordings = [Path(r) for r in args.recordings]
    if len(recordings) < 2:
        raise ResonateError("fuse needs at least two recordings of the same show")
    from resonate.pipeline import ChainSettings, OutputOptions, process_file, stage_configs

    infos = [probe(r) for r in recordings]
    fmt = args.format or ("mp3" if args.output.lower().endswith(".mp3") else "wav")
    settings = ChainSettings(preset=args.preset, overrides=cli._overrides(args)).bypassing(args.skip)
    output = OutputOptions(format=fmt, bit_depth=args.bit_depth, mp3_bitrate=args.mp3_bitrate,
                           sample_rate=args.sample_rate)
    stage_configs(settings)
    out = Path(args.output)
    if out.is_dir() or args.output.endswith(("/", "\\")):
        out = out / (sanitize_filename(recordings[0].stem) + "_fused" + output_suffix(fmt))
    stems_dir = Path(args.stems) if args.stems else None
    cli._check_job_paths(args, recordings, [out], [stems_dir], fmt)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.gettempdir())
    jobfiles.check_folder_writable(work, "temporary fused file")
    removed = jobfiles.remove_leftovers([work, out.parent])
    if removed:
        print(f"warning: {jobfiles.leftovers_message(removed)}", file=sys.stderr)
    # The fused file is float32 at the highest rate, as long as the longest recording plus the
    # others' offsets: bound it by the sum of the recordings' lengths.
    fused_bytes = sum(i.frames / i.sample_rate for i in infos) * max(i.sample_rate for i in infos) * 2 * 4
    jobfiles.check_free_space([(work, int(fused_bytes), "temporary fused file")])
    signal.signal(signal.SIGTERM, cli._on_sigterm)

    bars = _Progress()
    try:
        with jobfiles.spool_folder(work) as tmp:
            # Named after the output, so that stems (--stems) are named after it too.
            fused = Path(tmp) / (sanitize_filename(out.stem, "fused") + ".wav")
            fusion = fuse_files(recordings, fused, FuseConfig(mode=args.fusion), progress=bars)
            for r in fusion["recordings"]:
                print(_describe(r), file=sys.stderr)
            report = process_file(
                fused, out, settings, output, device=args.device, models_dir=args.models_dir,
                stems_dir=stems_dir, cache_dir=args.cache_dir, progress=bars, work_dir=work,
                warn=lambda m: print(f"warning: {m}", file=sys.stderr),
            )
    finally:
        bars.close()
    report["input"] = [str(r) for r in recordings]
    report["fusion"] = fusion
    out_l = report["output_loudness"]
    print(f"{out}  {report['seconds']:.1f} s from {sum(r['used'] for r in fusion['recordings'])} recordings  "
          f"{out_l['integrated_lufs']} LUFS  {out_l['true_peak_dbtp']} dBTP  ({report['elapsed_seconds']:.1f} s)")
    if args.report:
        cli._write_report(Path(args.report), report)
    return 0


def _describe(r: dict) -> str:
    if not r["used"]:
        return f"left out: {r['name']}: {r['reason']}"
    if r["reference"]:
        return f"reference: {r['name']} ({r['seconds']:.1f} s)"
    return (f"aligned: {r['name']}: starts at {r['start_s']:.3f} s, drift {r['drift_ppm']:+.1f} ppm, "
            f"{r['windows_agreeing']}/{r['windows']} windows agree, residual {r['fit_residual_ms']:.3f} ms")


class _Progress:
    """One tqdm bar per phase (align, fuse) and per chain stage."""

    def __init__(self):
        self.bars = {}

    def __call__(self, stage: str, fraction: float) -> None:
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=1000, desc=f"{stage:>8}", unit="‰", leave=False,
                                          disable=None, file=sys.stderr)
        bar.update(int(fraction * 1000) - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
