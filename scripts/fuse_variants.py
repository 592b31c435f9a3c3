"""Raw fusion variants on the realistic shows of scripts/bench_fuse.py, built once and kept.

    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python scripts/fuse_variants.py build
    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python scripts/fuse_variants.py score "{'mode': 'quiet'}" --counts 3

``build`` makes the bench's shows (same seed, same shows as ``bench_fuse.py --seed 5``) and keeps
them in data/fuse_variants/ (ignored by git; made from ../shared/data, so never committed).
``score`` fuses each show's first 2 and/or 3 recordings with the FuseConfig fields given (a Python
dict) and prints, per show and on average, the fused SI-SDR less the best single recording's, raw
(no restoration; for that, run bench_fuse.py). Each run writes its own temporary files, so several
variants can run side by side.
"""

from __future__ import annotations

import argparse
import ast
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import bench_fuse as bench  # noqa: E402

from resonate.fuse import FuseConfig, fuse_files  # noqa: E402
from resonate.train import crowd  # noqa: E402
from resonate.train.build import load_music  # noqa: E402

CACHE = ROOT / "data" / "fuse_variants"


def build(shows: int, seconds: int, seed: int, shared: Path) -> None:
    music_paths = sorted(q for q in (shared / "music").rglob("*") if q.suffix.lower() in bench.MUSIC_TYPES
                         and "phonograph" not in str(q.relative_to(shared)))
    rir_paths = sorted((shared / "rirs").glob("*.wav"))
    rng = np.random.default_rng(seed)
    bank = (crowd.load_bank(crowd.render_babble_bank(CACHE / "voices", 24, seed, bench.SR))
            if shutil.which("espeak-ng") else [])
    applause_files = sorted((shared / "crowd").glob("*.wav"))
    applause = load_music(applause_files[0], bench.SR) if applause_files else None
    for s in range(shows):
        show = bench.build_show(rng, music_paths, rir_paths, bank, applause, seconds, 3)
        folder = CACHE / f"show{s}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, take in enumerate(show["takes"]):
            sf.write(folder / f"rec{k}.wav", take["audio"].T, bench.SR, subtype="FLOAT")
        with open(folder / "show.pkl", "wb") as f:
            pickle.dump({**show, "seconds": seconds}, f)
        print(f"show {s}: {show['music']} in {show['venue']}", flush=True)


def score(cfg: FuseConfig, counts: list[int], only: list[int] | None = None, restore: bool = False,
          restore_first: bool = False) -> None:
    shows = [p for p in sorted(CACHE.glob("show*/show.pkl")) if only is None or int(p.parent.name[4:]) in only]
    if not shows:
        raise SystemExit("no shows: run 'build' first")
    gains: dict[int, list[float]] = {c: [] for c in counts}
    work = Path(tempfile.mkdtemp(prefix=f"fuse-variants-{os.getpid()}-"))
    try:
        for pkl in shows:
            with open(pkl, "rb") as f:
                show = pickle.load(f)            # our own file, written by build above
            takes, paths = show["takes"], [pkl.parent / f"rec{k}.wav" for k in range(3)]
            for count in counts:
                lo, hi = bench.span_of(takes, list(range(count)), show["seconds"])
                best = max(bench.score_take(takes[k]["audio"], takes[k], lo, hi) for k in range(count))
                out = work / f"{pkl.parent.name}_{count}.wav"
                report = fuse_files(paths[:count], out, cfg)
                fused = bench.score_fused(sf.read(out, dtype="float32", always_2d=True)[0].T, report, show, lo, hi)
                gains[count].append(fused - best)
                print(f"{pkl.parent.name}, {count} recordings: best single {best:+.2f}, fused {fused:+.2f} "
                      f"({fused - best:+.2f})", flush=True)
                if restore:
                    singles = [bench.score_take(bench.restore(paths[k], work / "r.wav"), takes[k], lo, hi)
                               for k in range(count)]
                    restored = bench.score_fused(bench.restore(out, work / "r.wav"), report, show, lo, hi)
                    print(f"{pkl.parent.name}, {count} recordings, restored: best single {max(singles):+.2f}, "
                          f"fused {restored:+.2f} ({restored - max(singles):+.2f})", flush=True)
                if restore_first:
                    # Each recording restored on its own, then the restored recordings fused.
                    (work / "first").mkdir(exist_ok=True)   # same names: the report names its reference recK
                    firsts = [work / "first" / f"rec{k}.wav" for k in range(count)]
                    singles = [bench.score_take(bench.restore(paths[k], firsts[k]), takes[k], lo, hi)
                               for k in range(count)]
                    report_r = fuse_files(firsts, work / "fr.wav", cfg)
                    fused_r = bench.score_fused(sf.read(work / "fr.wav", dtype="float32", always_2d=True)[0].T,
                                                report_r, show, lo, hi)
                    print(f"{pkl.parent.name}, {count} recordings, restored first: best single {max(singles):+.2f}, "
                          f"fused {fused_r:+.2f} ({fused_r - max(singles):+.2f})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for count in counts:
        print(f"{count} recordings: fused - best single " + " ".join(f"{g:+.2f}" for g in gains[count])
              + f" | mean {np.mean(gains[count]):+.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("build", "score"))
    p.add_argument("config", nargs="?", default="{}", help="FuseConfig fields, e.g. \"{'mode': 'quiet'}\"")
    p.add_argument("--counts", default="2,3")
    p.add_argument("--shows", type=int, default=3)
    p.add_argument("--seconds", type=int, default=90)
    p.add_argument("--only", help="score these shows only (e.g. 0,2)")
    p.add_argument("--restore", action="store_true", help="also restore (denoise + restore) singles and fusion")
    p.add_argument("--restore-first", action="store_true",
                   help="also restore each recording alone and fuse the restored recordings")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args(argv)
    if args.action == "build":
        build(args.shows, args.seconds, args.seed, args.shared)
    else:
        score(FuseConfig(**ast.literal_eval(args.config)), [int(c) for c in args.counts.split(",")],
              [int(s) for s in args.only.split(",")] if args.only else None, args.restore, args.restore_first)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
