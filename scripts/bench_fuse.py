"""Benchmark of the fusion of several recordings of one show (issue 15), on realistic multi-phone
shows built from ../shared/data (read only; nothing from it, nor audio made from it, is kept:
the shows are written to a temporary folder that is removed at the end).

Per show: one music track through one PA (the same for every phone), a measured venue response
(OpenAIR / IR library, ``rooms.load_measured_rir``) made different per position by distinct early
reflections and an independent late tail with the measured decay, an independent crowd per phone
(``crowd.concert_crowd``, espeak-ng babble where installed), the phone chain of the v3 concert pairs
(mic band limits, mono, AGC, limiter, clipping, MP3/AAC), a start offset up to 60 s and a clock
drift up to +-300 ppm (recording 0 is the clock of reference).

Prints, per show and on average: alignment error at both ends of each overlap (ms), SI-SDR against
the dry music of every recording alone and restored alone, of the fusion of 2 and 3 recordings in
each mode, raw and restored (denoise + restore, the chain's restoration stages), and peak RSS.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_fuse.py --shows 3 --seconds 90
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resonate.fuse import FUSION_MODES, FuseConfig, fuse_files, time_map_from_report  # noqa: E402
from resonate.train import crowd, rooms  # noqa: E402
from resonate.train.build import load_music  # noqa: E402
from resonate.train.concert import concert_recording, pa_system  # noqa: E402
from resonate.train.metrics import si_sdr  # noqa: E402

SR = 44100
MUSIC_TYPES = (".mp3", ".ogg", ".wav", ".flac")


def position_rir(rir: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """The venue's measured response as heard from another place: its direct sound, new early
    reflections (3-40 ms), and a late tail with the measured decay but independent fine structure."""
    direct_end = int(0.003 * sr)
    out = np.zeros_like(rir, dtype=np.float64)
    out[:, :direct_end] = rir[:, :direct_end]
    for _ in range(int(rng.integers(4, 9))):
        d = int(rng.uniform(0.003, 0.04) * sr)
        if d + direct_end < out.shape[1]:
            out[:, d: d + direct_end] += rng.uniform(-0.5, 0.5) * rir[:, :direct_end]
    late = int(0.05 * sr)
    if rir.shape[1] > late:
        env = signal.lfilter([0.01], [1, -0.99], rir[0, late:].astype(np.float64) ** 2)
        noise = rng.standard_normal((rir.shape[0], rir.shape[1] - late))
        tilt = signal.sosfilt(signal.butter(1, 4000, "lowpass", fs=sr, output="sos"), noise, axis=-1)
        tilt *= np.sqrt(np.mean(noise ** 2) / np.mean(tilt ** 2))
        out[:, late:] += np.sqrt(np.maximum(env, 0.0)) * tilt
    return (out / np.abs(out).max()).astype(np.float32)


def clock(x: np.ndarray, drift: float, n: int) -> np.ndarray:
    """Sample m of the phone's file at true sample m (1 + drift)."""
    y = x if drift == 0 else soxr.resample(np.ascontiguousarray(x.T), SR, SR / (1 + drift), quality="VHQ").T
    y = y[:, :n]
    return np.pad(y, ((0, 0), (0, n - y.shape[1])))


def build_show(rng, music_paths, rir_paths, bank, applause, seconds, count):
    need = seconds + 66
    for _ in range(60):
        path = music_paths[int(rng.integers(len(music_paths)))]
        music = load_music(path, SR)
        if music.shape[1] < need * SR:
            continue
        a = int(rng.integers(0, music.shape[1] - need * SR + 1))
        dry = music[:, a: a + need * SR].astype(np.float64)
        # Music all along: no second quieter than 30 dB under the stretch's loudest.
        level = 10 * np.log10(np.mean(dry[:, : need * SR].reshape(2, need, SR) ** 2, axis=(0, 2)) + 1e-12)
        if level.min() > level.max() - 30:
            break
    else:
        raise SystemExit("no music track has a long enough stretch without silence for --seconds")
    pa = pa_system(dry, SR, rng)                         # one PA for every phone
    rir_path = rir_paths[int(rng.integers(len(rir_paths)))]
    venue = rooms.load_measured_rir(rir_path, SR)
    starts = [0.0] + [float(rng.uniform(0, 60)) for _ in range(count - 1)]
    drifts = [0.0] + [float(rng.uniform(-300, 300)) * 1e-6 for _ in range(count - 1)]
    takes = []
    for k in range(count):
        s0 = int(round(starts[k] * SR))
        span = int(seconds * (1 + 4e-4) * SR) + SR
        seg_pa, seg_dry = pa[:, s0: s0 + span], dry[:, s0: s0 + span]
        kinds = crowd.CROWD_KINDS if bank else tuple(k for k in crowd.CROWD_KINDS if k != "chatter")
        bed, used_kinds = crowd.concert_crowd(rng, seg_pa.shape[1], SR, bank, seg_dry, kinds, applause)
        rec = concert_recording(seg_pa, SR, rng, position_rir(venue, rng, SR), bed,
                                steps=("room", "crowd", "phone", "codec"))
        n = int(seconds * SR)
        audio = clock(rec.recording, drifts[k], n)
        clean = clock(seg_dry, drifts[k], n)
        if rec.params.get("mono"):
            clean = np.repeat(clean.mean(axis=0, keepdims=True), 2, axis=0)
        takes.append({"audio": audio.astype(np.float32), "clean": clean.astype(np.float32),
                      "start_s": s0 / SR, "drift": drifts[k], "params": {**rec.params, "crowd": used_kinds}})
    return {"music": path.name, "venue": rir_path.name, "dry": dry.astype(np.float32), "takes": takes}


