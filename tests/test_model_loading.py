"""Models come to the stages through the job environment's loader: loaded once per environment
(a CLI batch loads each model once for all its files), failures kept too."""

from __future__ import annotations

import pytest
import separation_fixtures
import soundfile as sf

from resonate import cli
from resonate.errors import StageUnavailable
from resonate.modelcache import ModelLoader
from tests.conftest import tone_mix

tiny_models = separation_fixtures.tiny_models
single_thread = separation_fixtures.single_thread


def test_a_loader_loads_once_per_arguments_and_keeps_failures():
    calls = []

    def load(name, where=None):
        calls.append((name, where))
        if name == "missing":
            raise StageUnavailable(f"no weights for {name}")
        return object()

    loader = ModelLoader(max_entries=2)
    a = loader.load(load, "a", None)
    assert loader.load(load, "a", None) is a and loader.load(load, "a", "elsewhere") is not a
    for _ in range(2):
        with pytest.raises(StageUnavailable, match="no weights for missing"):
            loader.load(load, "missing")
    assert calls == [("a", None), ("a", "elsewhere"), ("missing", None)]
    loader.load(load, "a", None)                 # dropped as the least recently used: loaded again
    assert len(calls) == 4 and loader.loads == 4
    none_kept = ModelLoader(max_entries=0)
    assert none_kept.load(load, "b") is not none_kept.load(load, "b")


def test_a_cli_batch_loads_each_model_once(tmp_path, tiny_models, single_thread, monkeypatch, capsys):
    import resonate.models.io as restore_io
    import resonate.stages.separate as separate_stage

    loads = []
    for module in (restore_io, separate_stage):
        real = module.load_model
        monkeypatch.setattr(module, "load_model",
                            lambda *a, real=real, module=module: loads.append(module.__name__) or real(*a))
    inputs = []
    for seed in range(3):
        inputs.append(tmp_path / f"in{seed}.wav")
        sf.write(str(inputs[-1]), tone_mix(1.5, 44100, 2, seed=seed).T, 44100)
    code = cli.main(["restore", *map(str, inputs), "-o", str(tmp_path / "out"), "--models-dir", str(tiny_models),
                     "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert len(list((tmp_path / "out").iterdir())) == 3
    assert sorted(loads) == ["resonate.models.io", "resonate.stages.separate"]
