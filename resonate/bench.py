"""``python -m resonate bench``: speed and memory of every stage and of the whole chain.

Each (stage, duration) measurement runs in a fresh Python process (``python -m resonate.bench
--one SPEC``) that streams a real file through :func:`resonate.pipeline.process_file`, so peak
RSS is that run's own and the I/O path is the real one. A "stage alone" run bypasses every other
stage (``ChainSettings.skip``); its seconds are the stage's own share of the stream, as the job
report gives them (model loading and ``open`` excluded). Chain rows time the whole job.

Where weights are missing, the real architectures run with random weights: Demucs ``htdemucs``
with its released hyper-parameters, and the restore U-Net with its default config. Compute is
the same; the output means nothing, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from resonate.errors import ResonateError
from resonate.stages import STAGE_ORDER

SAMPLE_RATE = 44100
CHANNELS = 2
GENERATE_BLOCK_SECONDS = 10.0

# What each bench row runs. "demucs" is the reference for the separate stage: demucs's own
# apply_model on the whole file at once, no streaming windows, no remix.
ROWS: dict[str, tuple[str, ...]] = {
    "io": (),
    "separate": ("separate",),
    "demucs": ("separate",),
    "denoise": ("denoise",),
    "restore": ("restore",),
    "master": ("master",),
    "loudness": ("loudness",),
    "chain": ("denoise", "restore", "master", "loudness"),
    "full": STAGE_ORDER,
}
ROW_NOTES = {
    "io": "read + meters + write, no stage",
    "demucs": "demucs apply_model, whole file",
    "chain": "denoise+restore+master+loudness",
    "full": "all five stages",
}
DEFAULT_ROWS = ("io", "separate", "demucs", "denoise", "restore", "master", "loudness", "chain", "full")

# htdemucs as released (demucs grids/mmi.py: depth 4, dconv_mode 3, 5 transformer layers,
# 512 bottom channels, trained on 7.8 s segments); everything else is HTDemucs's default.
HTDEMUCS_KWARGS = dict(channels=48, depth=4, nfft=4096, dconv_mode=3, t_layers=5, bottom_channels=512,
                       segment=7.8, samplerate=44100, audio_channels=2)


# ---------------------------------------------------------------------------------------------
# Test material


def concert_block(start: int, n: int, sr: int = SAMPLE_RATE, channels: int = CHANNELS, seed: int = 0) -> np.ndarray:
    """``n`` frames of a deterministic, concert-like signal starting at frame ``start``.

    Chords of harmonic notes that change every second, a kick-like thump on every beat, and a
    crowd/room noise floor. The music is a pure function of time; the noise is seeded by
    ``(seed, start)``, so a file written in the same blocks is the same file every time.
    """
    t = (start + np.arange(n)) / sr
    rng = np.random.default_rng([seed, start])
    beat = np.floor(t * 2.0)                               # 120 bpm
    chord = np.floor(t).astype(np.int64)
    roots = np.array([110.0, 146.8, 130.8, 98.0])[chord % 4]
    music = np.zeros(n)
    for interval, amp in ((1.0, 0.12), (1.26, 0.08), (1.5, 0.08), (2.0, 0.05)):
        f0 = roots * interval
        for k in range(1, 6):                              # a few partials per note, falling off
            music += amp / k * np.sin(2 * np.pi * k * f0 * t)
    since_beat = t * 2.0 - beat
    music += 0.3 * np.exp(-since_beat * 30) * np.sin(2 * np.pi * 55 * since_beat / 2.0)
    swell = 0.7 + 0.3 * np.sin(2 * np.pi * t / 17.0)
    out = np.empty((channels, n), dtype=np.float32)
    for c in range(channels):
        crowd = np.cumsum(rng.standard_normal(n)) * 1e-3   # brown-ish rumble
        crowd -= np.convolve(crowd, np.ones(64) / 64, mode="same")
        out[c] = music * swell * (1.0 - 0.15 * c) + 0.02 * rng.standard_normal(n) + crowd
    return out


def make_material(path: Path, seconds: float, sr: int = SAMPLE_RATE, channels: int = CHANNELS) -> Path:
    """Write ``seconds`` of test material as 24-bit WAV, block by block (memory stays flat)."""
    import soundfile as sf

    total = int(round(seconds * sr))
    block = int(GENERATE_BLOCK_SECONDS * sr)
    with sf.SoundFile(str(path), "w", sr, channels, "PCM_24", format="WAV") as f:
        for start in range(0, total, block):
            f.write(concert_block(start, min(block, total - start), sr, channels).T)
    return path


def cut_input(src: Path, dst: Path, seconds: float) -> float:
    """The first ``seconds`` of a user's file (all of it when shorter); returns the length used."""
    import soundfile as sf

    from resonate.audio.io import probe, read_blocks

    info = probe(src)
    frames = min(info.frames, int(round(seconds * info.sample_rate)))
    with sf.SoundFile(str(dst), "w", info.sample_rate, info.channels, "FLOAT", format="WAV") as f:
        for b in read_blocks(src, 1 << 16, 0, frames):
            f.write(b.T)
    return frames / info.sample_rate


