"""Benchmark of the match stage: concert-like recordings with a different stretch of the same
track as the studio reference, scored against the clean target side by side.

    nice -n 5 .venv/bin/python scripts/bench_match.py --clips 24 [--work-dir data/bench_match] [--json FILE]
    nice -n 5 .venv/bin/python scripts/bench_match.py --memory 60 [--memory-restore]   # peak RSS, long show

Clips: ``--seconds`` (10) of a development track (``dev_tracks`` of configs/restore_data_v3.yaml,
never seen by the restore model in training) through ``concert_recording``: PA, one of the
development venues (``dev_rooms``), a crowd from the development voices, a phone and a codec
(each step with the probability the v3 development set uses). The reference is ``--ref-seconds``
(30) of the same track that do not overlap the clip (5 s apart at least), written as a FLAC file.

Scored, against the clip's target (the music through the venue's first 50 ms, at its level in
the recording): the input; Resonate without a reference (preset concert, separation bypassed);
Resonate with the reference; the match stage alone (restore bypassed, for diagnosis); matchering
2.0.6 (``pip install -r requirements-bench.txt``). SI-SDR (dB) and log-spectral distance (dB,
``resonate.train.metrics``, after scaling each output by its least-squares gain onto the target,
so that the loudness each tool aims at does not count). Per clip and mean; clips worse than the
input (SI-SDR lower, or LSD higher).

``--memory MINUTES``: writes a synthetic show of that length (music-like tones and noise) and
runs the chain (separation bypassed; restore too unless ``--memory-restore``) with and without a
reference, each in its own process; prints peak RSS (ru_maxrss of the child) and time.
Requires the shared data (../shared/data) for the clips, not for ``--memory``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SR = 44100
VARIANTS = ("input", "resonate", "resonate+ref", "match only", "matchering")


# ---------------------------------------------------------------------------------------------
# The test set


def dev_sets(shared: Path, config: Path) -> tuple[list[Path], list[Path]]:
    from resonate.train.build_v3 import MUSIC_TYPES, _split_files

    cfg = yaml.safe_load(config.read_text())
    music = sorted(p for p in (shared / "music").rglob("*") if p.suffix.lower() in MUSIC_TYPES)
    rooms = sorted(p for p in (shared / "rirs").glob("*") if p.suffix.lower() in (".wav", ".flac"))
    return _split_files(music, tuple(cfg["dev_tracks"]))[1], _split_files(rooms, tuple(cfg["dev_rooms"]))[1]


def loud_start(rng: np.random.Generator, track: np.ndarray, n: int, avoid: tuple[int, int] | None = None) -> int | None:
    """A start for an n-sample stretch that is not near-silent and keeps 5 s away from ``avoid``."""
    gap = 5 * SR
    for _ in range(200):
        if track.shape[-1] <= n:
            return None
        start = int(rng.integers(0, track.shape[-1] - n))
        if avoid is not None and start < avoid[1] + gap and start + n > avoid[0] - gap:
            continue
        if np.sqrt(np.mean(track[:, start: start + n] ** 2)) > 0.03:
            return start
    return None


def build_clips(args) -> list[dict]:
    """Writes clip{i}_in.wav, _target.wav, _ref.flac under the work folder (once) and returns their list."""
    from resonate.train import crowd, rooms
    from resonate.train.build import load_music
    from resonate.train.concert import STEPS, concert_recording

    out = args.work_dir / "clips"
    out.mkdir(parents=True, exist_ok=True)
    listing = out / "clips.json"
    if listing.exists():
        clips = json.loads(listing.read_text())
        if len(clips) >= args.clips and clips[0].get("seconds") == args.seconds and clips[0].get("seed") == args.seed:
            return clips[: args.clips]
    tracks, venues = dev_sets(args.shared, args.config)
    voices = crowd.render_babble_bank(ROOT / "data/cache/voices", 60, 20261201, SR)
    bank = crowd.load_bank(voices[48:])                    # the development voices
    applause_path = next(iter(sorted((args.shared / "crowd").glob("*.wav"))), None)
    real_applause = load_music(applause_path, SR) if applause_path else None
    rirs = [rooms.load_measured_rir(p, SR) for p in venues]
    n, n_ref = int(args.seconds * SR), int(args.ref_seconds * SR)
    clips, i, attempt = [], 0, 0
    cache: dict[Path, np.ndarray] = {}
    while len(clips) < args.clips and attempt < 10 * args.clips:
        rng = np.random.default_rng([20261201, 18, args.seed, attempt])
        path = tracks[attempt % len(tracks)]
        attempt += 1
        track = cache.setdefault(path, load_music(path, SR))
        start = loud_start(rng, track, n)
        ref_start = loud_start(rng, track, n_ref, (start, start + n)) if start is not None else None
        if ref_start is None:
            continue
        steps = tuple(s for s, p in zip(STEPS, (0.85, 0.95, 0.9, 0.8, 0.7)) if rng.random() < p) or ("room",)
        clean = track[:, start: start + n]
        room = int(rng.integers(len(rirs)))
        bed = np.zeros_like(clean)
        if "crowd" in steps:
            bed, _ = crowd.concert_crowd(rng, n, SR, bank, clean, crowd.CROWD_KINDS, real_applause)
        rec = concert_recording(clean, SR, rng, rirs[room], bed, steps)
        name = f"clip{i:02d}"
        sf.write(out / f"{name}_in.wav", rec.recording.T, SR, subtype="FLOAT")
        sf.write(out / f"{name}_target.wav", rec.target.T, SR, subtype="FLOAT")
        sf.write(out / f"{name}_ref.flac", track[:, ref_start: ref_start + n_ref].T, SR, subtype="PCM_16")
        clips.append({"name": name, "track": path.stem, "venue": venues[room].stem, "steps": list(steps),
                      "seconds": args.seconds, "seed": args.seed, **{k: v for k, v in rec.params.items() if k != "steps"}})
        i += 1
    listing.write_text(json.dumps(clips, indent=1))
    return clips


# ---------------------------------------------------------------------------------------------
# Scoring


def score(estimate: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    from resonate.train.metrics import log_spectral_distance, si_sdr

    return si_sdr(estimate, target), log_spectral_distance(estimate, target, SR)   # level-aligned


def read(path: Path) -> np.ndarray:
    x, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return x.T


def run_variants(clips: list[dict], args) -> list[dict]:
    from resonate.pipeline import ChainSettings, JobEnvironment, process_file

    env = JobEnvironment(device="cpu", work_dir=args.work_dir)
    folder = args.work_dir / "clips"
    outs = args.work_dir / "out"
    outs.mkdir(exist_ok=True)
    overrides = json.loads(args.set) if args.set else {}
    rows = []
    for clip in clips:
        name = clip["name"]
        src, ref = folder / f"{name}_in.wav", folder / f"{name}_ref.flac"
        target = read(folder / f"{name}_target.wav")
        outputs = {"input": src}
        with_ref = {**overrides, "match": {**overrides.get("match", {}), "references": [str(ref)]}}
        runs = {"resonate": ChainSettings(args.preset, overrides, skip=("separate",)),
                "resonate+ref": ChainSettings(args.preset, with_ref, skip=("separate",)),
                "match only": ChainSettings(args.preset, with_ref, skip=("separate", "restore"))}
        seconds = {}
        for variant, settings in runs.items():
            dst = outs / f"{name}_{variant.replace('+', '_').replace(' ', '_')}.wav"
            t0 = time.perf_counter()
            report = process_file(src, dst, settings, env=env)
            seconds[variant] = time.perf_counter() - t0
            outputs[variant] = dst
            if variant == "resonate+ref":
                match = next(s for s in report["stages"] if s["name"] == "match")
                clip["max_boost_db"], clip["max_cut_db"] = match.get("max_boost_db"), match.get("max_cut_db")
        if not args.no_matchering:
            import matchering as mg

            dst = outs / f"{name}_matchering.wav"
            t0 = time.perf_counter()
            mg.log(lambda *_: None)
            mg.process(target=str(src), reference=str(ref), results=[mg.pcm24(str(dst))])
            seconds["matchering"] = time.perf_counter() - t0
            outputs["matchering"] = dst
        row = {**clip, "seconds_per_run": {k: round(v, 2) for k, v in seconds.items()}}
        for variant, path in outputs.items():
            sdr, lsd = score(read(path), target)
            row[variant] = {"si_sdr": round(sdr, 3), "lsd": round(lsd, 3)}
        rows.append(row)
        print(f"{name} {clip['track'][:28]:28s} " + "  ".join(
            f"{v}: {row[v]['si_sdr']:+6.2f}/{row[v]['lsd']:5.2f}" for v in VARIANTS if v in row), flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    variants = [v for v in VARIANTS if v in rows[0]]
    out = {}
    for v in variants:
        gains = [r[v]["si_sdr"] - r["input"]["si_sdr"] for r in rows]
        lsd_drop = [r["input"]["lsd"] - r[v]["lsd"] for r in rows]
        out[v] = {"si_sdr": round(float(np.mean([r[v]["si_sdr"] for r in rows])), 3),
                  "si_sdr_gain": round(float(np.mean(gains)), 3),
                  "lsd": round(float(np.mean([r[v]["lsd"] for r in rows])), 3),
                  "lsd_lower_by": round(float(np.mean(lsd_drop)), 3),
                  "worse_si_sdr": int(sum(g < 0 for g in gains)),
                  "worse_lsd": int(sum(d < 0 for d in lsd_drop))}
    return out


def print_summary(table: dict, n: int) -> None:
    print(f"\nmean over {n} clips      SI-SDR   gain    LSD   lower by   worse than input (SI-SDR / LSD)")
    for v, s in table.items():
        print(f"{v:16s}      {s['si_sdr']:+6.2f} {s['si_sdr_gain']:+6.2f}  {s['lsd']:6.2f}  {s['lsd_lower_by']:+6.2f}"
              f"      {s['worse_si_sdr']} / {s['worse_lsd']}")


# ---------------------------------------------------------------------------------------------
# Memory on a long show


def write_show(path: Path, minutes: float, seed: int = 0) -> None:
    """Tones with a slow swell and a noise bed, in 10-s pieces (never the whole show in memory)."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", SR, 2, "PCM_16") as f:
        for start in range(0, int(minutes * 60 * SR), 10 * SR):
            t = (start + np.arange(10 * SR)) / SR
            swell = 0.6 + 0.4 * np.sin(2 * np.pi * 0.1 * t)
            x = swell * (0.15 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 1760 * t))
            x = x + 0.03 * rng.standard_normal((2, t.size))
            f.write(x.T.astype(np.float32))


