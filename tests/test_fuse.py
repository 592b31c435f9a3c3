"""Fusion of several recordings of one show (resonate/fuse.py, resonate/fuse_cli.py).

Every show is synthesised here (tests/fuse_synth.py): one source through different rooms, an
independent crowd and phone filter per recording, known start offsets and clock drift.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fuse_synth import make_take, synth_music, true_rec_time

from resonate.errors import ResonateError
from resonate.fuse import FuseConfig, fit_time_map, fuse_files, gcc_phat, time_map_from_report
from resonate.stages import STAGE_ORDER
from resonate.train.metrics import si_sdr

SR = 16000
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def show(tmp_path_factory):
    """A 52-s show with a loud crowd (0 dB SNR at every phone): the reference phone records 0-50 s; B starts 4 s in, runs fast by 300 ppm and
    stops early; C starts 9.5 s in (mono), runs slow by 250 ppm; D is another song."""
    folder = tmp_path_factory.mktemp("show")
    source = synth_music(52, SR, seed=1)
    takes = {
        "ref.wav": make_take(source, SR, 0.0, 50.0, 0.0, seed=10, snr_db=0.0),
        "b.wav": make_take(source, SR, 4.0, 36.0, -300.0, seed=11, snr_db=0.0),
        "c.wav": make_take(source, SR, 9.5, 40.0, 250.0, seed=12, mono=True, snr_db=0.0),
    }
    other = make_take(synth_music(40, SR, seed=7), SR, 0.0, 38.0, 0.0, seed=13)
    paths = {}
    for name, take in {**takes, "d.wav": other}.items():
        paths[name] = folder / name
        sf.write(paths[name], take.audio.T, SR, subtype="FLOAT")
    out = folder / "fused.wav"
    report = fuse_files([paths[n] for n in ("ref.wav", "b.wav", "c.wav", "d.wav")], out)
    fused, _ = sf.read(out, dtype="float32", always_2d=True)
    return {"source": source, "takes": takes, "paths": paths, "report": report, "fused": fused.T, "folder": folder}


def _row(report, name):
    return next(r for r in report["recordings"] if r["name"] == name)


def test_offsets_within_half_a_millisecond_at_both_ends(show):
    report, takes = show["report"], show["takes"]
    assert report["reference"] == "ref.wav"
    ref = takes["ref.wav"]
    for name in ("b.wav", "c.wav"):
        row, take = _row(report, name), takes[name]
        tmap = time_map_from_report(row)
        # Ends of the overlap, in reference time.
        start = max(0.0, float(true_rec_time(take, ref, 0.0)))
        end = min(ref.seconds, float(true_rec_time(take, ref, take.seconds)))
        for t in (start, end):
            err_ms = (float(tmap(t)) - float(true_rec_time(ref, take, t))) * 1e3
            assert abs(err_ms) < 0.5, (name, t, err_ms)
        true_ppm = (1 / (1 + take.drift) * (1 + ref.drift) - 1) * 1e6
        assert abs(row["drift_ppm"] - true_ppm) < 5, (name, row["drift_ppm"], true_ppm)


def test_partial_overlap_is_fused_where_recordings_overlap_and_crossfaded(show):
    report, fused = show["report"], show["fused"]
    assert report["seconds"] == pytest.approx(50.0, abs=0.01)   # the reference spans the show
    assert fused.shape == (2, int(round(report["seconds"] * SR)))
    segments = [(s["start_s"], s["end_s"], set(s["recordings"])) for s in report["segments"]]
    assert segments[0][2] == {"ref.wav"} and segments[0][1] == pytest.approx(4.0, abs=0.01)
    assert any(rs == {"ref.wav", "b.wav", "c.wav"} for _, _, rs in segments)
    assert segments[-1][2] == {"ref.wav", "c.wav"} or segments[-1][2] == {"ref.wav"}
    b = _row(report, "b.wav")
    assert b["start_s"] == pytest.approx(4.0, abs=0.01) and b["end_s"] == pytest.approx(40.0, abs=0.05)
    # Before B and C join, the output is the reference alone (through its spectrum matching).
    ref = show["takes"]["ref.wav"].audio
    assert si_sdr(fused[:, SR: 3 * SR], ref[:, SR: 3 * SR]) > 10
    # No level step where recordings join or leave (ramped weights, not switches).
    for t in (4.0, 9.5, 40.0):
        i = int(t * SR)
        before = np.sqrt(np.mean(fused[:, i - SR // 2: i] ** 2))
        after = np.sqrt(np.mean(fused[:, i: i + SR // 2] ** 2))
        assert abs(20 * np.log10(after / before)) < 3, t


def test_a_recording_of_another_song_is_left_out(show):
    report = show["report"]
    d = _row(report, "d.wav")
    assert d["used"] is False and "does not match" in d["reason"]
    assert [r["path"] for r in report["rejected"]] == [str(show["paths"]["d.wav"])]
    assert all(r["used"] for r in report["recordings"] if r["name"] != "d.wav")


def test_fused_output_is_closer_to_the_source_than_any_recording(show):
    source, takes, fused = show["source"], show["takes"], show["fused"]
    a, b = 12.0, 38.0        # true times that every recording covers
    fused_score = si_sdr(fused[:, int(a * SR): int(b * SR)], source[:, int(a * SR): int(b * SR)])
    singles = {}
    for name, take in takes.items():
        lo = int(round((a - take.start_s) / (1 + take.drift) * SR))
        hi = lo + int((b - a) * SR)
        singles[name] = si_sdr(take.audio[:, lo:hi], take.clean[:, lo:hi])
    assert fused_score > max(singles.values()) + 0.5, (fused_score, singles)


def test_every_fusion_mode_runs_and_keeps_length(show, tmp_path):
    paths = [show["paths"][n] for n in ("ref.wav", "b.wav")]
    for mode in ("quiet", "magphase", "min"):
        out = tmp_path / f"{mode}.wav"
        report = fuse_files(paths, out, FuseConfig(mode=mode, max_windows=8))
        y, sr = sf.read(out, dtype="float32", always_2d=True)
        assert sr == SR and y.shape == (int(round(report["seconds"] * SR)), 2) and np.isfinite(y).all()
        assert report["mode"] == mode and np.abs(y).max() > 0.01


def test_two_recordings_that_do_not_match_are_one_error(show):
    with pytest.raises(ResonateError, match="do not match"):
        fuse_files([show["paths"]["ref.wav"], show["paths"]["d.wav"]], show["folder"] / "never.wav")


def test_gcc_phat_finds_a_fractional_delay():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SR * 2)
    spectrum = np.fft.rfft(x)
    delay = 37.3
    shifted = np.fft.irfft(spectrum * np.exp(-2j * np.pi * np.fft.rfftfreq(len(x)) * delay), len(x))
    a = x[4000:4000 + SR]
    b = shifted[4000 - 100: 4000 + SR + 100]
    lag, z = gcc_phat(a.astype(np.float32), b.astype(np.float32), SR, (100, 7000))
    assert abs(lag - 100 - delay) < 0.15 and z > 8     # 0.15 samples: 9 us at 16 kHz


def test_drift_fit_is_robust_and_goes_piecewise_only_when_needed():
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1200, 240)
    q = np.ones_like(t)
    line = 2.0 + 150e-6 * t + rng.normal(0, 2e-5, t.size)
    line[::17] += rng.uniform(-0.05, 0.05, line[::17].size)          # wrong windows
    tmap, inliers, _, piecewise = fit_time_map(t, line, q, FuseConfig())
    assert not piecewise and abs(tmap.drift - 150e-6) < 1e-6 and inliers.sum() >= 220
    # The clock's rate changes half way (a phone warming up): a line is off by ~10 ms there.
    truth = 2.0 + np.where(t < 600, 150e-6 * t, 0.09 + 120e-6 * (t - 600))
    tmap, _, _, piecewise = fit_time_map(t, truth + rng.normal(0, 2e-5, t.size), q, FuseConfig())
    assert piecewise
    err = np.abs((tmap(t) - t) - truth)
    assert np.median(err) < 2e-4 and err.max() < 1e-3


def _plain_take(seconds: float, start: float, drift_ppm: float, seed: int, source: np.ndarray) -> np.ndarray:
    import soxr

    rng = np.random.default_rng(seed)
    s0 = int(start * SR)
    y = source[s0: s0 + int(seconds * SR * 1.001) + SR] + 0.3 * rng.standard_normal(int(seconds * SR * 1.001) + SR)
    y = soxr.resample(y, SR, SR / (1 - drift_ppm * 1e-6), quality="HQ")[: int(seconds * SR)]
    return y.astype(np.float32)


def test_memory_does_not_grow_with_the_length_of_the_show(tmp_path):
    """Peak traced allocations of fusing 60 s and 240 s of two mono recordings: what grows with
    length is the 100-Hz envelopes only, far less than one recording's audio."""
    peaks, sizes = {}, {}
    for seconds in (60, 240):
        source = synth_music(seconds + 6, SR, seed=3).mean(axis=0)
        paths = []
        for k, (start, ppm) in enumerate(((0.0, 0.0), (3.0, 200.0))):
            p = tmp_path / f"m{seconds}_{k}.wav"
            sf.write(p, _plain_take(seconds, start, ppm, 20 + k, source), SR, subtype="FLOAT")
            paths.append(p)
        del source
        sizes[seconds] = seconds * SR * 4                 # one recording as a float32 array
        tracemalloc.start()
        fuse_files(paths, tmp_path / f"m{seconds}.wav", FuseConfig(max_windows=12))
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    growth = peaks[240] - peaks[60]
    assert growth < 0.25 * sizes[240], (peaks, sizes)