# ---------------------------------------------------------------------------------------------
# Random-weight models of the real architectures


def random_restore_weights(folder: Path) -> Path:
    """The restore U-Net with its default config and random weights, saved like shipped weights."""
    import torch

    from resonate.models.io import save_weights
    from resonate.models.unet import RestoreUNet, RestoreUNetConfig

    torch.manual_seed(0)
    return save_weights(RestoreUNet(RestoreUNetConfig()), folder / "restore_random.safetensors",
                        extra={"note": "random weights for benchmarking"})


def random_htdemucs_repo(folder: Path) -> Path:
    """A full-size htdemucs with random weights in demucs's local-repo layout (``--models-dir``)."""
    from resonate.separation.testing import make_tiny_htdemucs_repo

    return make_tiny_htdemucs_repo(folder, "htdemucs", seed=0, **HTDEMUCS_KWARGS)


# ---------------------------------------------------------------------------------------------
# One measurement (runs in its own process)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024   # bytes on macOS, KiB on Linux


def _gpu_peak_mb(device: str) -> float | None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    if device == "mps" and getattr(torch, "mps", None) is not None:
        return torch.mps.driver_allocated_memory() / 2**20    # MPS has no peak counter: memory held at the end
    return None


def _run_demucs_direct(spec: dict[str, Any]) -> dict[str, Any]:
    """Reference timing: demucs's apply_model over the whole file at once, as its own CLI does."""
    import torch
    from demucs.apply import apply_model

    from resonate.audio.io import read_audio
    from resonate.device import pick_device
    from resonate.separation.models import load_model

    device = pick_device(spec["device"])
    model = load_model("htdemucs", Path(spec["models_dir"]) if spec.get("models_dir") else None)
    x, sr = read_audio(spec["input"])
    started, cpu_started = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        mix = torch.from_numpy(x)[None]
        out = apply_model(model, mix, shifts=0, split=True, overlap=0.25, device=device, progress=False)
    seconds = time.perf_counter() - started
    del out
    return {"seconds": seconds, "wall_seconds": seconds, "cpu_seconds": time.process_time() - cpu_started,
            "device": str(device), "unavailable": None}


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement described by ``spec`` in this process and return its figures."""
    row = spec["row"]
    if row == "demucs":
        result = _run_demucs_direct(spec)
    else:
        from resonate.pipeline import ChainSettings, process_file

        active = ROWS[row]
        overrides = {}
        if spec.get("restore_weights"):
            overrides["restore"] = {"weights": spec["restore_weights"]}
        settings = ChainSettings(overrides=overrides, skip=tuple(s for s in STAGE_ORDER if s not in active))
        cpu_started = time.process_time()
        report = process_file(spec["input"], spec["output"], settings, device=spec["device"],
                              models_dir=spec.get("models_dir"), cache_dir=spec["cache_dir"],
                              work_dir=spec["work_dir"], warn=lambda m: None)
        stages = {s["name"]: s for s in report["stages"]}
        missing = [f"{n}: {stages[n].get('reason')}" for n in active if n in stages and stages[n]["skipped"]]
        missing += [f"{n}: not installed" for n in active if n not in stages]
        own = sum(stages[n]["seconds"] for n in active if n in stages and not stages[n]["skipped"])
        result = {
            # A stage alone: its own seconds. A chain: the whole job, reading and writing included.
            "seconds": own if len(active) == 1 else report["elapsed_seconds"],
            "wall_seconds": report["elapsed_seconds"],
            # CPU seconds of the whole job, all threads: steadier than wall time on a shared machine.
            "cpu_seconds": time.process_time() - cpu_started,
            "device": report["device"],
            "unavailable": "; ".join(missing) or None,
            "stages": {n: stages[n]["seconds"] for n in stages if not stages[n]["skipped"]},
        }
    result["peak_rss_mb"] = _peak_rss_mb()
    result["gpu_peak_mb"] = _gpu_peak_mb(result["device"])
    return result


def _measure_in_subprocess(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    spec_path = tmp / "spec.json"
    result_path = tmp / "result.json"
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "resonate.bench", "--one", str(spec_path), "--result", str(result_path)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not result_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:300]}
    return json.loads(result_path.read_text())


# ---------------------------------------------------------------------------------------------
# The command


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--durations", default="10,60,600",
                        help="audio lengths in seconds, comma-separated (default 10,60,600)")
    parser.add_argument("--stages", default=",".join(DEFAULT_ROWS),
                        help=f"rows to measure, comma-separated, from: {', '.join(ROWS)} "
                             "(chain = everything but separation, full = all five stages, "
                             "demucs = apply_model on the whole file, io = reading/metering/writing only)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--input", metavar="FILE", help="use the first N seconds of this file instead of generated material")
    parser.add_argument("--models-dir", help="folder with real Demucs weights (default: random-weight htdemucs)")
    parser.add_argument("--restore-weights", help="restore model weights (default: the shipped model, else random weights)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per measurement; the fastest is reported")
    parser.add_argument("--json", metavar="FILE", help="also write all rows and the scaling check as JSON")
    parser.add_argument("--work-dir", help="folder for material and temporary files (default: system temp)")


def _parse_durations(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ResonateError(f"--durations must be numbers in seconds, e.g. 10,60,600 (got '{text}')") from None
    if not values or any(v <= 0 for v in values):
        raise ResonateError("--durations must be positive numbers of seconds")
    return sorted(set(values))


def _parse_rows(text: str) -> list[str]:
    rows = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        raise ResonateError(f"unknown bench row '{bad[0] if bad else text}' (choose from {', '.join(ROWS)})")
    return [r for r in ROWS if r in rows]


def scaling_check(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row: cost per audio-second and peak RSS at the shortest vs the longest duration.

    Linear time means the cost per audio-second does not rise with length (fixed start-up costs
    make short runs dearer per second, never cheaper); flat memory means peak RSS does not grow.
    """
    out = []
    names = dict.fromkeys(r["row"] for r in rows)
    for name in names:
        ok = sorted((r for r in rows if r["row"] == name and r.get("rtf") is not None), key=lambda r: r["audio_seconds"])
        if len(ok) < 2:
            continue
        short, long = ok[0], ok[-1]
        cost_ratio = long["rtf"] / short["rtf"] if short["rtf"] else None
        rss_growth = long["peak_rss_mb"] - short["peak_rss_mb"]
        out.append({
            "row": name, "short_seconds": short["audio_seconds"], "long_seconds": long["audio_seconds"],
            "rtf_short": short["rtf"], "rtf_long": long["rtf"],
            "cost_ratio": round(cost_ratio, 3) if cost_ratio is not None else None,
            "rss_short_mb": round(short["peak_rss_mb"], 1), "rss_long_mb": round(long["peak_rss_mb"], 1),
            "rss_growth_mb": round(rss_growth, 1),
            # 15 % slack for timing noise; 64 MB slack for allocator and page-cache noise.
            "linear_time": cost_ratio is not None and cost_ratio <= 1.15,
            "flat_memory": rss_growth <= 64.0,
        })
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ["row", "audio s", "seconds", "RTF", "job CPU s", "peak RSS MB", "GPU MB", "device", "note"]
    lines = [head]
    for r in rows:
        if r.get("error"):
            lines.append([r["row"], f"{r['audio_seconds']:g}", "-", "-", "-", "-", "-", "-", f"failed: {r['error']}"])
            continue
        gpu = "-" if r.get("gpu_peak_mb") is None else f"{r['gpu_peak_mb']:.0f}"
        cpu = "-" if r.get("cpu_seconds") is None else f"{r['cpu_seconds']:.2f}"
        lines.append([r["row"], f"{r['audio_seconds']:g}", f"{r['seconds']:.2f}", f"{r['rtf']:.4f}", cpu,
                      f"{r['peak_rss_mb']:.0f}", gpu, r["device"], r.get("note", "")])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def format_scaling(checks: list[dict[str, Any]]) -> str:
    lines = []
    for c in checks:
        lines.append(
            f"{c['row']:<9} RTF {c['rtf_short']:.4f} at {c['short_seconds']:g} s -> {c['rtf_long']:.4f} at "
            f"{c['long_seconds']:g} s (x{c['cost_ratio']}, {'linear' if c['linear_time'] else 'NOT linear'}); "
            f"peak RSS {c['rss_short_mb']:.0f} -> {c['rss_long_mb']:.0f} MB "
            f"({c['rss_growth_mb']:+.0f} MB, {'flat' if c['flat_memory'] else 'GROWS'})")
    return "\n".join(lines)