def memory_child(args) -> None:
    """In a child process: one job, then its figures as a JSON line."""
    import torch

    from resonate.pipeline import ChainSettings, JobEnvironment, process_file

    torch.set_num_threads(1)
    skip = ("separate",) if args.memory_restore else ("separate", "restore")
    overrides = {"match": {"references": [str(args.child_reference)]}} if args.child_reference else {}
    t0 = time.perf_counter()
    process_file(args.child_input, args.child_output, ChainSettings(overrides=overrides, skip=skip),
                 env=JobEnvironment(device="cpu", work_dir=args.work_dir))
    print(json.dumps({"seconds": time.perf_counter() - t0,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory(args) -> list[dict]:
    folder = args.work_dir / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    show = folder / f"show_{args.memory:g}min.wav"
    if not show.exists():
        write_show(show, args.memory)
    ref = folder / "studio.flac"
    if not ref.exists():
        write_show(ref, 4.0, seed=1)
    results = []
    for reference in (None, ref):
        out = folder / "out.wav"
        cmd = [sys.executable, __file__, "--work-dir", str(args.work_dir), "--child-input", str(show),
               "--child-output", str(out)] + (["--child-reference", str(reference)] if reference else [])
        cmd += ["--memory-restore"] if args.memory_restore else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures.update(minutes=args.memory, reference=reference is not None, restore=args.memory_restore)
        results.append(figures)
        out.unlink(missing_ok=True)
        print(f"{args.memory:g} min, {'with' if reference else 'without'} a reference"
              f"{' (restore on)' if args.memory_restore else ''}: peak RSS {figures['peak_rss_mb']:.0f} MB, "
              f"{figures['seconds']:.0f} s (RTF {figures['seconds'] / (args.memory * 60):.4f})", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--ref-seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0, help="which clips (the figures in docs/matching.md: 0)")
    p.add_argument("--preset", default="concert")
    p.add_argument("--set", help="JSON overrides for every Resonate run, e.g. '{\"match\": {\"strength\": 0.8}}'")
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "restore_data_v3.yaml")
    p.add_argument("--work-dir", type=Path, default=ROOT / "data" / "bench_match")
    p.add_argument("--json", type=Path, help="write per-clip rows and the summary here")
    p.add_argument("--no-matchering", action="store_true")
    p.add_argument("--memory", type=float, metavar="MINUTES", help="peak RSS of a long show, with and without a reference")
    p.add_argument("--memory-restore", action="store_true", help="with --memory: keep the restore stage on")
    p.add_argument("--child-input", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-reference", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.child_input:
        memory_child(args)
        return
    if args.memory:
        results = memory(args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    import torch

    torch.set_num_threads(1)
    clips = build_clips(args)
    rows = run_variants(clips, args)
    table = summary(rows)
    print_summary(table, len(rows))
    if args.json:
        args.json.write_text(json.dumps({"clips": rows, "summary": table}, indent=1))


if __name__ == "__main__":
    main()
