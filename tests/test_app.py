"""The Streamlit app through AppTest: every page renders, the demo restores end to end, batch works."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone_mix
from streamlit.testing.v1 import AppTest

from resonate.audio.io import READ_EXTENSIONS, probe
from resonate.ui.history import read_run
from resonate.ui.models import clear_model_cache

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ("app_pages/restore.py", "app_pages/batch.py", "app_pages/settings.py", "app_pages/about.py")
TIMEOUT_S = 240


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """Preferences, session folders and stem cache in tmp; returns a function to write preferences."""
    prefs = tmp_path / "app.json"
    monkeypatch.setenv("RESONATE_APP_CONFIG", str(prefs))
    monkeypatch.setenv("RESONATE_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("RESONATE_CACHE_DIR", str(tmp_path / "cache"))

    def write_prefs(**values) -> None:
        prefs.write_text(json.dumps(values))
    yield write_prefs
    # The app's models are kept for the server process; the next test starts without them.
    clear_model_cache()


def wav_bytes(seconds: float, seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone_mix(seconds, seed=seed).T * 0.5, 44100, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def started(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def widget(at: AppTest, kind: str, key: str):
    return next(w for w in getattr(at, kind) if w.key == key)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def shown(at: AppTest) -> dict:
    """The run shown on the Restore page, as recorded in its job folder."""
    return read_run(at.session_state["restore.result"])


def iframes(at: AppTest) -> list[str]:
    return [e.proto.srcdoc for e in at.get("iframe")]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(app_env, page):
    at = started(page)
    assert at.title[0].value


def test_restore_page_offers_an_uploader_and_the_demo(app_env):
    at = started()
    assert set(READ_EXTENSIONS) <= set(at.file_uploader[0].allowed_type)     # Streamlit adds aliases
    assert button(at, "Try the demo")
    assert widget(at, "button", "restore.run").disabled        # nothing to restore yet


def test_demo_restores_end_to_end_with_views_player_and_downloads(app_env):
    at = started()
    button(at, "Try the demo").click().run()
    assert "concert_demo.mp3" in at.markdown[0].value
    widget(at, "toggle", "restore.cfg.separate.bypass").set_value(True).run()    # Demucs is tested below
    widget(at, "button", "restore.run").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]

    result = shown(at)
    master = Path(result["output"])
    assert master.is_file() and probe(master).seconds == pytest.approx(probe(result["input"]).seconds, abs=0.01)
    assert result["report"]["output_loudness"]["integrated_lufs"] == pytest.approx(-14.0, abs=0.5)
    extend = next(s for s in result["report"]["stages"] if s["name"] == "extend")
    # waveform and spectrogram, no stems; the added band when extend found a cutoff in the demo
    assert len(at.get("plotly_chart")) == 2 + bool(extend.get("extended"))
    assert any('id="ab-player"' in html for html in iframes(at))
    assert [d.label for d in at.get("download_button")] == ["Download master (WAV 24-bit)"]
    assert not widget(at, "button", "restore.run").disabled     # controls are back after the run
    table = at.table[0].value
    assert list(table.columns) == ["Original", "Restored"] and "Clipped samples" in table.index


def test_upload_with_separation_gives_stems_and_mp3(app_env, tmp_path):
    from resonate.separation.testing import make_tiny_htdemucs_repo

    app_env(models_dir=str(make_tiny_htdemucs_repo(tmp_path / "models")))
    at = started()
    at.file_uploader[0].set_value(("my show!.wav", wav_bytes(4.0, 1), "audio/wav")).run()
    widget(at, "radio", "restore.cfg.output.format").set_value("mp3").run()
    widget(at, "button", "restore.run").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]

    result = shown(at)
    assert Path(result["output"]).name == "my show_restored.mp3"          # as the CLI names it
    assert probe(result["output"]).seconds == pytest.approx(4.0, abs=0.06)     # a playable MP3
    assert [Path(p).stem.rsplit("-", 1)[-1] for p in result["stems"]] == ["bass", "drums", "other", "vocals"]
    assert len(at.get("plotly_chart")) == 3                      # waveform, spectrogram, stems
    labels = [d.label for d in at.get("download_button")]
    assert labels == ["Download master (MP3 320 kb/s)", "Download stems (zip)"]


def restore_upload(at: AppTest, name: str, seconds: float) -> AppTest:
    """Upload a synthetic recording of ``seconds`` and run it (Demucs bypassed: tested above)."""
    at.file_uploader[0].set_value((name, wav_bytes(seconds, 3), "audio/wav")).run()
    widget(at, "toggle", "restore.cfg.separate.bypass").set_value(True).run()
    widget(at, "button", "restore.run").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    return at


def test_two_minute_upload_shows_results_and_the_excerpt_sliders_work(app_env):
    # Anything longer than the 30-s demo used to crash the results (an int slider value between float bounds).
    at = restore_upload(started(), "two minutes.wav", 120.0)
    assert len(at.get("plotly_chart")) == 2 and any('id="ab-player"' in html for html in iframes(at))
    assert [d.label for d in at.get("download_button")] == ["Download master (WAV 24-bit)"]
    start = widget(at, "slider", "restore.ab_start")
    assert (start.min, start.max, start.value) == (0.0, 90.0, 45.0)
    start.set_value(90.0).run()                           # the latest start for a 30-s excerpt...
    widget(at, "slider", "restore.ab_length").set_value(60.0).run()     # ...then a longer excerpt
    assert not at.exception, [e.value for e in at.exception]
    start = widget(at, "slider", "restore.ab_start")
    assert (start.max, start.value) == (60.0, 60.0)
    assert any('id="ab-player"' in html for html in iframes(at))
    # Numbers for people: one decimal for levels, whole clipped-sample counts, no "None".
    table = at.table[0].value
    assert all(re.fullmatch(r"-?\d+\.\d|[\d,]+|-∞|–", v) for v in table.to_numpy().ravel()), table
    assert table.loc["Clipped samples", "Restored"] == "0"
    assert [m.value for m in at.metric][3] == "-14.0 LUFS"


def test_upload_just_over_the_excerpt_length_shows_results(app_env):
    at = restore_upload(started(), "short.wav", 31.5)
    start = widget(at, "slider", "restore.ab_start")
    assert (start.max, start.value) == (1.5, 1.0)
    assert not [s for s in at.slider if s.key == "restore.ab_length"]      # no room for a longer excerpt
    assert any('id="ab-player"' in html for html in iframes(at))


def run_upload(at: AppTest, seconds: float = 3.0, name: str = "take.wav") -> AppTest:
    at.file_uploader[0].set_value((name, wav_bytes(seconds, 4), "audio/wav")).run()
    widget(at, "toggle", "restore.cfg.separate.bypass").set_value(True).run()
    widget(at, "button", "restore.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_copy_to_the_output_folder_is_atomic_and_its_failure_is_shown(app_env, tmp_path, monkeypatch):
    import errno
    import os
    import shutil

    out = tmp_path / "masters"
    app_env(output_dir=str(out))
    at = run_upload(started())                                 # a copy that works: the same bytes, no leftovers
    result = shown(at)
    assert Path(result["saved_copy"]) == out / "take_restored.wav"
    assert (out / "take_restored.wav").read_bytes() == Path(result["output"]).read_bytes()
    assert [p.name for p in out.iterdir()] == ["take_restored.wav"] and not at.error

    out2 = tmp_path / "full"
    copyfileobj, copyfile = shutil.copyfileobj, shutil.copyfile

    def where(f) -> Path:
        name = f if isinstance(f, str | Path) else f.name
        return Path(os.readlink(f"/proc/self/fd/{name}") if isinstance(name, int) else name)

    def disk_full(fsrc, fdst, *args, **kwargs):
        # Into the output folder, half the master gets written, then the disk is full (whichever
        # way the copy is made); everything else is copied as usual.
        if where(fdst).parent != out2:
            return (copyfileobj if hasattr(fdst, "write") else copyfile)(fsrc, fdst, *args, **kwargs)
        src = fsrc if hasattr(fsrc, "read") else open(fsrc, "rb")  # noqa: SIM115
        dst = fdst if hasattr(fdst, "write") else open(fdst, "wb")  # noqa: SIM115
        dst.write(src.read(1000))
        dst.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    app_env(output_dir=str(out2))
    at = started()
    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    monkeypatch.setattr(shutil, "copyfile", disk_full)
    run_upload(at)
    monkeypatch.undo()
    assert not any(out2.iterdir())                             # no truncated master, no temp file
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "not copied" in errors[0] and "No space left on device" in errors[0]
    widget(at, "slider", "restore.cfg.loudness.target_lufs").set_value(-16.0).run()
    assert [e.value for e in at.error] == errors               # still shown after other reruns


@pytest.mark.parametrize("content", ["[]", "null", "42", '"text"', "{not json", '{"device": 3, "models_dir": []}'])
def test_a_settings_file_that_is_not_an_object_falls_back_to_defaults(app_env, tmp_path, content):
    (tmp_path / "app.json").write_text(content)
    for page in PAGES:
        at = started(page)
        warnings = [w.value for w in at.warning]
        assert any("could not be used" in w and "Defaults are in use" in w for w in warnings), (page, warnings)
        if page == "app_pages/settings.py":
            assert widget(at, "radio", "settings.device").value == "auto"


def test_settings_are_validated_before_saving(app_env, tmp_path):
    at = started("app_pages/settings.py")
    widget(at, "text_input", "settings.models_dir").set_value(str(tmp_path / "no such folder"))
    button(at, "Save settings").click().run()
    assert not at.success and "does not exist" in at.error[0].value
    assert not (tmp_path / "app.json").exists()
    widget(at, "text_input", "settings.models_dir").set_value(str(tmp_path))
    widget(at, "text_input", "settings.output_dir").set_value(str(tmp_path / "app.json.d" / "masters"))
    button(at, "Save settings").click().run()
    assert at.success and not at.error
    assert json.loads((tmp_path / "app.json").read_text())["models_dir"] == str(tmp_path)


def test_a_broken_settings_file_is_replaced_by_saving(app_env, tmp_path):
    (tmp_path / "app.json").write_text("[]")
    at = started("app_pages/settings.py")
    assert at.warning
    button(at, "Save settings").click().run()
    assert at.success and json.loads((tmp_path / "app.json").read_text())["device"] == "auto"
    at.switch_page("app_pages/about.py").run()
    assert not at.warning


def test_session_cleanup_deletes_only_old_unused_sessions_of_its_own(app_env, tmp_path):
    import os
    import time

    root = tmp_path / "sessions"
    old = time.time() - 3 * 24 * 3600

    def aged(path: Path) -> Path:
        os.utime(path, (old, old))
        return path

    foreign = root / "my-recordings"
    (foreign / "keep.wav").parent.mkdir(parents=True)
    (foreign / "keep.wav").write_bytes(b"RIFF")
    aged(foreign / "keep.wav"), aged(foreign)
    at = started()
    busy = Path(at.session_state["session_dir"])               # a session in use: its own folder is old
    (busy / "jobs").mkdir()
    aged(busy / "jobs"), aged(busy)
    at.run()                                                   # the page runs: the session is in use
    abandoned = started()
    gone = Path(abandoned.session_state["session_dir"])
    for p in (*gone.iterdir(), gone):
        aged(p)
    started()                                                  # a new session cleans up
    assert (foreign / "keep.wav").read_bytes() == b"RIFF"      # never Resonate's: left alone
    assert busy.is_dir() and (busy / "jobs").is_dir()
    assert not gone.exists()


def test_results_survive_a_reload_with_history_and_an_out_of_date_notice(app_env):
    at = run_upload(started())
    first = shown(at)
    session = Path(at.session_state["session_dir"])
    assert at.query_params["session"] == [session.name] or at.query_params["session"] == session.name
    assert not [w for w in at.warning if "Out of date" in w.value]

    # A reload is a new Streamlit session with the same URL: the runs are found again.
    again = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    again.query_params["session"] = session.name
    again.run()
    assert not again.exception, [e.value for e in again.exception]
    assert Path(again.session_state["session_dir"]) == session and shown(again)["output"] == first["output"]
    assert [d.label for d in again.get("download_button")] == ["Download master (WAV 24-bit)"]
    assert len(again.get("plotly_chart")) == 2
    assert "take.wav" in again.markdown[0].value                   # the chosen recording too

    widget(again, "slider", "restore.cfg.loudness.target_lufs").set_value(-18.0).run()
    assert [w for w in again.warning if "Out of date" in w.value]
    widget(again, "button", "restore.run").click().run()
    assert not [w for w in again.warning if "Out of date" in w.value]
    runs = widget(again, "selectbox", "restore.result")
    assert len(runs.options) == 2 and shown(again)["report"]["output_loudness"]["integrated_lufs"] == \
        pytest.approx(-18.0, abs=0.5)
    runs.set_value(first["job_dir"]).run()                          # back to the first run: its results
    assert shown(again)["output"] == first["output"]
    assert [w for w in again.warning if "Out of date" in w.value]   # made with other settings


def test_an_interrupted_run_leaves_nothing_behind(app_env, monkeypatch):
    # Cancel (or leaving the page) interrupts the script at its next UI update with Streamlit's
    # StopException/RerunException; here the progress callback raises it halfway through restore.
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    from resonate.ui import runner

    update = runner.ProgressModel.update

    def interrupted(self, stage, fraction):
        if stage == "restore" and fraction > 0.3:
            raise StopException()
        update(self, stage, fraction)

    at = started()
    at.file_uploader[0].set_value(("take.wav", wav_bytes(20.0, 4), "audio/wav")).run()
    widget(at, "toggle", "restore.cfg.separate.bypass").set_value(True).run()
    monkeypatch.setattr(runner.ProgressModel, "update", interrupted)
    widget(at, "button", "restore.run").click().run()
    assert [b.label for b in at.button if b.key == "restore.cancel"] == ["Cancel"]     # offered while it ran
    monkeypatch.undo()
    session = Path(at.session_state["session_dir"])
    assert not list((session / "jobs").iterdir())                  # no job folder, no .part, no spool
    assert not [p for p in session.rglob("*") if p.name.endswith(".part") or p.name.startswith("resonate-")]
    at.run()
    assert not widget(at, "button", "restore.run").disabled and not at.get("download_button")


def test_batch_processes_two_files_with_per_file_downloads_warnings_and_ab(app_env, tmp_path):
    import soundfile

    folder = tmp_path / "gig"
    folder.mkdir()
    damaged = tone_mix(2.0, seed=3).T * 0.5
    damaged[1000] = np.nan                                  # the engine replaces it and warns
    soundfile.write(str(folder / "one.wav"), damaged, 44100, subtype="FLOAT")
    at = started("app_pages/batch.py")
    at.file_uploader[0].set_value([("one.wav", wav_bytes(3.0, 1), "audio/wav"),
                                   ("two.wav", wav_bytes(3.0, 2), "audio/wav")]).run()
    widget(at, "text_input", "batch.folder").set_value(str(folder)).run()
    widget(at, "toggle", "batch.cfg.separate.bypass").set_value(True).run()
    widget(at, "button", "batch.run").click().run()
    assert not at.exception, [e.value for e in at.exception]

    record = read_run(at.session_state["batch.result"])
    assert [f["name"] for f in record["files"]] == ["one.wav", "two.wav", "one.wav"]
    assert [Path(f["output"]).name for f in record["files"]] == [
        "one_restored.wav", "two_restored.wav", "one_restored_2.wav"]             # as the CLI names them
    table = at.table[0].value
    assert list(table.columns) == ["Status", "Loudness before", "Loudness after", "True peak after", "Length", "Time"]
    cells = table.to_numpy().ravel()
    assert "None" not in cells and not any("nan" in c for c in cells)
    assert list(table["Loudness after"])[:2] == ["-14.0 LUFS", "-14.0 LUFS"]
    assert table["Status"].iloc[2].startswith("done, ") and "warning" in table["Status"].iloc[2]
    assert [d.label for d in at.get("download_button")] == ["Download all (zip)"] + ["Download"] * 3
    assert any(w.value.startswith("one.wav: ") for w in at.warning)                # warnings on the page
    assert any('id="ab-player"' in html for html in iframes(at))
    widget(at, "selectbox", "batch.ab_file").set_value("1").run()
    assert not at.exception and any('id="ab-player"' in html for html in iframes(at))

    again = AppTest.from_file(APP, default_timeout=TIMEOUT_S)      # a reload: the batch is still there
    again.query_params["session"] = Path(at.session_state["session_dir"]).name
    again.run()
    again.switch_page("app_pages/batch.py").run()
    assert not again.exception and again.table[0].value.equals(table)
    assert len(again.get("download_button")) == 4


def test_an_interrupted_batch_leaves_nothing_behind(app_env, monkeypatch):
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    from resonate.ui import runner

    update, models = runner.ProgressModel.update, []

    def interrupted(self, stage, fraction):
        if not any(m is self for m in models):
            models.append(self)             # one progress model per file: stop halfway through the second
        if len(models) == 2 and stage == "restore" and fraction > 0.3:
            raise StopException()
        update(self, stage, fraction)

    at = started("app_pages/batch.py")
    at.file_uploader[0].set_value([("one.wav", wav_bytes(3.0, 1), "audio/wav"),
                                   ("two.wav", wav_bytes(3.0, 2), "audio/wav")]).run()
    widget(at, "toggle", "batch.cfg.separate.bypass").set_value(True).run()
    monkeypatch.setattr(runner.ProgressModel, "update", interrupted)
    widget(at, "button", "batch.run").click().run()
    assert [b.label for b in at.button if b.key == "batch.cancel"] == ["Cancel"]
    monkeypatch.undo()
    session = Path(at.session_state["session_dir"])
    assert not list((session / "jobs").iterdir())
    at.run()
    assert not widget(at, "button", "batch.run").disabled and not at.get("download_button")


def test_choosing_a_preset_sets_the_stage_controls(app_env):
    at = started()
    target = widget(at, "slider", "restore.cfg.loudness.target_lufs")
    assert target.value == -14.0
    target.set_value(-18.0).run()
    widget(at, "selectbox", "restore.preset").set_value("broadcast").run()
    assert widget(at, "slider", "restore.cfg.loudness.target_lufs").value == -23.0
    assert not at.exception


def test_save_as_preset_writes_a_toml_that_the_app_and_the_engine_load_back(app_env, tmp_path):
    from resonate.pipeline import ChainSettings, stage_configs

    at = started()
    widget(at, "slider", "restore.cfg.loudness.target_lufs").set_value(-20.0).run()
    widget(at, "toggle", "restore.cfg.master.highpass_on").set_value(False).run()
    widget(at, "toggle", "restore.cfg.separate.bypass").set_value(True).run()
    widget(at, "text_input", "restore.save_name").set_value("Club nights").run()
    widget(at, "button", "restore.save_preset").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    path = tmp_path / "presets" / "club-nights.toml"
    assert at.success and "club-nights" in at.success[0].value and path.is_file()
    assert widget(at, "selectbox", "restore.preset").value == str(path)
    assert widget(at, "slider", "restore.cfg.loudness.target_lufs").value == -20.0   # the controls stay

    configs = stage_configs(ChainSettings(str(path)))           # what the CLI's --preset FILE.toml gets
    assert configs["loudness"].target_lufs == -20.0 and not configs["master"].highpass_hz
    assert configs["master"].comp_ratio == 1.8 and configs["master"].linear_phase   # the rest of the preset

    other = started()                                           # another session offers it too
    picker = widget(other, "selectbox", "restore.preset")
    assert str(path) in picker.options or "club-nights (yours)" in picker.options
    picker.set_value(str(path)).run()
    assert widget(other, "slider", "restore.cfg.loudness.target_lufs").value == -20.0
    assert widget(other, "toggle", "restore.cfg.separate.bypass").value is True
    assert widget(other, "toggle", "restore.cfg.master.highpass_on").value is False

    widget(other, "text_input", "restore.save_name").set_value("concert").run()
    widget(other, "button", "restore.save_preset").click().run()
    assert "built-in" in other.error[0].value


def test_about_page_is_for_users_not_developers(app_env):
    at = started("app_pages/about.py")
    text = "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info])
    for stage in ("Separate", "Denoise", "Restore", "Master", "Loudness"):
        assert f"**{stage}**" in text
    assert "Demucs" in text and "Kevin MacLeod" in text and "Bach" in text         # credits, model and demo
    for dev in ("SI-SDR", "LSD", "validation", "steps", "configs/", "resonate/", ".py", ".yaml", "../shared",
                "safetensors", "parameters", "README"):
        assert dev not in text, dev


def test_models_load_once_per_server_for_every_session(app_env, monkeypatch):
    """The app hands every job its one model loader: a second session's run loads nothing again."""
    import resonate.models.io as restore_io

    calls = []
    real = restore_io.load_model
    monkeypatch.setattr(restore_io, "load_model", lambda *a: calls.append(a) or real(*a))
    clear_model_cache()
    first = run_upload(started())
    second = run_upload(started(), name="other.wav")
    assert shown(first)["report"]["stages"][2]["model"] and shown(second)["report"]["stages"][2]["model"]
    assert len(calls) == 1
