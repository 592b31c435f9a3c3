"""Community Roformer models as modes of the separate stage, with tiny random models of the real
architectures (bs-roformer's MelBandRoformer and BSRoformer) saved by the tests in the community's
published format (YAML config + state dict with MSST's key names) and catalogued with file:// URLs.
"""

from __future__ import annotations

import http.server
import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from separation_fixtures import one_torch_thread, show_signal

from resonate.chunking import crossfade_weights
from resonate.cli import main
from resonate.errors import ResonateError, StageUnavailable
from resonate.pipeline import ChainSettings, process_file, stage_configs
from resonate.separation import community
from resonate.separation.testing import TINY_ROFORMERS, make_tiny_community_models
from resonate.stages.base import StageContext
from resonate.stages.separate import SeparateConfig, SeparateStage

SR = 44100
CROWD, DEREVERB = "tiny_crowd_melband", "tiny_dereverb_bs"


@pytest.fixture(autouse=True)
def single_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """The tiny models' files, as their authors would publish them, and a pinned catalogue of them."""
    return make_tiny_community_models(tmp_path_factory.mktemp("published"))


@pytest.fixture
def models_dir(published, tmp_path, monkeypatch) -> Path:
    """A models folder holding both tiny models, fetched through the catalogue (file:// URLs)."""
    monkeypatch.setenv(community.CATALOGUE_ENV, str(published))
    folder = tmp_path / "models"
    for name in TINY_ROFORMERS:
        community.fetch(name, folder)
    return folder


def stage_run(model: str, models_dir: Path, x: np.ndarray, block: int = 7919, **config) -> tuple[SeparateStage, np.ndarray]:
    stage = SeparateStage(SeparateConfig(model=model, preset="neutral", cache=False, **config))
    stage.open(StageContext(sample_rate=SR, channels=x.shape[0], total_frames=x.shape[-1], models_dir=models_dir))
    out = list(stage.stream(iter([x[:, i:i + block] for i in range(0, x.shape[-1], block)])))
    return stage, np.concatenate(out, axis=-1)


def test_checkpoints_in_the_community_format_load_into_bs_roformer_networks(models_dir):
    for name, (architecture, _, _, _, removes) in TINY_ROFORMERS.items():
        folder = community.model_folder(community.entry(name), models_dir)
        saved = torch.load(folder / f"{name}.ckpt", weights_only=True)
        # MSST's names: no residual wrapper in the keys, time transformer in slot 0 of a layer.
        assert not any(".branch." in k for k in saved) and "layers.0.0.layers.0.0.to_qkv.weight" in saved
        config = community.read_config(folder / f"{name}.yaml")
        assert config["model"]["multi_stft_resolutions_window_sizes"] == (256, 128)      # !!python/tuple read
        loaded = community.load(name, models_dir)
        assert type(loaded.network).__module__.startswith("bs_roformer.")
        assert (loaded.samplerate, loaded.audio_channels, loaded.chunk_size) == (44100, 2, 10240)
        # Every saved tensor is in the network, under the package's own name.
        state = loaded.network.state_dict()
        for key, value in community.to_package_keys(saved, architecture, 0).items():
            assert torch.equal(state[key], value), key
        assert loaded.model.stems == ("music", removes)


