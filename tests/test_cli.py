"""The real command line, in a subprocess: outputs, reports and every error case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from resonate.dsp.loudness import integrated_lufs, true_peak_dbtp
from resonate.stages import STAGE_ORDER
from tests.conftest import tone_mix

ROOT = Path(__file__).resolve().parent.parent
SKIP_MODELS = ["--skip", "separate", "restore"]


def run_cli(*args, cwd=None, env=None, preexec_fn=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "resonate", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300, preexec_fn=preexec_fn)


def run_patched_cli(patch: str, *args, env=None, preexec_fn=None, popen=False):
    """The real CLI in a subprocess, after ``patch`` (Python source) ran in it: a fault or a pause
    injected where the test needs one."""
    code = f"{patch}\nimport sys\nfrom resonate.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    cmd = [sys.executable, "-c", code, *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                preexec_fn=preexec_fn)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, preexec_fn=preexec_fn)


def assert_clean_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and fragment in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_restore_30s_stereo_clip_meets_targets(tmp_path):
    x = tone_mix(30, 44100, 2, noise=0.03)
    src = tmp_path / "noisy.wav"
    sf.write(str(src), x.T, 44100, subtype="PCM_16")
    before = src.read_bytes()
    out, rep = tmp_path / "out.wav", tmp_path / "r.json"
    proc = run_cli("restore", src, "-o", out, "--skip", "separate", "--report", rep)
    assert proc.returncode == 0, proc.stderr
    assert src.read_bytes() == before  # the input is never modified
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, x.shape[1])
    y, _ = sf.read(str(out), always_2d=True)
    assert abs(integrated_lufs(y.T, 44100) + 14.0) <= 0.5
    assert true_peak_dbtp(y.T, 44100) <= -1.0 + 0.02   # 24-bit dither adds < 0.001 dB
    report = json.loads(rep.read_text())
    assert report["sample_rate"] == 44100 and report["channels"] == 2 and report["seconds"] == pytest.approx(30.0)
    assert report["device"] == "cpu"
    assert {"integrated_lufs", "true_peak_dbtp"} <= set(report["input_loudness"]) & set(report["output_loudness"])
    names = [s["name"] for s in report["stages"]]
    assert names == sorted(names, key=list(STAGE_ORDER).index)
    for s in report["stages"]:
        assert {"name", "seconds", "skipped"} <= set(s)
    assert next(s for s in report["stages"] if s["name"] == "separate")["skipped"] if "separate" in names else True
    assert not next(s for s in report["stages"] if s["name"] == "loudness")["skipped"]


@pytest.mark.parametrize("fmt,bits", [("wav", "16"), ("wav", "32f"), ("mp3", None)])
def test_formats_and_mono_96k(tmp_path, fmt, bits):
    src = tmp_path / "mono.flac"
    sf.write(str(src), tone_mix(3, 96000, 1).T, 96000)
    out = tmp_path / f"o.{fmt}"
    args = ["restore", src, "-o", out, *SKIP_MODELS]
    if bits:
        args += ["--bit-depth", bits]
    else:
        args += ["--mp3-bitrate", "192"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    info = sf.info(str(out))
    assert info.channels == 1
    assert info.samplerate == (96000 if fmt == "wav" else 48000)  # MP3 tops out at 48 kHz


def test_batch_into_folder(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b b.wav"
    for p in (a, b):
        sf.write(str(p), tone_mix(2, 22050, 2).T, 22050)
    outdir = tmp_path / "out"
    rep = tmp_path / "batch.json"
    proc = run_cli("restore", a, b, "-o", outdir, *SKIP_MODELS, "--report", rep)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in outdir.iterdir()) == ["a_restored.wav", "b b_restored.wav"]
    assert len(json.loads(rep.read_text())) == 2


def test_batch_keeps_going_after_a_bad_file(tmp_path):
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    sf.write(str(good), tone_mix(1, 22050, 1).T, 22050)
    bad.write_bytes(b"garbage" * 50)
    proc = run_cli("restore", bad, good, "-o", tmp_path / "out", *SKIP_MODELS)
    assert proc.returncode == 2
    assert (tmp_path / "out" / "good_restored.wav").exists()
    assert not (tmp_path / "out" / "bad_restored.wav").exists()
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def _bad_inputs(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk" + bytes(200))
    sf.write(str(tmp_path / "zero.wav"), np.zeros((0, 2), np.float32), 44100)
    sf.write(str(tmp_path / "six.wav"), np.zeros((1000, 6), np.float32), 44100)
    (tmp_path / "notes.txt").write_text("not audio at all")
    return {
        "missing.wav": "not found",
        "empty.wav": "empty",
        "corrupt.wav": "not an audio file we can read",
        "zero.wav": "zero length",
        "six.wav": "6 channels",
        "notes.txt": "not an audio file we can read",
    }


def test_every_bad_input_is_one_clean_line(tmp_path):
    for name, fragment in _bad_inputs(tmp_path).items():
        out = tmp_path / f"{name}.out.wav"
        proc = run_cli("restore", tmp_path / name, "-o", out, *SKIP_MODELS)
        assert_clean_error(proc, fragment)
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.suffix == ".part"]


def test_bad_options_are_clean_errors(tmp_path):
    src = tmp_path / "a.wav"
    sf.write(str(src), tone_mix(1, 22050, 1).T, 22050)
    assert_clean_error(run_cli("restore", src, "-o", tmp_path / "o.wav", "--preset", "nope"), "unknown preset")
    assert_clean_error(run_cli("restore", src, "-o", tmp_path / "o.wav", "--denoise-strength", "3"), "strength")
    assert_clean_error(run_cli("restore", src, "-o", src, *SKIP_MODELS), "overwrite the input")


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("restore", tmp_path / "missing.wav", "-o", tmp_path / "o.wav", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_nan_silence_and_tiny_clips_give_valid_output(tmp_path):
    sr = 44100
    nan = tone_mix(2, sr, 2)
    nan[0, 1000:1100] = np.nan
    nan[1, 5000] = np.inf
    cases = {
        "nan.wav": nan,
        "silence.wav": np.zeros((2, sr * 2), np.float32),
        "tiny.wav": tone_mix(0.01, sr, 2),        # 10 ms
        "one.wav": np.full((1, 1), 0.5, np.float32),
    }
    for name, x in cases.items():
        src = tmp_path / name
        sf.write(str(src), x.T, sr, subtype="FLOAT")
        out = tmp_path / f"out_{name}"
        proc = run_cli("restore", src, "-o", out, *SKIP_MODELS)
        assert proc.returncode == 0, (name, proc.stderr)
        y, rate = sf.read(str(out), always_2d=True)
        assert rate == sr and y.shape == (x.shape[1], x.shape[0]), name
        assert np.all(np.isfinite(y)), name
        if name == "nan.wav":
            assert "NaN/inf" in proc.stderr
        if name == "silence.wav":
            assert np.max(np.abs(y)) < 1e-4   # dither only: no infinite gain


def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "restore" in proc.stdout


def test_clips_shorter_than_a_model_frame_go_through_restore(tmp_path):
    # 1 ms and 10 ms: shorter than the restore model's STFT frame (1024 at 44.1 kHz), which once
    # crashed the stage (reflection padding needs more than half a frame).
    clips = {"one_ms.wav": (tone_mix(0.001, 44100, 2), 44100), "ten_ms.wav": (tone_mix(0.01, 48000, 1), 48000)}
    for name, (x, sr) in clips.items():
        sf.write(str(tmp_path / name), x.T, sr, subtype="FLOAT")
    rep = tmp_path / "r.json"
    proc = run_cli("restore", *(tmp_path / n for n in clips), "-o", tmp_path / "out", "--skip", "separate",
                   "--report", rep)
    assert proc.returncode == 0, proc.stderr
    for name, (x, sr) in clips.items():
        y, rate = sf.read(str(tmp_path / "out" / name.replace(".wav", "_restored.wav")), always_2d=True)
        assert rate == sr and y.shape == (x.shape[1], x.shape[0]) and np.all(np.isfinite(y)), name
    for report in json.loads(rep.read_text()):
        assert not next(s for s in report["stages"] if s["name"] == "restore")["skipped"], report


def test_a_crash_on_one_file_does_not_stop_the_batch(tmp_path):
    # Whatever goes wrong with one file (here an injected bug while reading it), the others are
    # restored and the report lists every file.
    crash = "import resonate.pipeline as p\n" \
            "real = p.read_blocks\n" \
            "def read_blocks(path, *a, **k):\n" \
            "    if str(path).endswith('crash.wav'):\n" \
            "        raise RuntimeError('boom')\n" \
            "    return real(path, *a, **k)\n" \
            "p.read_blocks = read_blocks\n"
    first, second = tmp_path / "crash.wav", tmp_path / "good.wav"
    for p in (first, second):
        sf.write(str(p), tone_mix(1, 22050, 1).T, 22050)
    rep = tmp_path / "r.json"
    proc = run_patched_cli(crash, "restore", first, second, "-o", tmp_path / "out", *SKIP_MODELS, "--report", rep)
    assert proc.returncode == 1, proc.stderr
    assert f"error: {first}: unexpected RuntimeError: boom" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_restored.wav"]
    report = json.loads(rep.read_text())
    assert [r["input"] for r in report] == [str(first), str(second)]
    assert "boom" in report[0]["error"] and "error" not in report[1]


@pytest.mark.parametrize("option,value", [("--sample-rate", "-48000"), ("--sample-rate", "1"),
                                          ("--sample-rate", "1000000"), ("--restore-strength", "-1"),
                                          ("--restore-strength", "1.5")])
def test_out_of_range_options_are_refused(tmp_path, option, value):
    src = tmp_path / "a.wav"
    sf.write(str(src), tone_mix(1, 22050, 1).T, 22050)
    proc = run_cli("restore", src, "-o", tmp_path / "o.wav", *SKIP_MODELS, f"{option}={value}")
    assert_clean_error(proc, "must be between")
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    # Temporary files are created 0600; the finished ones get what the user's umask gives.
    src = tmp_path / "a.wav"
    sf.write(str(src), tone_mix(1, 22050, 1).T, 22050)
    out, rep = tmp_path / "o.wav", tmp_path / "r.json"
    proc = run_cli("restore", src, "-o", out, *SKIP_MODELS, "--report", rep, preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc.stderr
    assert (out.stat().st_mode & 0o777, rep.stat().st_mode & 0o777) == (mode, mode)


def test_a_file_name_for_several_inputs_is_refused(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    for p in (a, b):
        sf.write(str(p), tone_mix(1, 22050, 1).T, 22050)
    assert_clean_error(run_cli("restore", a, b, "-o", tmp_path / "y.wav", *SKIP_MODELS), "need an output folder")
    assert not (tmp_path / "y.wav").exists()
