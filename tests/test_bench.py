"""The bench command: structure of its output on a couple of seconds of audio (never its speed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resonate.bench import concert_block, format_scaling, format_table, scaling_check
from resonate.cli import main


def _row(name, seconds, rtf, rss):
    return {"row": name, "audio_seconds": seconds, "seconds": rtf * seconds, "rtf": rtf, "peak_rss_mb": rss,
            "gpu_peak_mb": None, "device": "cpu", "note": ""}


def test_bench_command_runs_stages_alone_and_the_chain(tmp_path, capsys):
    report = tmp_path / "bench.json"
    code = main(["bench", "--durations", "1,2", "--stages", "master,chain", "--json", str(report),
                 "--work-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(report.read_text())
    rows = data["rows"]
    assert [(r["row"], r["audio_seconds"]) for r in rows] == [
        ("master", 1.0), ("chain", 1.0), ("master", 2.0), ("chain", 2.0)]
    for r in rows:
        assert "error" not in r, r
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 0 and r["device"] == "cpu"
        assert r["rtf"] == pytest.approx(r["seconds"] / r["audio_seconds"], rel=1e-3)
    # The chain row ran the four stages after separation (restore with random weights if none are shipped).
    chain = next(r for r in rows if r["row"] == "chain")
    assert set(chain["stages"]) == {"denoise", "restore", "master", "loudness"}
    assert list(next(r for r in rows if r["row"] == "master")["stages"]) == ["master"]
    # Table: a header and one line per row; the scaling check compares 1 s with 2 s for every row.
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["row", "audio", "s", "seconds"]
    assert sum(1 for line in lines if line.split()[:1] in (["master"], ["chain"])) >= 4
    assert [c["row"] for c in data["scaling"]] == ["master", "chain"]
    assert "Scaling" in out
    # Nothing is left behind in the work folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]


def test_bench_times_separation_and_demucs_reference(tmp_path):
    from resonate.separation.testing import make_tiny_htdemucs_repo

    models = make_tiny_htdemucs_repo(tmp_path / "models")
    report = tmp_path / "bench.json"
    code = main(["bench", "--durations", "2", "--stages", "separate,demucs", "--models-dir", str(models),
                 "--json", str(report), "--work-dir", str(tmp_path)])
    assert code == 0
    rows = json.loads(report.read_text())["rows"]
    assert [r["row"] for r in rows] == ["separate", "demucs"]
    assert all(r["seconds"] > 0 and "error" not in r for r in rows)
    assert "random weights" not in rows[0]["note"]     # real (here: tiny) weights were given


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "--durations", "ten"]) == 2
    assert "durations" in capsys.readouterr().err
    assert main(["bench", "--stages", "denoise,reverb"]) == 2
    assert "reverb" in capsys.readouterr().err
    assert main(["bench", "--durations", "1", "--work-dir", "/nonexistent/resonate-bench"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_scaling_check_flags_growth():
    rows = [_row("chain", 10, 0.040, 500.0), _row("chain", 600, 0.035, 510.0),
            _row("leaky", 10, 0.010, 400.0), _row("leaky", 600, 0.030, 900.0)]
    checks = {c["row"]: c for c in scaling_check(rows)}
    assert checks["chain"]["linear_time"] and checks["chain"]["flat_memory"]
    assert checks["chain"]["cost_ratio"] == pytest.approx(0.875)
    assert not checks["leaky"]["linear_time"] and not checks["leaky"]["flat_memory"]
    assert checks["leaky"]["rss_growth_mb"] == pytest.approx(500.0)
    text = format_scaling(list(checks.values()))
    assert "NOT linear" in text and "GROWS" in text


def test_table_shows_failed_rows():
    rows = [_row("master", 2, 0.004, 300.0), {"row": "restore", "audio_seconds": 2, "error": "boom"}]
    table = format_table(rows).splitlines()
    assert len(table) == 3 and "0.0040" in table[1] and "failed: boom" in table[2]
    assert table[0].split()[:6] == ["row", "audio", "s", "seconds", "RTF", "job"]


def test_material_is_deterministic_and_bounded():
    a = concert_block(44100, 20000)
    b = concert_block(44100, 20000)
    assert a.shape == (2, 20000) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert 0.05 < np.abs(a).max() < 1.0