@pytest.mark.parametrize("name", [CROWD, DEREVERB])
def test_windowed_stream_equals_a_whole_file_run_away_from_seams(models_dir, name):
    x = show_signal(1.3)
    stage, y = stage_run(name, models_dir, x, keep_percent=0.0, overlap=0.25)
    assert y.shape == x.shape and y.dtype == np.float32
    loaded = stage.model
    chunk, fade = loaded.chunk_size, stage.plan.overlap
    hop = chunk - fade
    assert stage.plan.window == chunk and fade == round(0.25 * chunk)

    def music_of(segment: np.ndarray) -> np.ndarray:
        """One model pass on a whole stretch held in memory, then mix minus what it removes."""
        padded = np.zeros((2, chunk), np.float32)
        padded[:, : segment.shape[-1]] = segment
        with torch.inference_mode():
            out = loaded.network(torch.from_numpy(padded)[None])[0].numpy()
        removed = out if loaded.model.removes in loaded.outputs else padded - out
        return (padded - removed)[:, : segment.shape[-1]]

    # Away from the seams, each stretch is exactly the model run on its own window of the file.
    for k in range(x.shape[-1] // hop):
        start = k * hop
        inner = slice(start + (fade if k else 0), min(start + hop, x.shape[-1]))
        expected = music_of(x[:, start:start + chunk])[:, inner.start - start: inner.stop - start]
        np.testing.assert_allclose(y[:, inner], expected, atol=2e-5)
    # At a seam: the two windows' estimates, crossfaded with weights that sum to one.
    w = crossfade_weights(chunk, fade)[:fade]
    a = music_of(x[:, 0:chunk])[:, hop:chunk]
    b = music_of(x[:, hop:hop + chunk])[:, :fade]
    np.testing.assert_allclose(y[:, hop:chunk], (1 - w) * a + w * b, atol=2e-5)
    assert stage.report()["windows"] == stage.separator.windows == -(-(x.shape[-1] - fade) // hop)


@pytest.mark.parametrize("name", [CROWD, DEREVERB])
def test_keep_percent_puts_that_share_of_the_removed_part_back(models_dir, name):
    x = show_signal(0.8, seed=3)
    _, none_kept = stage_run(name, models_dir, x, keep_percent=0.0)
    _, all_kept = stage_run(name, models_dir, x, keep_percent=100.0)
    stage, some_kept = stage_run(name, models_dir, x, keep_percent=30.0)
    removed = x - none_kept
    assert np.abs(removed).max() > 1e-3                     # the random model does remove something
    np.testing.assert_allclose(all_kept, x, atol=2e-5)      # music + everything removed = the recording
    np.testing.assert_allclose(some_kept, none_kept + 0.3 * removed, atol=2e-5)
    assert stage.report()["stems"] == ["music", TINY_ROFORMERS[name][4]]
    assert stage.report()["keep_percent"] == 30.0 and stage.report()["precision"] == "fp32"
    with pytest.raises(ResonateError, match="keep_percent must be between 0 and 100"):
        stage_configs(ChainSettings(overrides={"separate": {"keep_percent": 130}}))


def test_a_tampered_or_unpickling_file_is_refused(models_dir, published, tmp_path, monkeypatch, write_wav):
    weights = community.model_folder(community.entry(CROWD), models_dir) / f"{CROWD}.ckpt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(StageUnavailable, match="refused to load .*SHA-256"):
        community.load(CROWD, models_dir)
    src = write_wav(show_signal(1.0))
    report = process_file(src, tmp_path / "out.wav", ChainSettings(
        overrides={"separate": {"model": CROWD}}, skip=("restore",)), models_dir=models_dir, cache_dir=tmp_path / "c")
    sep = next(s for s in report["stages"] if s["name"] == "separate")
    assert sep["skipped"] and "SHA-256" in sep["reason"]

    # A file whose hash was trusted, but which asks to call something when unpickled: never run.
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    unpinned = make_tiny_community_models(tmp_path / "unpinned", pinned=False)
    monkeypatch.setenv(community.CATALOGUE_ENV, str(unpinned))
    folder = community.model_folder(community.entry(DEREVERB), tmp_path / "m2")
    folder.mkdir(parents=True)
    (folder / f"{DEREVERB}.ckpt").write_bytes(pickle.dumps({"layers.0": Payload()}))
    (folder / f"{DEREVERB}.yaml").write_text((unpinned.parent / "files" / f"{DEREVERB}.yaml").read_text())
    with pytest.raises(ResonateError, match="--trust-unpinned"):
        community.fetch(DEREVERB, tmp_path / "m2")                       # no hash to check: refused
    community.fetch(DEREVERB, tmp_path / "m2", trust_unpinned=True)      # the user trusts it...
    with pytest.raises(StageUnavailable, match="not a plain tensor checkpoint"):
        community.load(DEREVERB, tmp_path / "m2")                        # ...and it is still not unpickled


def test_missing_weights_skip_the_step_with_the_reason_in_the_report(published, tmp_path, monkeypatch, write_wav):
    monkeypatch.setenv(community.CATALOGUE_ENV, str(published))
    empty = tmp_path / "models"
    src = write_wav(show_signal(1.0))
    report = process_file(src, tmp_path / "out.wav", ChainSettings(
        overrides={"separate": {"model": CROWD}}, skip=("restore",)), models_dir=empty, cache_dir=tmp_path / "c")
    sep = next(s for s in report["stages"] if s["name"] == "separate")
    assert sep["skipped"]
    assert f"models fetch {CROWD}" in sep["reason"] and str(empty / "community" / CROWD) in sep["reason"]
    assert sf.info(str(tmp_path / "out.wav")).frames == SR


def test_pipeline_runs_a_community_mode_and_reports_it_like_demucs(models_dir, tmp_path, write_wav):
    src = write_wav(show_signal(1.5), name="gig.wav")
    report = process_file(src, tmp_path / "out.wav", ChainSettings(
        overrides={"separate": {"model": CROWD, "keep_percent": 30}}, skip=("restore", "denoise")),
        models_dir=models_dir, stems_dir=tmp_path / "stems", cache_dir=tmp_path / "cache")
    sep = next(s for s in report["stages"] if s["name"] == "separate")
    assert not sep["skipped"] and sep["model"] == CROWD and sep["kind"] == "community"
    assert sep["removes"] == "crowd" and sep["keep_percent"] == 30 and sep["windows"] >= 1 and sep["model_rtf"] > 0
    assert sep["cache"] == "stored" and "licence" in sep
    assert sorted(p.name for p in (tmp_path / "stems").iterdir()) == ["gig-crowd.wav", "gig-music.wav"]
    again = process_file(src, tmp_path / "out2.wav", ChainSettings(
        overrides={"separate": {"model": CROWD, "keep_percent": 60}}, skip=("restore", "denoise")),
        models_dir=models_dir, cache_dir=tmp_path / "cache")
    assert next(s for s in again["stages"] if s["name"] == "separate")["cache"] == "hit"


def test_cli_lists_and_fetches_from_a_local_catalogue(published, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(community.CATALOGUE_ENV, str(published))
    models = tmp_path / "models"
    assert main(["models", "list", "--models-dir", str(models)]) == 0
    listing = capsys.readouterr().out
    for name in TINY_ROFORMERS:
        assert f"{name}  [not on this machine]" in listing
    assert "removes crowd noise" in listing and "licence: none (random weights" in listing
    assert main(["models", "fetch", CROWD, "--models-dir", str(models)]) == 0
    assert f"--set separate.model={CROWD}" in capsys.readouterr().out
    assert main(["models", "list", "--models-dir", str(models)]) == 0
    assert f"{CROWD}  [on this machine]" in capsys.readouterr().out
    assert not list((models / "community" / CROWD).glob(".*partial*"))

    # Offline (the URL cannot be reached): one error line that says where to put the files by hand.
    broken = tmp_path / "broken.toml"
    broken.write_text(published.read_text().replace("/files/", "/nowhere/"))
    monkeypatch.setenv(community.CATALOGUE_ENV, str(broken))
    assert main(["models", "fetch", DEREVERB, "--models-dir", str(models)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cannot download") and str(models / "community" / DEREVERB) in err
    assert not (models / "community" / DEREVERB / f"{DEREVERB}.ckpt").exists()


def test_fetch_over_http_checks_the_hash_and_records_an_unpinned_one(published, tmp_path, monkeypatch, capsys):
    files = published.parent / "files"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(files), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        pinned = published.read_text().replace(files.as_uri() + "/", url)
        catalogue = tmp_path / "http.toml"
        catalogue.write_text(pinned)
        monkeypatch.setenv(community.CATALOGUE_ENV, str(catalogue))
        assert main(["models", "fetch", DEREVERB, "--models-dir", str(tmp_path / "a")]) == 0
        community.load(DEREVERB, tmp_path / "a")

        # A pinned hash that the served file does not have: refused, nothing left under the name.
        sha = community.entry(DEREVERB).sha256
        catalogue.write_text(pinned.replace(sha, "0" * 64))
        assert main(["models", "fetch", DEREVERB, "--models-dir", str(tmp_path / "b")]) == 2
        assert "not the expected" in capsys.readouterr().err
        assert not (tmp_path / "b" / "community" / DEREVERB / f"{DEREVERB}.ckpt").exists()

        # No published hash: only with --trust-unpinned, which records the hash of what came.
        catalogue.write_text(pinned.replace(sha, ""))
        assert main(["models", "fetch", DEREVERB, "--models-dir", str(tmp_path / "c")]) == 2
        assert "--trust-unpinned" in capsys.readouterr().err
        assert main(["models", "fetch", DEREVERB, "--models-dir", str(tmp_path / "c"), "--trust-unpinned"]) == 0
        record = json.loads((tmp_path / "c" / "community" / DEREVERB / community.TRUST_RECORD).read_text())
        assert record["weights_sha256"] == sha
        community.load(DEREVERB, tmp_path / "c")
    finally:
        server.shutdown()


def test_configs_the_package_cannot_build_are_refused_not_approximated(models_dir):
    folder = community.model_folder(community.entry(CROWD), models_dir)
    config_file = folder / f"{CROWD}.yaml"
    config = community.read_config(config_file)
    config["model"]["skip_connection"] = True
    config_file.write_text(yaml.safe_dump(json.loads(json.dumps(config))))
    with pytest.raises(StageUnavailable, match="skip_connection"):
        community.load(CROWD, models_dir)
    config["model"].pop("skip_connection")
    config["model"]["some_new_option"] = 3
    config_file.write_text(yaml.safe_dump(json.loads(json.dumps(config))))
    with pytest.raises(StageUnavailable, match="some_new_option"):
        community.load(CROWD, models_dir)


def test_settings_page_lists_the_models_and_downloads_only_on_click(published, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(community.CATALOGUE_ENV, str(published))
    monkeypatch.setenv("RESONATE_APP_CONFIG", str(tmp_path / "app.json"))
    monkeypatch.setenv("RESONATE_SESSIONS_DIR", str(tmp_path / "sessions"))
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "app.json").write_text(json.dumps({"models_dir": str(models)}))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/settings.py").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    for name, (_, _, _, _, removes) in TINY_ROFORMERS.items():
        assert f"**{name}** · not on this machine · {community.PURPOSES[removes]}" in text
    assert "not on this machine" in text and "none (random weights made by the tests)" in text
    assert not (models / "community").exists()                         # nothing fetched by looking
    download = next(b for b in at.button if b.key == f"settings.community.{CROWD}.fetch")
    download.click().run()
    assert not at.exception and at.success
    assert community.on_this_machine(community.entry(CROWD), models)
    assert not community.on_this_machine(community.entry(DEREVERB), models)
    text = " ".join(m.value for m in at.markdown)
    assert f"{CROWD}** · on this machine" in text.replace("`", "")


def test_restore_page_picker_offers_community_models_with_licence_and_download(published, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(community.CATALOGUE_ENV, str(published))
    monkeypatch.setenv("RESONATE_APP_CONFIG", str(tmp_path / "app.json"))
    monkeypatch.setenv("RESONATE_SESSIONS_DIR", str(tmp_path / "sessions"))
    models = tmp_path / "models"
    (tmp_path / "app.json").write_text(json.dumps({"models_dir": str(models)}))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.run()
    picker = next(s for s in at.selectbox if s.key == "restore.cfg.separate.model")
    assert any(f"{CROWD} (crowd removal" in o and "not on this machine" in o for o in picker.options)
    assert any(f"{DEREVERB} (reverb removal" in o and "not on this machine" in o for o in picker.options)
    picker.set_value(CROWD).run()
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "Licence: none (random weights made by the tests)" in captions
    assert any(s.key == "restore.cfg.separate.keep_percent" for s in at.slider)
    next(b for b in at.button if b.key == f"restore.community.{CROWD}.fetch").click().run()
    assert not at.exception
    assert community.on_this_machine(community.entry(CROWD), models)
    picker = next(s for s in at.selectbox if s.key == "restore.cfg.separate.model")
    assert any(f"{CROWD} (crowd removal" in o and ", on this machine)" in o for o in picker.options)


def test_the_readme_lists_every_catalogued_model_with_its_licence(monkeypatch):
    monkeypatch.delenv(community.CATALOGUE_ENV, raising=False)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {line.split("`")[1]: line for line in readme.splitlines() if line.startswith("| `")}
    for name, model in community.catalogue().items():
        assert name in rows, name
        assert model.licence.split(" (")[0] in rows[name], (name, model.licence)
        assert f"| {model.purpose} |" in rows[name]