def true_rec_time(ref, take, t):
    return (ref["start_s"] + t * (1 + ref["drift"]) - take["start_s"]) / (1 + take["drift"])


def span_of(takes, idx, seconds):
    """True-time span every recording of ``idx`` covers (a margin of 1 s)."""
    lo = max(takes[i]["start_s"] for i in idx) + 1.0
    hi = min(takes[i]["start_s"] + seconds * (1 + takes[i]["drift"]) for i in idx) - 1.0
    return lo, hi


def score_take(audio, take, lo, hi):
    a = int(round((lo - take["start_s"]) / (1 + take["drift"]) * SR))
    b = a + int((hi - lo) * SR)
    return si_sdr(audio[:, a:b], take["clean"][:, a:b])


def dry_on_clock(dry: np.ndarray, start_s: float, drift: float, n: int) -> np.ndarray:
    """The dry music as a phone with this clock would hold it: sample m at true time
    start_s + m (1 + drift) / SR (fractional start by a phase ramp)."""
    i = int(np.floor(start_s * SR)) - SR // 2
    seg = dry[:, max(0, i): i + int(n * (1 + abs(drift)) + 2 * SR)]
    seg = np.pad(seg, ((0, 0), (max(0, -i), 0)))
    frac = start_s * SR - i          # samples to advance
    spec = np.fft.rfft(seg, axis=-1) * np.exp(2j * np.pi * np.fft.rfftfreq(seg.shape[-1]) * frac)
    seg = np.fft.irfft(spec, seg.shape[-1], axis=-1)
    return clock(seg, drift, n)


def score_fused(y, report, show, lo, hi):
    """The fused timeline is the reference recording's clock, from timeline_start on it."""
    ref = show["takes"][int(report["reference"][3])]
    t0 = ref["start_s"] + report["timeline_start_in_reference_s"] * (1 + ref["drift"])
    a = int(round((lo - t0) / (1 + ref["drift"]) * SR))
    b = a + int((hi - lo) * SR)
    clean = dry_on_clock(show["dry"], lo, ref["drift"], b - a)
    return si_sdr(y[:, a:b], clean)


