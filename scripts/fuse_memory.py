"""Peak memory of the fuse step alone on long synthetic shows (issue 15: 3 hours x 3 recordings in 2 GB).

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python scripts/fuse_memory.py 20 60 --work /tmp/fuse-mem

Per length (minutes): writes three 44.1 kHz stereo 16-bit recordings of one generated show (once,
streamed block by block: never a whole recording in memory), the second starting 20 s and the third
45 s into the show, with clocks off by -200 and +150 ppm and an independent noise each; then runs
``python -m resonate fuse`` on them with every chain stage skipped under ``/usr/bin/time -v`` and
prints its peak RSS and CPU time. The show is the tests' synthetic music (tests/fuse_synth.py), a
new stretch every 20 s, so that no two stretches are alike (alignment has one answer).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fuse_synth import synth_music  # noqa: E402

SR = 44100
BLOCK_S = 20
TAKES = ((0.0, 0.0), (20.0, -200.0), (45.0, 150.0))      # (start in the show s, clock drift ppm)


def write_source(path: Path, seconds: float) -> None:
    with sf.SoundFile(str(path), "w", SR, 2, "FLOAT", format="RF64") as f:
        for i in range(int(np.ceil(seconds / BLOCK_S))):
            f.write(synth_music(BLOCK_S, SR, seed=1000 + i).T.astype(np.float32))


def write_take(source: Path, path: Path, start_s: float, drift_ppm: float, seconds: float, seed: int) -> None:
    """Sample m of the take at show time start_s + m (1 + drift) / SR, plus its own noise."""
    rng = np.random.default_rng(seed)
    drift = drift_ppm * 1e-6
    n_out = int(seconds * SR)
    rs = soxr.ResampleStream(SR, SR / (1 + drift), 2, dtype="float32", quality="HQ")
    done = 0
    with sf.SoundFile(str(source)) as src, sf.SoundFile(str(path), "w", SR, 2, "PCM_16") as out:
        src.seek(int(round(start_s * SR)))
        while done < n_out:
            x = src.read(SR * 10, dtype="float32", always_2d=True)
            last = len(x) == 0
            y = rs.resample_chunk(x, last=last)[: n_out - done]
            y = y + 0.05 * rng.standard_normal(y.shape).astype(np.float32)
            out.write(np.clip(y * 0.8, -1, 1))
            done += len(y)
            if last:
                break


def build(folder: Path, minutes: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    seconds = minutes * 60
    paths = [folder / f"L{minutes:g}_{k}.wav" for k in range(len(TAKES))]
    if all(p.exists() for p in paths):
        return paths
    source = folder / f"source{minutes:g}.wav"
    t0 = time.perf_counter()
    write_source(source, seconds + 60)
    for k, (start, ppm) in enumerate(TAKES):
        write_take(source, paths[k], start, ppm, seconds, seed=k)
    source.unlink()
    print(f"built {minutes:g} min x {len(TAKES)} in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def measure(paths: list[Path], folder: Path) -> dict[str, float]:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "resonate", "fuse", *map(str, paths),
           "-o", str(folder / "out.wav"), "--work-dir", str(folder),
           "--skip", "separate", "denoise", "restore", "master", "loudness"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([\d.:]+)", done.stderr).group(1).split(":")[-1])

    (folder / "out.wav").unlink(missing_ok=True)
    return {"peak_rss_kib": field("Maximum resident set size (kbytes)"), "user_s": field("User time (seconds)"),
            "sys_s": field("System time (seconds)")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("minutes", type=float, nargs="+", help="length of each recording, in minutes")
    p.add_argument("--work", type=Path, default=Path("/tmp/fuse-mem"))
    p.add_argument("--keep", action="store_true", help="keep the recordings (else removed after measuring)")
    args = p.parse_args(argv)
    for minutes in args.minutes:
        folder = args.work / f"{minutes:g}min"
        paths = build(folder, minutes)
        m = measure(paths, folder)
        print(f"{minutes:g} min x {len(paths)}: peak RSS {m['peak_rss_kib']:,.0f} KiB "
              f"({m['peak_rss_kib'] / 1024:.0f} MiB), CPU {m['user_s']:.1f} + {m['sys_s']:.1f} s", flush=True)
        if not args.keep:
            for q in paths:
                q.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