def test_cli_fuses_then_runs_the_chain_and_reports(show, tmp_path):
    p = show["paths"]
    out, report = tmp_path / "out.wav", tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "resonate", "fuse", str(p["ref.wav"]), str(p["b.wav"]), str(p["d.wav"]),
           "-o", str(out), "--skip", *[s for s in STAGE_ORDER if s != "loudness"], "--bit-depth", "16",
           "--report", str(report), "--work-dir", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "left out: d.wav" in done.stderr
    info = sf.info(str(out))
    assert info.samplerate == SR and info.channels == 2 and info.subtype == "PCM_16"
    rep = json.loads(report.read_text())
    assert rep["input"] == [str(p["ref.wav"]), str(p["b.wav"]), str(p["d.wav"])]
    fusion = rep["fusion"]
    assert fusion["reference"] == "ref.wav" and [r["path"] for r in fusion["rejected"]] == [str(p["d.wav"])]
    b = _row(fusion, "b.wav")
    assert b["used"] and abs(b["drift_ppm"] - 300) < 5 and b["overlap_with_reference_s"] > 30
    assert [s["name"] for s in rep["stages"] if not s["skipped"]] == ["loudness"]
    assert rep["output_loudness"]["integrated_lufs"] == pytest.approx(-14, abs=1)
    # The temporary fused file went with the job.
    assert not [q for q in tmp_path.iterdir() if q.name.startswith("resonate-spool-")]
    # One recording only, or recordings that do not match: one error line, status 2.
    for args in ([str(p["ref.wav"])], [str(p["ref.wav"]), str(p["d.wav"])]):
        bad = subprocess.run([sys.executable, "-m", "resonate", "fuse", *args, "-o", str(tmp_path / "x.wav")],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert bad.returncode == 2 and bad.stderr.strip().startswith("error:"), bad.stderr
        assert not (tmp_path / "x.wav").exists()