def restore(src: Path, dst: Path) -> np.ndarray:
    from resonate.pipeline import ChainSettings, OutputOptions, process_file
    from resonate.stages import STAGE_ORDER

    # The restoration stages only, whatever other stages the chain has (match, extend, ...).
    skip = tuple(s for s in STAGE_ORDER if s not in ("denoise", "restore"))
    process_file(src, dst, ChainSettings(skip=skip), OutputOptions(bit_depth="32f"))
    return sf.read(dst, dtype="float32", always_2d=True)[0].T


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--shows", type=int, default=3)
    p.add_argument("--seconds", type=int, default=90)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--modes", default=",".join(FUSION_MODES))
    p.add_argument("--no-restore", action="store_true", help="skip the restoration runs")
    p.add_argument("--json", help="write the per-show figures here")
    args = p.parse_args(argv)
    shared = Path(args.shared)
    # Not the digitised 78s (phonograph_*): their surface noise is most of their signal.
    music_paths = sorted(q for q in (shared / "music").rglob("*") if q.suffix.lower() in MUSIC_TYPES
                         and "phonograph" not in str(q.relative_to(shared)))
    rir_paths = sorted(q for q in (shared / "rirs").glob("*.wav"))
    rng = np.random.default_rng(args.seed)
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-fuse-"))
    results = []
    try:
        bank = []
        if shutil.which("espeak-ng"):
            bank = crowd.load_bank(crowd.render_babble_bank(work / "voices", 24, args.seed, SR))
        applause_files = sorted((shared / "crowd").glob("*.wav"))
        applause = load_music(applause_files[0], SR) if applause_files else None
        for s in range(args.shows):
            t_build = time.perf_counter()
            show = build_show(rng, music_paths, rir_paths, bank, applause, args.seconds, 3)
            takes = show["takes"]
            paths = []
            for k, tk in enumerate(takes):
                paths.append(work / f"rec{k}.wav")
                sf.write(paths[-1], tk["audio"].T, SR, subtype="FLOAT")
            row = {"show": s, "music": show["music"], "venue": show["venue"],
                   "starts_s": [round(t["start_s"], 3) for t in takes],
                   "drift_ppm": [round(t["drift"] * 1e6, 1) for t in takes],
                   "phones": [t["params"] for t in takes], "build_s": round(time.perf_counter() - t_build, 1)}
            print(f"show {s}: {show['music']} in {show['venue']}, starts {row['starts_s']} s, "
                  f"drift {row['drift_ppm']} ppm", flush=True)
            for count in (2, 3):
                idx = list(range(count))
                lo, hi = span_of(takes, idx, args.seconds)
                singles = {k: score_take(takes[k]["audio"], takes[k], lo, hi) for k in idx}
                row[f"single_{count}"] = singles
                reports = {}
                for mode in modes:
                    out = work / f"fused{count}_{mode}.wav"
                    t0 = time.perf_counter()
                    report = reports[mode] = fuse_files(paths[:count], out, FuseConfig(mode=mode))
                    took = time.perf_counter() - t0
                    y = sf.read(out, dtype="float32", always_2d=True)[0].T
                    row[f"fused_{count}_{mode}"] = score_fused(y, report, show, lo, hi)
                    row[f"fuse_seconds_{count}_{mode}"] = round(took, 2)
                    if mode == modes[0]:
                        errs = []
                        ref = takes[int(report["reference"][3])]
                        for r in report["recordings"]:
                            if not r["used"] or r["reference"]:
                                continue
                            k = int(r["name"][3])
                            tm = time_map_from_report(r)
                            a_ = max(0.0, true_rec_time(takes[k], ref, 0.0))
                            b_ = min(args.seconds, true_rec_time(takes[k], ref, args.seconds))
                            errs.append([round((float(tm(t)) - true_rec_time(ref, takes[k], t)) * 1e3, 4)
                                         for t in (a_, b_)])
                        row[f"align_err_ms_{count}"] = errs
                        row[f"rejected_{count}"] = [r["path"] for r in report["rejected"]]
                line = "  ".join(f"{m} {row[f'fused_{count}_{m}']:+.2f}" for m in modes)
                print(f"  {count} recordings: single " + " ".join(f"{v:+.2f}" for v in singles.values())
                      + f" | fused {line} | align err ms {row[f'align_err_ms_{count}']}", flush=True)
                if not args.no_restore:
                    rs = {k: score_take(restore(paths[k], work / f"r{k}.wav"), takes[k], lo, hi) for k in idx}
                    row[f"single_restored_{count}"] = rs
                    for mode in modes[:1]:
                        y = restore(work / f"fused{count}_{mode}.wav", work / "rf.wav")
                        row[f"fused_restored_{count}_{mode}"] = score_fused(y, reports[mode], show, lo, hi)
                    print(f"  {count} restored: best single {max(rs.values()):+.2f}, fused ({modes[0]}) "
                          f"{row[f'fused_restored_{count}_{modes[0]}']:+.2f}", flush=True)
            results.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\nmean over shows (SI-SDR dB against the dry music, over the span all fused recordings cover)")
    for count in (2, 3):
        best = np.mean([max(r[f"single_{count}"].values()) for r in results])
        print(f"  {count} recordings: best single {best:+.2f}", end="")
        for m in modes:
            v = np.mean([r[f"fused_{count}_{m}"] for r in results])
            print(f" | {m} {v:+.2f} ({v - best:+.2f})", end="")
        print()
        if not args.no_restore:
            bs = np.mean([max(r[f"single_restored_{count}"].values()) for r in results])
            fr = np.mean([r[f"fused_restored_{count}_{modes[0]}"] for r in results])
            print(f"  {count} restored: best single restored {bs:+.2f} | fused-then-restored ({modes[0]}) "
                  f"{fr:+.2f} ({fr - bs:+.2f})")
    errs = [abs(e) for r in results for c in (2, 3) for pair in r[f"align_err_ms_{c}"] for e in pair]
    print(f"alignment error at the ends of the overlaps: max {max(errs):.4f} ms, median {np.median(errs):.4f} ms")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
