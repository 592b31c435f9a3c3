"""Evaluation of the restore model on a pair folder, against the unprocessed input and noisereduce.

For every pair: SI-SDR (dB) and multi-resolution log-spectral distance (dB) of the input, of the
model's output and of noisereduce's output, all against the clean `_0` file (for the v3 pairs:
the music through the venue's first 50 ms). "Do no harm": every clean file (the dry music of a
v3 pair) is also passed through the model and compared with itself. Where the folder has them (the v3 development set,
``resonate/train/build_v3.py``), also:

- SI-SDR against the dry music (``{id}_dry.wav``);
- crowd attenuation (dB): input over output energy where the song has ended and only the crowd
  and the room are left (``music_end_s`` in ``params.jsonl``, from 0.25 s after it);
- reverberation tail change (dB): output over input energy in the second after the song ends,
  on clips without a crowd (the room's tail alone);
- the gain when the same input is 20 dB quieter (a model must not depend on the level);
- optionally the default chain (``--chain``: the whole pipeline without separation);
- a line per degradation type (``type`` in ``params.jsonl``: full, crowd, room, pa, phone).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from resonate.audio.resample import resample
from resonate.models.inference import Restorer
from resonate.models.io import load_model
from resonate.train.align import align_pair
from resonate.train.dataset import find_pairs, load_pair
from resonate.train.metrics import band_balance_db, log_spectral_distance, si_sdr

QUIETER_DB = 20.0
CROWD_STRETCH_DELAY_S = 0.25     # after the song ends: past the fade and the early reflections
TAIL_SECONDS = 1.0
HIGHS_LOST_DB = 15.0             # a clip whose 10-16 kHz band is this far under the target's has lost its highs


@dataclass
class ClipResult:
    name: str
    sdr_input: float
    sdr_model: float
    sdr_nr: float
    lsd_input: float
    lsd_model: float
    lsd_nr: float
    clean_sdr: float      # model(clean) vs clean
    kind: str = ""                       # degradation type (v3 pairs)
    sdr_dry_input: float | None = None   # against the dry music
    sdr_dry_model: float | None = None
    sdr_quiet_model: float | None = None  # the input 20 dB quieter through the model
    crowd_atten_db: float | None = None
    tail_change_db: float | None = None
    sdr_chain: float | None = None
    lsd_chain: float | None = None
    highs_input_db: float | None = None   # 10-16 kHz against the target, level-aligned (metrics.band_balance_db)
    highs_model_db: float | None = None

    @property
    def gain_model(self) -> float:
        return self.sdr_model - self.sdr_input

    @property
    def gain_nr(self) -> float:
        return self.sdr_nr - self.sdr_input

    @property
    def gain_dry(self) -> float | None:
        return None if self.sdr_dry_model is None else self.sdr_dry_model - self.sdr_dry_input

    @property
    def gain_quiet(self) -> float | None:
        return None if self.sdr_quiet_model is None else self.sdr_quiet_model - self.sdr_input


def noisereduce_baseline(x: np.ndarray, sr: int, prop_decrease: float = 0.9) -> np.ndarray:
    import noisereduce

    y = noisereduce.reduce_noise(y=x, sr=sr, stationary=True, prop_decrease=prop_decrease)
    return np.asarray(y, dtype=np.float32).reshape(x.shape)


def read_params(folder: str | Path) -> dict[str, dict]:
    """``params.jsonl`` of a built pair folder by pair id (empty for folders without one)."""
    path = Path(folder) / "params.jsonl"
    if not path.exists():
        return {}
    params = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            params[entry["id"]] = entry
    return params


def energy_ratio_db(a: np.ndarray, b: np.ndarray) -> float:
    """10 log10 of a's energy over b's."""
    return float(10 * np.log10((np.sum(np.square(a, dtype=np.float64)) + 1e-12) /
                               (np.sum(np.square(b, dtype=np.float64)) + 1e-12)))


def run_chain(noisy: np.ndarray, sr: int, weights: str, device: str) -> np.ndarray:
    """The default chain without separation (denoise, restore with these weights, master,
    loudness) on one clip, through the real pipeline."""
    from resonate.pipeline import ChainSettings, OutputOptions, process_file

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(src, noisy.T, sr, subtype="FLOAT")
        settings = ChainSettings(skip=("separate",), overrides={"restore": {"weights": str(weights)}})
        process_file(src, dst, settings, OutputOptions(bit_depth="32f"), device=device)
        out, _ = sf.read(dst, dtype="float32", always_2d=True)
    return out.T


def evaluate_folder(weights: str, data_dir: str, device: torch.device, align: bool = False, max_clips: int = 0,
                    strength: float = 1.0, chain: bool = False, log=print) -> list[ClipResult]:
    model = load_model(weights, device)
    restorer = Restorer(model, device, strength=strength)
    model_sr = model.config.sample_rate
    pairs = find_pairs(data_dir)
    params = read_params(data_dir)
    if max_clips:
        pairs = pairs[:max_clips]

    def restore(x: np.ndarray, sr: int) -> np.ndarray:
        return resample(restorer.process(resample(x, sr, model_sr)), model_sr, sr)[:, : x.shape[-1]]

    results = []
    clean_scores: dict[str, float] = {}
    for pair in pairs:
        clean, noisy, sr = load_pair(pair)
        if align or clean.shape[-1] != noisy.shape[-1]:
            clean, noisy, _ = align_pair(clean, noisy, sr)
        n = min(clean.shape[-1], noisy.shape[-1])
        clean, noisy = clean[:, :n], noisy[:, :n]
        if noisy.shape[0] != clean.shape[0]:
            noisy = np.repeat(noisy.mean(axis=0, keepdims=True), clean.shape[0], axis=0)
        restored = restore(noisy, sr)
        nr = noisereduce_baseline(noisy, sr)
        dry_path = pair.clean.with_name(f"{pair.song}_dry.wav")
        dry = sf.read(dry_path, dtype="float32", always_2d=True)[0].T[:, :n] if dry_path.exists() else None
        if pair.song not in clean_scores:
            # "Clean input": the studio music itself where the folder has it (the early-reflection
            # target of a v3 pair still holds the venue's first 50 ms, which the model may rightly touch).
            reference = clean if dry is None else dry
            clean_scores[pair.song] = si_sdr(restore(reference, sr), reference)
        r = ClipResult(
            name=pair.recording.stem,
            sdr_input=si_sdr(noisy, clean), sdr_model=si_sdr(restored, clean), sdr_nr=si_sdr(nr, clean),
            lsd_input=log_spectral_distance(noisy, clean, sr), lsd_model=log_spectral_distance(restored, clean, sr),
            lsd_nr=log_spectral_distance(nr, clean, sr), clean_sdr=clean_scores[pair.song],
        )
        r.highs_input_db = band_balance_db(noisy, clean, sr)
        r.highs_model_db = band_balance_db(restored, clean, sr)
        meta = params.get(pair.song, {})
        r.kind = meta.get("type", "")
        if dry is not None:
            r.sdr_dry_input, r.sdr_dry_model = si_sdr(noisy, dry), si_sdr(restored, dry)
        quiet = 10 ** (-QUIETER_DB / 20)
        r.sdr_quiet_model = si_sdr(restore(noisy * quiet, sr), clean)
        if "music_end_s" in meta:
            end = int(meta["music_end_s"] * sr)
            if meta.get("crowd"):
                start = end + int(CROWD_STRETCH_DELAY_S * sr)
                r.crowd_atten_db = energy_ratio_db(noisy[:, start:], restored[:, start:])
            else:
                stop = end + int(TAIL_SECONDS * sr)
                r.tail_change_db = energy_ratio_db(restored[:, end:stop], noisy[:, end:stop])
        if chain:
            out = run_chain(noisy, sr, weights, str(device))[:, :n]
            r.sdr_chain, r.lsd_chain = si_sdr(out, clean), log_spectral_distance(out, clean, sr)
        results.append(r)
    return results


HEADER = ("clip", "type", "SI-SDR in", "model", "gain", "vs dry", "-20 dB", "NR gain", "LSD in", "model", "NR",
          "crowd att", "tail", "clean->model")


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _row(name: str, kind: str, rs: list[ClipResult], clean: str) -> tuple[str, ...]:
    m = lambda f: _mean(f(r) for r in rs)  # noqa: E731
    return (name, kind, _fmt(m(lambda r: r.sdr_input), ".2f"), _fmt(m(lambda r: r.sdr_model), ".2f"),
            _fmt(m(lambda r: r.gain_model), "+.2f"), _fmt(m(lambda r: r.gain_dry), "+.2f"),
            _fmt(m(lambda r: r.gain_quiet), "+.2f"), _fmt(m(lambda r: r.gain_nr), "+.2f"),
            _fmt(m(lambda r: r.lsd_input), ".2f"), _fmt(m(lambda r: r.lsd_model), ".2f"),
            _fmt(m(lambda r: r.lsd_nr), ".2f"), _fmt(m(lambda r: r.crowd_atten_db), ".1f"),
            _fmt(m(lambda r: r.tail_change_db), "+.1f"), clean)


def format_table(results: list[ClipResult]) -> str:
    rows = [HEADER]
    for r in results:
        rows.append(_row(r.name, r.kind, [r], f"{r.clean_sdr:.1f}"))
    footer = []
    kinds = sorted({r.kind for r in results if r.kind})
    for kind in kinds:
        footer.append(_row(f"MEAN {kind}", kind, [r for r in results if r.kind == kind], ""))
    footer.append(_row("MEAN", "", results, f"{min(r.clean_sdr for r in results):.1f} (min)"))
    rows += footer
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - len(footer), "-" * len(lines[0]))
    return "\n".join(lines)


def summary(results: list[ClipResult]) -> dict:
    mean = lambda f: _mean(f(r) for r in results)  # noqa: E731
    s = {
        "clips": len(results),
        "si_sdr_input": mean(lambda r: r.sdr_input), "si_sdr_model": mean(lambda r: r.sdr_model),
        "si_sdr_gain_model": mean(lambda r: r.gain_model), "si_sdr_gain_noisereduce": mean(lambda r: r.gain_nr),
        "si_sdr_gain_vs_dry": mean(lambda r: r.gain_dry),
        "si_sdr_gain_20db_quieter": mean(lambda r: r.gain_quiet),
        "clips_worse_than_input": int(sum(r.gain_model < -0.05 for r in results)),
        "lsd_input": mean(lambda r: r.lsd_input), "lsd_model": mean(lambda r: r.lsd_model),
        "lsd_noisereduce": mean(lambda r: r.lsd_nr),
        "crowd_attenuation_db": mean(lambda r: r.crowd_atten_db),
        "reverb_tail_change_db": mean(lambda r: r.tail_change_db),
        "clean_passthrough_si_sdr_min": float(min(r.clean_sdr for r in results)),
        "clean_passthrough_si_sdr_median": float(np.median([r.clean_sdr for r in results])),
        "chain_si_sdr_gain": mean(lambda r: None if r.sdr_chain is None else r.sdr_chain - r.sdr_input),
        "chain_lsd": mean(lambda r: r.lsd_chain),
        "highs_input_db": mean(lambda r: r.highs_input_db), "highs_model_db": mean(lambda r: r.highs_model_db),
        "highs_input_lost": int(sum(r.highs_input_db is not None and r.highs_input_db < -HIGHS_LOST_DB for r in results)),
        "highs_model_lost": int(sum(r.highs_model_db is not None and r.highs_model_db < -HIGHS_LOST_DB for r in results)),
        "by_type": {},
    }
    for kind in sorted({r.kind for r in results if r.kind}):
        rs = [r for r in results if r.kind == kind]
        s["by_type"][kind] = {"clips": len(rs), "si_sdr_gain": float(np.mean([r.gain_model for r in rs])),
                              "lsd_input": float(np.mean([r.lsd_input for r in rs])),
                              "lsd_model": float(np.mean([r.lsd_model for r in rs]))}
    return s


def summary_lines(s: dict) -> list[str]:
    """The headline figures in words (what ``python -m resonate evaluate`` prints under the table)."""
    def f(key: str, spec: str) -> str:
        return "n/a" if s.get(key) is None else format(s[key], spec)

    lines = [
        f"mean SI-SDR gain: model {f('si_sdr_gain_model', '+.2f')} dB against the target "
        f"({f('si_sdr_gain_vs_dry', '+.2f')} dB against the dry music; {f('si_sdr_gain_20db_quieter', '+.2f')} dB "
        f"with the input 20 dB quieter), noisereduce {f('si_sdr_gain_noisereduce', '+.2f')} dB; "
        f"{s['clips_worse_than_input']} of {s['clips']} clips worse than their input",
        f"LSD input {f('lsd_input', '.2f')} / model {f('lsd_model', '.2f')} / noisereduce {f('lsd_noisereduce', '.2f')} dB; "
        f"crowd-only stretches attenuated {f('crowd_attenuation_db', '.1f')} dB; reverberation tail "
        f"{f('reverb_tail_change_db', '+.1f')} dB; clean passthrough SI-SDR min {f('clean_passthrough_si_sdr_min', '.1f')} dB "
        f"(median {f('clean_passthrough_si_sdr_median', '.1f')})",
    ]
    if s.get("highs_model_db") is not None:
        lines.append(f"10-16 kHz against the target, level-aligned: input {f('highs_input_db', '+.1f')} dB, "
                     f"model {f('highs_model_db', '+.1f')} dB; more than {HIGHS_LOST_DB:.0f} dB under on "
                     f"{s['highs_input_lost']} (input) and {s['highs_model_lost']} (model) of {s['clips']} clips")
    if s.get("chain_si_sdr_gain") is not None:
        lines.append(f"default chain (no separation): SI-SDR gain {f('chain_si_sdr_gain', '+.2f')} dB, "
                     f"LSD {f('chain_lsd', '.2f')} dB (input {f('lsd_input', '.2f')})")
    for kind, v in s["by_type"].items():
        lines.append(f"  {kind:6s} ({v['clips']} clips): SI-SDR gain {v['si_sdr_gain']:+.2f} dB, "
                     f"LSD {v['lsd_input']:.2f} -> {v['lsd_model']:.2f} dB")
    return lines


def to_json(results: list[ClipResult]) -> dict:
    return {"summary": summary(results), "clips": [asdict(r) for r in results]}
