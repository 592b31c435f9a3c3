"""Evaluate bandwidth extension on the held-out development tracks.

    nice -n 5 .venv/bin/python scripts/eval_extend.py [--excerpts 3] [--seconds 12] [--json FILE]

Excerpts of the development tracks (``dev_tracks`` of configs/restore_data_v3.yaml, which the
extension model never trained on) are band-limited two ways: a phone-like low-pass at 8, 11 and
14 kHz (100 Hz low cut, 8th-order Butterworth run forward and backward) and MP3 (LAME) at 64, 96
and 128 kb/s, whose encoder picks its own cutoff. The extend stage detects the cutoff on each;
the regenerated band runs from it to the track's own limit (the sources are lossy: above that
there is no reference). Three fillings of that band are scored against the original excerpt:

- empty: the band-limited input as it is;
- replicate: plain band replication (the octave under the cutoff copied up, unchanged);
- model: the extend stage (replication shaped by the learned envelope).

Log-spectral distance (LSD, dB): STFT (2048-point Hann, hop 512); per frame the RMS over bins of
10 log10((P_ref + eps) / (P_est + eps)), eps = 1e-10 (-100 dB, on a power scale where white noise
of variance s^2 reads s^2); averaged over frames whose reference is not silent. Measured in the
regenerated band, and from 50 Hz to the cutoff (the input's and the output's: the stage must leave
that band alone). The join: the output's level in the 500 Hz above the cutoff minus that in the
500 Hz below, against the same difference in the original. Finally the stage's real-time factor
on a two-minute band-limited excerpt (wall time of the whole stage, detection included).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from resonate.models.extend import BandExtender, load_extend_model  # noqa: E402
from resonate.stages.base import StageContext  # noqa: E402
from resonate.stages.extend import ExtendConfig, ExtendStage  # noqa: E402
from resonate.train.build import load_music  # noqa: E402
from resonate.train.degrade import mp3_roundtrip  # noqa: E402
from resonate.train.extend import (  # noqa: E402
    ExtendTrainConfig,
    phone_lowpass,
    source_limit_hz,
    split_tracks,
    validation_tracks,
)

SR = 44100
LSD_EPS = 1e-10
LOW_FLOOR_EPS = 1e-13       # the same LSD with a floor 30 dB lower (-130 dB), reported beside it
CONDITIONS = [("lowpass", 8000), ("lowpass", 11000), ("lowpass", 14000), ("mp3", 64), ("mp3", 96), ("mp3", 128)]
METHODS = ("empty", "replicate", "model")


def power_spec(x: np.ndarray) -> np.ndarray:
    """(channels, n) -> (channels, bins, frames) power, white noise of variance s^2 reading s^2."""
    window = torch.hann_window(2048, periodic=True)
    spec = torch.stft(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), 2048, 512, window=window,
                      center=True, return_complex=True)
    return (spec.abs() ** 2).numpy() / float((window ** 2).sum())


def lsd(ref_p: np.ndarray, est_p: np.ndarray, lo_hz: float, hi_hz: float, eps: float = LSD_EPS) -> float:
    freqs = np.fft.rfftfreq(2048, 1 / SR)
    band = (freqs >= lo_hz) & (freqs < hi_hz)
    diff = 10 * np.log10((ref_p[:, band] + eps) / (est_p[:, band] + eps))
    per_frame = np.sqrt(np.mean(diff ** 2, axis=1))                 # (channels, frames)
    loud = ref_p.sum(axis=1) > ref_p.sum(axis=1).max() * 1e-6      # frames that are not silent
    return float(per_frame[loud].mean())


def join_step(ref_p: np.ndarray, est_p: np.ndarray, cutoff: float) -> float:
    """(level above - level below the cutoff) of the estimate minus the same of the reference, dB."""
    freqs = np.fft.rfftfreq(2048, 1 / SR)
    above, below = (freqs >= cutoff) & (freqs < cutoff + 500), (freqs >= cutoff - 500) & (freqs < cutoff)

    def step(p):
        return 10 * np.log10(p[:, above].mean() + LSD_EPS) - 10 * np.log10(p[:, below].mean() + LSD_EPS)
    return float(step(est_p) - step(ref_p))


def level_bias(ref_p: np.ndarray, est_p: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    """The estimate's level in the band minus the reference's, dB (mean power over the excerpt)."""
    freqs = np.fft.rfftfreq(2048, 1 / SR)
    band = (freqs >= lo_hz) & (freqs < hi_hz)
    return float(10 * np.log10((est_p[:, band].mean() + LSD_EPS) / (ref_p[:, band].mean() + LSD_EPS)))


def band_limit(clean: np.ndarray, kind: str, value: int) -> np.ndarray:
    if kind == "lowpass":
        return phone_lowpass(clean, SR, float(value), order=8, zero_phase=True)
    return mp3_roundtrip(clean, SR, value).astype(np.float32)


def excerpts(tracks: list[Path], count: int, seconds: float, seed: int) -> list[tuple[str, np.ndarray, float]]:
    out = []
    n = int(seconds * SR)
    for t, path in enumerate(tracks):
        audio = load_music(path, SR)
        limit = source_limit_hz(audio, SR)
        rng = np.random.default_rng([seed, t])
        made = 0
        for _ in range(count * 10):
            if made == count or audio.shape[-1] <= n:
                break
            start = int(rng.integers(0, audio.shape[-1] - n))
            seg = audio[:, start: start + n]
            if np.sqrt(np.mean(seg ** 2)) > 0.03:
                out.append((f"{path.stem}@{start / SR:.0f}s", np.ascontiguousarray(seg), limit))
                made += 1
    return out


def evaluate(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    cfg = ExtendTrainConfig()
    _, dev = split_tracks(cfg)
    if args.tracks == "validation":         # training tracks held out of the fit, for design choices
        dev = validation_tracks(cfg)
    model = load_extend_model(args.weights)
    clips = excerpts(dev, args.excerpts, args.seconds, args.seed)
    print(f"{len(clips)} excerpts of {len(dev)} {args.tracks} tracks, {args.seconds:g} s each")
    rows = []
    for name, clean, limit in clips:
        ref_p = power_spec(clean)
        for kind, value in CONDITIONS:
            damaged = band_limit(clean, kind, value)
            top = min(limit, ExtendConfig().top_hz)
            stage = ExtendStage(ExtendConfig(top_hz=top, weights=args.weights, **max_cutoff(args)))
            stage.open(StageContext(SR, clean.shape[0]))
            stage.measure(damaged)
            stage.plan()
            if stage.extender is not None and args.fine_structure is not None:
                stage.extender.fine_structure = args.fine_structure
            if stage.extender is not None and args.level_offset is not None:
                stage.extender.level_offset_db = args.level_offset
            out_model = np.concatenate(list(stage.apply(iter([damaged]))), axis=-1)
            rep = stage.report()
            row = {"clip": name, "condition": f"{kind}_{value}", "limit_hz": round(limit), "cutoff_hz": rep["detected_cutoff_hz"],
                   "extended": rep["extended"]}
            if not rep["extended"]:
                row["note"] = rep["note"]
                rows.append(row)
                continue
            cutoff, top_hz = rep["added_band_hz"]
            outputs = {"empty": damaged, "model": out_model,
                       "replicate": BandExtender(model, SR, cutoff, top_hz, mode="replicate").process(damaged)}
            for method in METHODS:
                est_p = power_spec(outputs[method])
                row[f"lsd_high_{method}"] = lsd(ref_p, est_p, cutoff, top_hz)
                row[f"lsd130_high_{method}"] = lsd(ref_p, est_p, cutoff, top_hz, LOW_FLOOR_EPS)
                row[f"step_{method}"] = join_step(ref_p, est_p, cutoff)
                row[f"bias_{method}"] = level_bias(ref_p, est_p, cutoff, top_hz)
            row["lsd_low_input"] = lsd(ref_p, power_spec(damaged), 50.0, cutoff)
            row["lsd_low_model"] = lsd(ref_p, power_spec(out_model), 50.0, cutoff)
            rows.append(row)
        print(f"  {name}: done", flush=True)
    return {"rows": rows, "summary": summarise(rows), "rtf": stage_rtf(clips, args)}


def max_cutoff(args: argparse.Namespace) -> dict:
    return {"max_cutoff_hz": args.max_cutoff} if args.max_cutoff is not None else {}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for cond in [f"{kind}_{value}" for kind, value in CONDITIONS]:
        done = [r for r in rows if r["condition"] == cond and r["extended"]]
        entry = {"excerpts": len([r for r in rows if r["condition"] == cond]), "extended": len(done)}
        if done:
            entry["cutoff_hz_mean"] = round(float(np.mean([r["cutoff_hz"] for r in done])))
            for key in [f"lsd_high_{m}" for m in METHODS] + ["lsd_low_input", "lsd_low_model"] + [f"step_{m}" for m in METHODS[1:]] + [f"bias_{m}" for m in METHODS[1:]] + [f"lsd130_high_{m}" for m in METHODS]:
                entry[key] = round(float(np.mean([r[key] for r in done])), 2)
        out[cond] = entry
    done = [r for r in rows if r["extended"]]
    if done:
        out["all"] = {"extended": len(done), **{key: round(float(np.mean([r[key] for r in done])), 2) for key in
                      [f"lsd_high_{m}" for m in METHODS] + ["lsd_low_input", "lsd_low_model"] + [f"step_{m}" for m in METHODS[1:]]
                      + [f"bias_{m}" for m in METHODS[1:]] + [f"lsd130_high_{m}" for m in METHODS]}}
        out["all"]["model_beats_replicate"] = int(sum(r["lsd_high_model"] < r["lsd_high_replicate"] for r in done))
        out["all"]["max_low_band_change_db"] = round(float(max(abs(r["lsd_low_model"] - r["lsd_low_input"]) for r in done)), 4)
    return out


def stage_rtf(clips, args) -> dict:
    """Wall time of the whole stage (detection, model, overlap-add) on a long band-limited excerpt."""
    seconds = args.rtf_seconds
    clean = np.concatenate([c for _, c, _ in clips], axis=-1)[:, : int(seconds * SR)]
    damaged = band_limit(clean, "lowpass", 11000)
    stage = ExtendStage(ExtendConfig(weights=args.weights))
    start = time.perf_counter()
    stage.process(damaged, StageContext(SR, 2))
    wall = time.perf_counter() - start
    audio_s = damaged.shape[-1] / SR
    return {"audio_seconds": round(audio_s, 1), "wall_seconds": round(wall, 2), "rtf": round(wall / audio_s, 4),
            "model_rtf": stage.report()["realtime_factor"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--excerpts", type=int, default=3, help="excerpts per development track")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each excerpt")
    parser.add_argument("--rtf-seconds", type=float, default=120.0, help="length of the real-time-factor run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tracks", choices=["development", "validation"], default="development",
                        help="the held-out development tracks (the figures), or the training run's validation tracks")
    parser.add_argument("--weights", default="", help="extension weights (default: the shipped model)")
    parser.add_argument("--fine-structure", type=float, help="override the model's fine-structure depth (0..1)")
    parser.add_argument("--level-offset", type=float, help="override the dB added to the model's predicted levels")
    parser.add_argument("--max-cutoff", type=float, help="the stage's max_cutoff_hz (default: the stage's own)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    if not args.weights:
        from resonate.models.extend import DEFAULT_EXTEND_WEIGHTS

        args.weights = str(DEFAULT_EXTEND_WEIGHTS)
    result = evaluate(args)
    header = (f"{'condition':<14}{'n':>4}{'cutoff':>8}{'empty':>8}{'replic.':>8}{'model':>8}{'low in':>8}{'low out':>8}"
              f"{'step r':>8}{'step m':>8}{'bias r':>8}{'bias m':>8}")
    print("LSD in dB (regenerated band: empty / replication / model; 50 Hz-cutoff: input / output); "
          "join step and level bias in the band (replication, model), dB")
    print(header)
    for cond, e in result["summary"].items():
        if "lsd_high_model" not in e:
            print(f"{cond:<14}{e.get('extended', 0):>4}  (nothing to extend)")
            continue
        print(f"{cond:<14}{e['extended']:>4}{e.get('cutoff_hz_mean', 0):>8}{e['lsd_high_empty']:>8.2f}{e['lsd_high_replicate']:>8.2f}"
              f"{e['lsd_high_model']:>8.2f}{e['lsd_low_input']:>8.2f}{e['lsd_low_model']:>8.2f}{e['step_replicate']:>8.2f}"
              f"{e['step_model']:>8.2f}{e['bias_replicate']:>8.2f}{e['bias_model']:>8.2f}")
    print("the same LSD in the regenerated band with a floor of -130 dB instead of -100 dB (empty / replication / model):")
    for cond, e in result["summary"].items():
        if "lsd130_high_model" in e:
            print(f"{cond:<14}{e['lsd130_high_empty']:>8.2f}{e['lsd130_high_replicate']:>8.2f}{e['lsd130_high_model']:>8.2f}")
    allrow = result["summary"].get("all", {})
    if allrow:
        print(f"model below replication on {allrow['model_beats_replicate']}/{allrow['extended']} excerpts; "
              f"largest change of the 50 Hz-cutoff LSD: {allrow['max_low_band_change_db']} dB")
    r = result["rtf"]
    print(f"stage RTF {r['rtf']} ({r['wall_seconds']} s for {r['audio_seconds']} s of stereo 44.1 kHz; model and STFT alone {r['model_rtf']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