def _row_note(name: str, spec: dict[str, Any], result: dict[str, Any], random_models: dict[str, bool]) -> str:
    notes = [ROW_NOTES[name]] if name in ROW_NOTES else []
    uses = ROWS[name]
    if "separate" in uses and random_models["separate"]:
        notes.append("htdemucs random weights")
    if "restore" in uses and random_models["restore"]:
        notes.append("restore random weights")
    if result.get("unavailable"):
        notes.append(f"skipped {result['unavailable']}")
    return ", ".join(notes)


def run_bench(args) -> int:
    from tqdm import tqdm

    from resonate.device import pick_device
    from resonate.models.io import DEFAULT_WEIGHTS

    durations = _parse_durations(args.durations)
    row_names = _parse_rows(args.stages)
    device = str(pick_device(args.device))
    repeats = max(1, int(args.repeats))
    if args.input and not Path(args.input).is_file():
        raise ResonateError(f"input file not found: {args.input}")
    if args.work_dir and not Path(args.work_dir).is_dir():
        raise ResonateError(f"--work-dir {args.work_dir} is not a folder")

    with tempfile.TemporaryDirectory(prefix="resonate-bench-", dir=args.work_dir) as tmp_name:
        tmp = Path(tmp_name)
        random_models = {"separate": False, "restore": False}
        models_dir = args.models_dir
        if any("separate" in ROWS[r] for r in row_names) and not models_dir:
            models_dir = str(random_htdemucs_repo(tmp / "demucs"))
            random_models["separate"] = True
        restore_weights = args.restore_weights
        if any("restore" in ROWS[r] for r in row_names) and not restore_weights and not DEFAULT_WEIGHTS.exists():
            restore_weights = str(random_restore_weights(tmp))
            random_models["restore"] = True

        results: list[dict[str, Any]] = []
        bar = tqdm(total=len(durations) * len(row_names) * repeats, desc="bench", unit="run", file=sys.stderr,
                   disable=None)
        for seconds in durations:
            material = tmp / f"material_{seconds:g}s.wav"
            if args.input:
                audio_seconds = cut_input(Path(args.input), material, seconds)
            else:
                make_material(material, seconds)
                audio_seconds = seconds
            for name in row_names:
                best: dict[str, Any] | None = None
                for _ in range(repeats):
                    bar.set_postfix_str(f"{name} {seconds:g} s")
                    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
                    spec = {"row": name, "input": str(material), "output": str(run_dir / "out.wav"),
                            "device": device, "models_dir": models_dir, "restore_weights": restore_weights,
                            "cache_dir": str(run_dir / "cache"), "work_dir": str(run_dir)}
                    result = _measure_in_subprocess(spec, run_dir)
                    bar.update(1)
                    if best is None or ("error" not in result and ("error" in best or result["seconds"] < best["seconds"])):
                        best = result
                row = {"row": name, "audio_seconds": round(audio_seconds, 3), **best}
                if "error" not in best:
                    row["rtf"] = round(best["seconds"] / audio_seconds, 5)
                    row["note"] = _row_note(name, spec, best, random_models)
                    row["peak_rss_mb"] = round(best["peak_rss_mb"], 1)
                results.append(row)
        bar.close()

    checks = scaling_check([r for r in results if "error" not in r])
    print(format_table(results))
    if checks:
        print("\nScaling (shortest vs longest duration):")
        print(format_scaling(checks))
    if args.json:
        from resonate.audio.io import write_text_atomic

        write_text_atomic(args.json, json.dumps({
            "device": device, "cpu_count": os.cpu_count(), "repeats": repeats,
            "random_weights": random_models, "rows": results, "scaling": checks,
        }, indent=2))
    return 1 if any("error" in r for r in results) else 0


def _main_one(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m resonate.bench", description="one bench measurement (internal)")
    p.add_argument("--one", required=True, metavar="SPEC.json")
    p.add_argument("--result", required=True, metavar="RESULT.json")
    a = p.parse_args(argv)
    result = run_one(json.loads(Path(a.one).read_text()))
    Path(a.result).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main_one(sys.argv[1:]))
