"""The Restore page's "Several recordings of one show" mode through AppTest: recordings uploaded,
aligned, fused and restored, the alignment plotted and reported, results kept, Cancel leaves nothing.

The shows are synthesised here (tests/fuse_synth.py): one source through different rooms, an own
crowd and phone per recording, known start offsets and clock drift; 16 kHz to keep them quick.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fuse_synth import make_take, synth_music
from streamlit.testing.v1 import AppTest
from test_app import APP, TIMEOUT_S, app_env, started, widget  # noqa: F401  (app_env is a fixture)

from resonate.ui.history import read_run
from resonate.ui.several import alignment_figure, recordings_table

SR = 16000
pytestmark = pytest.mark.usefixtures("app_env")      # preferences, sessions and cache in tmp


@pytest.fixture(scope="module")
def show() -> dict[str, bytes]:
    """ref.wav: 0-24 s of the show; b.wav starts 3 s in, 18 s long, its clock 300 ppm fast; d.wav: another song."""
    source = synth_music(26, SR, seed=1)
    takes = {"ref.wav": make_take(source, SR, 0.0, 24.0, 0.0, seed=10),
             "b.wav": make_take(source, SR, 3.0, 18.0, -300.0, seed=11),
             "d.wav": make_take(synth_music(20, SR, seed=7), SR, 0.0, 16.0, 0.0, seed=13)}
    out = {}
    for name, take in takes.items():
        buf = io.BytesIO()
        sf.write(buf, take.audio.T, SR, format="WAV", subtype="PCM_16")
        out[name] = buf.getvalue()
    return out


def several_mode(at: AppTest) -> AppTest:
    widget(at, "radio", "restore.mode").set_value("Several recordings of one show").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(at: AppTest, show: dict[str, bytes], names: list[str]) -> AppTest:
    at.file_uploader[0].set_value([(n, show[n], "audio/wav") for n in names]).run()
    widget(at, "toggle", "restore.cfg.separate.bypass").set_value(True).run()    # Demucs: tested in test_app
    return at


def shown(at: AppTest) -> dict:
    return read_run(at.session_state["restore.show.result"])


def test_several_recordings_are_aligned_fused_restored_and_reported(show):
    at = several_mode(started())
    assert widget(at, "button", "restore.show.run").disabled                    # nothing chosen yet
    upload(at, show, ["ref.wav", "b.wav", "d.wav"])
    assert [m.value.split(" · ")[0] for m in at.markdown[:3]] == ["**ref.wav**", "**b.wav**", "**d.wav**"]
    widget(at, "button", "restore.show.run").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]

    result = shown(at)
    fusion = result["fusion"]
    rows = {r["name"]: r for r in fusion["recordings"]}
    assert fusion["reference"] == "ref.wav" and not rows["d.wav"]["used"] and rows["b.wav"]["used"]
    assert rows["b.wav"]["drift_ppm"] == pytest.approx(300, abs=5)
    assert rows["b.wav"]["start_s"] == pytest.approx(3.0, abs=0.01)
    # The chain ran on the fused show: the master is as long as it, at the loudness asked for.
    master = Path(result["output"])
    assert sf.info(str(master)).duration == pytest.approx(fusion["seconds"], abs=0.01)
    assert result["report"]["output_loudness"]["integrated_lufs"] == pytest.approx(-14.0, abs=0.5)
    assert [s["name"] for s in result["report"]["stages"] if not s["skipped"]][:2] == ["denoise", "restore"]
    assert [d.label for d in at.get("download_button")] == ["Download master (WAV 24-bit)"]

    # The left-out recording is named with its reason; the table has every recording; the plot
    # (after the result's waveform and spectrogram) draws the spans and b's local offsets and fit.
    assert any(w.value.startswith("**d.wav was left out:**") and "does not match" in w.value for w in at.warning)
    table = next(t.value for t in at.table if "Clock drift" in t.value.columns)
    assert list(table.index) == ["ref.wav", "b.wav", "d.wav"]
    assert list(table["Role"]) == ["reference", "fused", "left out"] and \
        table.loc["b.wav", "Clock drift"] == f"{rows['b.wav']['drift_ppm']:+.1f} ppm"
    assert len(at.get("plotly_chart")) == 3
    fig = alignment_figure(fusion)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.y[0] for b in bars] == ["ref.wav", "b.wav"] and bars[1].base[0] == pytest.approx(3.0, abs=0.01)
    points = [t for t in fig.data if t.type == "scatter" and t.mode == "markers"]
    fit = next(t for t in fig.data if t.type == "scatter" and t.mode == "lines")
    # Less its start offset, b's offset grows by 0.3 ms per second of the show: the drift's slope.
    slope = np.polyfit(np.asarray(fit.x), np.asarray(fit.y), 1)[0]
    assert slope == pytest.approx(0.3, abs=0.01) and sum(len(p.x) for p in points) >= 3

    # Results stay across reruns and a reload (a new session with the same URL).
    widget(at, "slider", "restore.cfg.loudness.target_lufs").set_value(-18.0).run()
    assert shown(at)["output"] == result["output"] and [w for w in at.warning if "Out of date" in w.value]
    again = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    again.query_params["session"] = Path(at.session_state["session_dir"]).name
    again.run()
    several_mode(again)
    assert shown(again)["output"] == result["output"] and len(again.get("plotly_chart")) == 3
    assert [d.label for d in again.get("download_button")] == ["Download master (WAV 24-bit)"]


def test_recordings_that_do_not_match_are_one_error_and_nothing_is_kept(show):
    at = upload(several_mode(started()), show, ["ref.wav", "d.wav"])
    widget(at, "button", "restore.show.run").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "do not match" in at.error[0].value
    session = Path(at.session_state["session_dir"])
    assert not list((session / "jobs").iterdir())
    assert not widget(at, "button", "restore.show.run").disabled


def test_a_cancelled_fusion_leaves_nothing_behind(show, monkeypatch):
    # Cancel interrupts the script at its next UI update with Streamlit's StopException: here the
    # progress callback raises it a third of the way through the fusion (after the alignment).
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    from resonate.ui import runner

    update = runner.ProgressModel.update

    def interrupted(self, stage, fraction):
        if stage == "fuse" and fraction > 0.3:
            raise StopException()
        update(self, stage, fraction)

    at = upload(several_mode(started()), show, ["ref.wav", "b.wav"])
    monkeypatch.setattr(runner.ProgressModel, "update", interrupted)
    widget(at, "button", "restore.show.run").click().run()
    assert [b.label for b in at.button if b.key == "restore.show.cancel"] == ["Cancel"]    # offered while it ran
    monkeypatch.undo()
    session = Path(at.session_state["session_dir"])
    assert not list((session / "jobs").iterdir())                  # no job folder, no half-written fused show
    at.run()
    assert not widget(at, "button", "restore.show.run").disabled and not at.get("download_button")


def test_the_recordings_table_says_why_one_was_left_out():
    report = {"recordings": [
        {"name": "a.wav", "used": True, "reference": True, "start_s": 0.0, "overlap_with_reference_s": 75.0,
         "cells_kept": 0.91},
        {"name": "b.wav", "used": True, "reference": False, "start_s": 62.5, "offset_s": -62.5, "drift_ppm": -12.25,
         "overlap_with_reference_s": 12.5, "windows": 24, "windows_agreeing": 22, "fit_residual_ms": 0.0421,
         "cells_kept": 0.5},
        {"name": "c.wav", "used": False, "reason": "does not match a.wav"}]}
    table = recordings_table(report)
    assert table.loc["a.wav"].tolist() == ["reference", "0.000 s", "–", "–", "1:15", "–", "91 %", ""]
    assert table.loc["b.wav"].tolist() == ["fused", "1:02", "-62.5000 s", "-12.2 ppm", "0:12",
                                           "22 of 24 (spread 0.042 ms)", "50 %", ""]
    assert table.loc["c.wav", "Role"] == "left out" and table.loc["c.wav", "Why"] == "does not match a.wav"
