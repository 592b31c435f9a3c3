"""One source of truth per setting: each config field declares its label, unit, help and range
once; the engine refuses a value outside it with one error, whichever way the value came (a
command-line flag, a preset file, the app), and the CLI's help is read from the declaration."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from resonate import cli
from resonate.config import config_from_dict, settings_info
from resonate.errors import ResonateError
from resonate.pipeline import ChainSettings, process_file, stage_configs
from resonate.presets import load_preset
from resonate.stages import load_registry
from tests.conftest import tone_mix

OUT_OF_RANGE = "invalid settings in [loudness]: max_compensation_db must be between 0 and 24 dB, got 30"


def cli_error(capsys, *args) -> str:
    """The CLI run in this process: exit status 2 and its one error line."""
    assert cli.main([str(a) for a in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ")
    return lines[-1].removeprefix("error: ")


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "in.wav"
    sf.write(str(path), tone_mix(1, 22050, 1).T, 22050)
    return path


def test_every_declared_range_holds_its_default_and_every_setting_is_described():
    for name, stage in load_registry().items():
        declared = settings_info(stage.Config)
        for field, info in declared.items():
            default = getattr(stage.Config(), field)
            assert info.label and (info.range is None or info.range[0] <= default <= info.range[1]), (name, field)
    assert set(settings_info(load_registry()["loudness"].Config)) >= {"target_lufs", "true_peak_dbtp",
                                                                      "max_compensation_db"}


def test_the_cli_help_reads_the_range_from_the_setting(capsys):
    with pytest.raises(SystemExit):
        cli.main(["restore", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--target-lufs TARGET_LUFS -60..0 LUFS, integrated loudness" in text
    assert "--restore-strength RESTORE_STRENGTH 0..1, wet/dry" in text
    assert "--denoise-strength DENOISE_STRENGTH 0..1, spectral gating" in text


def test_out_of_range_value_is_refused_the_same_way_from_a_flag_and_a_preset_file(tmp_path, src, capsys):
    preset = tmp_path / "mine.toml"
    preset.write_text("[loudness]\nmax_compensation_db = 30\n")
    from_flag = cli_error(capsys, "restore", src, "-o", tmp_path / "a.wav", "--set", "loudness.max_compensation_db=30")
    from_file = cli_error(capsys, "restore", src, "-o", tmp_path / "b.wav", "--preset", preset)
    with pytest.raises(ResonateError) as engine:
        process_file(src, tmp_path / "c.wav", ChainSettings(str(preset)))
    assert from_flag == from_file == str(engine.value) == OUT_OF_RANGE
    assert not list(tmp_path.glob("?.wav"))


@pytest.mark.parametrize("stage", ["restore", "denoise"])
def test_strengths_out_of_range_are_refused_alike(tmp_path, src, capsys, stage):
    message = cli_error(capsys, "restore", src, "-o", tmp_path / "o.wav", f"--{stage}-strength", "1.5")
    assert message == f"invalid settings in [{stage}]: strength must be between 0 and 1, got 1.5"


def test_set_takes_any_setting_as_a_preset_writes_it(capsys, tmp_path, src):
    args = cli.build_parser().parse_args(["restore", "x.wav", "-o", "y.wav", "--set", "loudness.max_compensation_db=9",
                                          "--set", "separate.model=htdemucs_ft", "--set", "master.compressor=false"])
    overrides = cli._overrides(args)
    assert overrides == {"loudness": {"max_compensation_db": 9}, "separate": {"model": "htdemucs_ft"},
                         "master": {"compressor": False}}
    configs = stage_configs(ChainSettings(overrides=overrides))
    assert configs["loudness"].max_compensation_db == 9.0 and configs["master"].compressor is False
    assert "unknown setting nope in [loudness]" in cli_error(capsys, "restore", src, "-o", tmp_path / "o.wav",
                                                             "--set", "loudness.nope=1")
    assert "STAGE.SETTING=VALUE" in cli_error(capsys, "restore", src, "-o", tmp_path / "o.wav", "--set", "loudness=1")


def test_a_range_error_names_the_stage_table_whatever_the_preset_is_called():
    cls = load_registry()["restore"].Config
    for where in ("restore", "concert.restore", "/home/me/my.presets/club.toml.restore"):
        with pytest.raises(ResonateError, match=r"^invalid settings in \[restore\]: strength must be between"):
            config_from_dict(cls, {"strength": 2}, where)


def test_the_preset_skip_key_is_honoured_and_skip_adds_to_it(tmp_path, src):
    preset = tmp_path / "quick.toml"
    preset.write_text('skip = ["separate", "restore"]\n')
    assert ChainSettings(str(preset)).skip == ("separate", "restore")
    assert ChainSettings(str(preset)).bypassing(["denoise", "restore"]).skip == ("separate", "restore", "denoise")
    assert ChainSettings(str(preset), skip=()).skip == ()              # the app's toggles can undo it
    report = process_file(src, tmp_path / "o.wav", ChainSettings(str(preset)))
    assert [s["name"] for s in report["stages"] if s.get("reason") == "bypassed"] == ["separate", "restore"]
    preset.write_text('skip = "separate"\n')
    with pytest.raises(ResonateError, match="skip must be a list of stage names"):
        ChainSettings(str(preset))


def test_a_preset_file_is_read_once_per_version(tmp_path, monkeypatch):
    import tomllib

    reads = []
    real = tomllib.load
    monkeypatch.setattr(tomllib, "load", lambda f: reads.append(f.name) or real(f))
    preset = tmp_path / "p.toml"
    preset.write_text("[loudness]\ntarget_lufs = -16.0\n")
    first = load_preset(str(preset))
    first["loudness"]["target_lufs"] = 0.0              # a caller's change stays its own
    for _ in range(4):
        assert load_preset(str(preset))["loudness"]["target_lufs"] == -16.0
    assert len(reads) == 1
    preset.write_text("[loudness]\ntarget_lufs = -20.0\n")     # another size: read again
    assert load_preset(str(preset))["loudness"]["target_lufs"] == -20.0 and len(reads) == 2


def test_the_app_refuses_an_out_of_range_value_with_the_same_error(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from resonate.ui.models import clear_model_cache

    monkeypatch.setenv("RESONATE_APP_CONFIG", str(tmp_path / "app.json"))
    monkeypatch.setenv("RESONATE_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("RESONATE_CACHE_DIR", str(tmp_path / "cache"))
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=240)
        at.run()
        # The sliders span exactly the ranges the engine accepts, labelled from the same declaration.
        loudness = load_registry()["loudness"].Config
        for name in ("target_lufs", "true_peak_dbtp"):
            slider = next(w for w in at.slider if w.key == f"restore.cfg.loudness.{name}")
            info = settings_info(loudness)[name]
            assert (slider.min, slider.max, slider.label) == (*info.range, info.title)
        next(w for w in at.toggle if w.key == "restore.cfg.loudness.advanced").set_value(True).run()
        next(w for w in at.number_input if w.key == "restore.cfg.loudness.max_compensation_db").set_value(30.0).run()
        assert not at.exception, [e.value for e in at.exception]
        assert OUT_OF_RANGE in [e.value for e in at.error]
    finally:
        clear_model_cache()

