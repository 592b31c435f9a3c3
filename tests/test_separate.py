"""The separate stage with a tiny random Demucs loaded from a local model folder, as users do offline."""

from __future__ import annotations

import dataclasses
import os
import time
from fractions import Fraction

import numpy as np
import pytest
import separation_fixtures
import soundfile as sf
import torch
from demucs.apply import BagOfModels, apply_model
from separation_fixtures import SHOW_CONFIG, SR, run_stage, show_signal

import resonate.separation.models as sep_models
import resonate.separation.runner as sep_runner
from resonate.chunking import Counter, exact_length
from resonate.errors import ResonateError, StageUnavailable
from resonate.pipeline import ChainSettings, OutputOptions, process_file
from resonate.separation import cache_size_bytes, clear_cache
from resonate.separation.cache import StemCacheWriter, enforce_cap, lookup
from resonate.separation.models import describe, load_model
from resonate.separation.runner import plan_windows, separate_stream
from resonate.stages.base import StageContext
from resonate.stages.separate import SeparateConfig, SeparateStage

tiny_models = separation_fixtures.tiny_models
separated_show = separation_fixtures.separated_show
single_thread = separation_fixtures.single_thread
pytestmark = pytest.mark.usefixtures("single_thread")


def test_tiny_models_load_through_demucs_local_repo(tiny_models):
    four = load_model("htdemucs", tiny_models)
    six = load_model("htdemucs_6s", tiny_models)
    assert isinstance(four, BagOfModels)
    assert describe(four, "htdemucs").sources == ("drums", "bass", "other", "vocals")
    assert describe(six, "htdemucs_6s").sources == ("drums", "bass", "other", "vocals", "guitar", "piano")
    assert describe(four, "htdemucs").samplerate == 44100


def test_window_plan_sits_on_demucs_segment_grid():
    # htdemucs: 7.8 s segments, 25 % overlap -> stride of 257985 samples at 44.1 kHz.
    plan = plan_windows(44100, Fraction(39, 5), 0.25, 60.0)
    assert (plan.segment_length, plan.stride) == (343980, 257985)
    assert plan.hop % plan.stride == 0
    assert plan.overlap == plan.segment_length
    assert abs(plan.window / 44100 - 60.0) < plan.stride / 44100
    short = plan_windows(44100, 1, 0.25, 0.5)           # never shorter than OverlapAdd allows
    assert short.hop >= short.overlap


def test_stem_names_shapes_and_rate_conversion(tiny_models, tmp_path):
    """48 kHz mono in: six stems out as mono 48 kHz files of the input's exact length."""
    sr = 48000
    x = show_signal(2.3, sr=sr, channels=1)
    ctx = StageContext(sample_rate=sr, channels=1, total_frames=x.shape[-1], models_dir=tiny_models,
                       input_path=None, stems_dir=tmp_path / "stems", output_format={"format": "wav", "bit_depth": "16"})
    stage, y = run_stage(SeparateConfig(model="htdemucs_6s", window_seconds=2.0, cache=False), ctx, x, block=5000)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert stage.report()["stems"] == ["drums", "bass", "other", "vocals", "guitar", "piano"]
    assert stage.report()["cache"].startswith("off")
    names = sorted(p.name for p in (tmp_path / "stems").iterdir())
    assert names == sorted(f"stems-{s}.wav" for s in stage.report()["stems"])
    for p in (tmp_path / "stems").iterdir():
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.frames) == (sr, 1, x.shape[-1])


def test_fixed_shape_windows_and_round_trip_resampling():
    """On MPS every window has one shape; the rate/channel conversions around the model are transparent."""
    sr, n = 48000, 48000 * 3 + 123
    t = np.arange(n) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 9000 * t))[None].astype(np.float32)
    shapes = []

    def halves(window):                  # stands in for the model: two "stems", each half the mix
        shapes.append(window.shape)
        return np.stack([0.5 * window, 0.5 * window])

    plan = plan_windows(44100, 0.5, 0.25, 1.2)
    source = Counter([x[:, i:i + 7000] for i in range(0, n, 7000)])
    stems = exact_length(separate_stream(iter(source), halves, n_stems=2, in_rate=sr, in_channels=1, model_rate=44100,
                                         model_channels=2, plan=plan, fixed_shape=True), source, (2, 1))
    y = np.concatenate(list(stems), axis=-1)
    assert len(set(shapes)) == 1 and shapes[0] == (2, plan.window)
    assert y.shape == (2, 1, n)
    # soxr VHQ to 44.1 kHz and back is transparent for content below 20 kHz.
    err = y[:, :, 2000:-2000] - 0.5 * x[None, :, 2000:-2000]
    assert np.abs(err).max() < 1e-3


def test_windowed_equals_whole_file_except_crossfaded_seams(separated_show, tiny_models):
    show = separated_show
    model = load_model("htdemucs", tiny_models)
    whole = apply_model(model, torch.from_numpy(show.x)[None], shifts=0, overlap=0.25)[0].numpy()
    windowed = np.stack([show.stems[s] for s in ("drums", "bass", "other", "vocals")])
    assert windowed.shape == whole.shape

    plan = plan_windows(SR, 1, 0.25, SHOW_CONFIG["window_seconds"])
    n, tail = show.x.shape[-1], plan.segment_length - plan.stride
    seams = np.zeros(n, dtype=bool)
    for p in range(plan.hop, n, plan.hop):
        # Where one side of a crossfade has an incomplete model segment: the new window's first
        # segment lacks its left neighbour, the old window's last one runs past its end.
        seams[p: p + tail] = True
        seams[p + plan.stride: p + plan.overlap] = True
    assert seams.sum() < 0.25 * n
    err = np.abs(windowed - whole).max(axis=(0, 1))
    peak = np.abs(whole).max()
    assert err[~seams].max() < 1e-5 * peak                  # bit-for-bit the whole-file separation
    # At the seams two valid estimates are crossfaded: no step, no burst (a hard cut would leave
    # errors near the signal's peak there).
    assert err[seams].max() < 0.05 * peak
    assert np.abs(np.diff(windowed - whole, axis=-1)).max() < 0.05 * peak


def test_untouched_stems_remix_to_the_models_own_sum(separated_show):
    show = separated_show
    total = sum(show.stems.values())
    np.testing.assert_allclose(show.y, total, atol=1e-6)
    assert show.report["cache"] == "stored"
    assert show.report["model"] == "htdemucs" and show.report["device"] == "cpu"
    assert show.report["windows"] == 3 and show.report["model_seconds"] > 0


def _counting(monkeypatch):
    calls = {"apply_model": 0, "get_model": 0}

    def count(module, name):
        real = getattr(module, name)

        def wrapper(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        monkeypatch.setattr(module, name, wrapper)

    count(sep_runner, "apply_model")
    count(sep_models, "get_model")
    return calls


def test_cache_hit_skips_the_model_when_only_remix_settings_change(separated_show, monkeypatch, tmp_path):
    show = separated_show
    calls = _counting(monkeypatch)
    ctx = dataclasses.replace(show.ctx, stems_dir=None)
    stage, y = run_stage(SeparateConfig(**SHOW_CONFIG), ctx, show.x, block=3000)   # other block size, same stems
    assert calls == {"apply_model": 0, "get_model": 0}
    assert stage.report()["cache"] == "hit"
    np.testing.assert_array_equal(y, show.y)

    # Options that change the stems are part of the key: that is a miss, and the model loads.
    other = SeparateStage(SeparateConfig(**{**SHOW_CONFIG, "window_seconds": 5.0}))
    other.open(ctx)
    assert other.entry is None and calls["get_model"] == 1

    # Another file's content with the same name is a miss too.
    changed = tmp_path / "show.wav"
    sf.write(str(changed), (show.x * 0.5).T, SR, subtype="FLOAT")
    moved = SeparateStage(SeparateConfig(**SHOW_CONFIG))
    moved.open(dataclasses.replace(ctx, input_path=changed))
    assert moved.entry is None


def test_per_stem_gains_land_on_their_stems(separated_show):
    show = separated_show
    gains_db = {"vocals": 6.0, "drums": -6.0, "bass": -20.0}
    ctx = dataclasses.replace(show.ctx, stems_dir=None)
    _, y = run_stage(SeparateConfig(**SHOW_CONFIG, gains_db=gains_db), ctx, show.x)
    expected = sum(show.stems[s] * 10 ** (gains_db.get(s, 0.0) / 20) for s in show.stems)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_per_stem_denoise_changes_only_its_stem(separated_show, tmp_path):
    show = separated_show
    ctx = dataclasses.replace(show.ctx, stems_dir=tmp_path)
    stage, y = run_stage(SeparateConfig(**SHOW_CONFIG, denoise={"other": 0.9}), ctx, show.x)
    gated = sf.read(next(p for p in stage.report()["stem_files"] if p.endswith("-other.wav")),
                    dtype="float32", always_2d=True)[0].T
    untouched = show.stems["drums"] + show.stems["bass"] + show.stems["vocals"]
    np.testing.assert_allclose(y, untouched + gated, atol=1e-5)
    raw = show.stems["other"]
    assert np.sqrt(np.mean(gated ** 2)) < 0.9 * np.sqrt(np.mean(raw ** 2))


def test_unknown_stem_in_settings_is_a_clear_error(separated_show):
    stage = SeparateStage(SeparateConfig(**SHOW_CONFIG, gains_db={"guitar": 3.0}))
    with pytest.raises(ResonateError, match="guitar.*drums, bass, other, vocals"):
        stage.open(separated_show.ctx)


def test_missing_weights_name_the_files_and_the_chain_still_completes(tmp_path, write_wav):
    empty = tmp_path / "models"
    empty.mkdir()
    stage = SeparateStage()
    ctx = StageContext(sample_rate=SR, channels=2, models_dir=empty)
    with pytest.raises(StageUnavailable) as exc:
        stage.open(ctx)
    msg = str(exc.value)
    assert f"missing from {empty}" in msg and "htdemucs.yaml" in msg
    assert "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th" in msg

    src = write_wav(show_signal(1.5))
    report = process_file(src, tmp_path / "out.wav", ChainSettings(skip=("restore",)), models_dir=empty,
                          cache_dir=tmp_path / "cache")
    sep = next(s for s in report["stages"] if s["name"] == "separate")
    assert sep["skipped"] and "htdemucs.yaml" in sep["reason"]
    assert sf.info(str(tmp_path / "out.wav")).frames == int(1.5 * SR)


def test_pipeline_reports_the_stage_and_writes_stems(tiny_models, tmp_path, write_wav):
    src = write_wav(show_signal(2.0), name="gig.wav")
    report = process_file(src, tmp_path / "out.mp3", ChainSettings(skip=("restore", "denoise")),
                          OutputOptions(format="mp3", mp3_bitrate=192), models_dir=tiny_models,
                          stems_dir=tmp_path / "stems", cache_dir=tmp_path / "cache")
    sep = next(s for s in report["stages"] if s["name"] == "separate")
    assert not sep["skipped"]
    assert sep["model"] == "htdemucs" and sep["device"] == "cpu" and sep["seconds"] > 0 and sep["rtf"] > 0
    assert sorted(p.name for p in (tmp_path / "stems").iterdir()) == [
        "gig-bass.mp3", "gig-drums.mp3", "gig-other.mp3", "gig-vocals.mp3"]


def _fake_entry(cache_dir, key, frames=1000):
    w = StemCacheWriter(cache_dir, key, ["a", "b"], 2, {"fingerprint": "x"})
    w.write(np.ones((2, 2, frames), dtype=np.float32))
    w.commit()


def test_cache_size_clear_and_lru_cap(tmp_path):
    cache = tmp_path / "cache"
    keys = [c * 64 for c in "abc"]
    for i, key in enumerate(keys):
        _fake_entry(cache, key)
        t = time.time() - 100 + i            # a is least recently used, c most
        os.utime(cache / key / "meta.json", (t, t))
    (cache / "notes.txt").write_text("not ours")
    entry_bytes = 2 * 1000 * 2 * 4
    assert cache_size_bytes(cache) >= 3 * entry_bytes

    assert lookup(cache, keys[0]) is not None             # a is now the most recently used
    freed = enforce_cap(cache, 2 * entry_bytes + 1000, keep=keys[2])
    assert freed >= entry_bytes
    assert lookup(cache, keys[1]) is None and lookup(cache, keys[0]) is not None

    assert clear_cache(cache) > 0
    assert cache_size_bytes(cache) == 0
    assert (cache / "notes.txt").read_text() == "not ours"


def test_exact_length_trims_and_pads():
    for produced in (1000, 990):
        source = Counter([np.zeros((1, 997), np.float32)])
        list(source)
        out = list(exact_length(iter([np.ones((2, 1, produced), np.float32)]), source, (2, 1)))
        y = np.concatenate(out, axis=-1)
        assert y.shape == (2, 1, 997)
        assert y[..., : min(produced, 997)].min() == 1.0


def test_offline_without_weights_fails_fast_with_instructions(monkeypatch, tmp_path):
    """No models folder, nothing cached, no network: skip at once instead of demucs's slow retries."""
    monkeypatch.setenv("RESONATE_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(sep_models, "hub_cached", lambda name: False)
    monkeypatch.setattr(sep_models, "can_reach_download_hosts", lambda timeout=2.0: False)
    monkeypatch.setattr(sep_models, "get_model", lambda *a, **k: pytest.fail("must not try to download"))
    t0 = time.perf_counter()
    with pytest.raises(StageUnavailable, match="no internet connection") as err:
        load_model("htdemucs", None)
    assert time.perf_counter() - t0 < 1.0
    assert "955717e8-8726e21a.th" in str(err.value) and "--models-dir" in str(err.value)


def test_default_models_folder_is_used_when_it_has_the_model(monkeypatch, tiny_models):
    monkeypatch.setenv("RESONATE_MODELS_DIR", str(tiny_models))
    monkeypatch.setattr(sep_models, "can_reach_download_hosts", lambda timeout=2.0: pytest.fail("no network needed"))
    model = load_model("htdemucs", None)
    assert list(model.sources) == ["drums", "bass", "other", "vocals"]


# ---------------------------------------------------------------------------------------------
# Weights files are loaded without running what they ask for (issue 12, item 4).

class _RunsCode:
    """What a crafted weights file holds: unpickling it calls ``os.system``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_models_folder(folder, marker, where: str):
    """A models folder that looks right (bag file, weights file named by its signature)."""
    from demucs.htdemucs import HTDemucs

    folder.mkdir()
    (folder / "htdemucs.yaml").write_text("models: ['deadbeef']\n")
    payload = _RunsCode(marker)
    if where == "state":        # a real-looking package with the payload among the tensors
        payload = {"klass": HTDemucs, "args": [], "kwargs": {}, "state": {"encoder.0.weight": payload}}
    torch.save(payload, folder / "deadbeef.th")
    return folder


@pytest.mark.parametrize("where", ["whole file", "state"])
def test_a_weights_file_that_would_run_code_is_refused(tmp_path, where, write_wav):
    from demucs.states import load_model as demucs_load_model

    # Control: demucs's own loader does run it (so the file below is a real attack).
    control = tmp_path / "control-ran"
    torch.save(_RunsCode(control), tmp_path / "control.th")
    with pytest.raises(Exception):          # noqa: B017 - os.system's return value is no package
        demucs_load_model(tmp_path / "control.th")
    assert control.exists()

    marker = tmp_path / "attack-ran"
    folder = _crafted_models_folder(tmp_path / "models", marker, where)
    with pytest.raises(StageUnavailable) as err:
        load_model("htdemucs", folder)
    msg = str(err.value)
    assert not marker.exists()
    assert "\n" not in msg and msg.startswith("refused to load Demucs weights") and "deadbeef.th" in msg
    assert "system" in msg                  # names what the file asked to call
    # Through the chain: separation is skipped with that line, the job completes, nothing ran.
    report = process_file(write_wav(show_signal(1.0)), tmp_path / "out.wav", ChainSettings(skip=("restore",)),
                          models_dir=folder, cache_dir=tmp_path / "cache")
    sep = next(s for s in report["stages"] if s["name"] == "separate")
    assert sep["skipped"] and sep["reason"].startswith("refused to load Demucs weights")
    assert not marker.exists() and (tmp_path / "out.wav").exists()


def test_a_package_whose_class_is_not_a_demucs_model_is_refused(tmp_path):
    from collections import OrderedDict

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "htdemucs.yaml").write_text("models: ['deadbeef']\n")
    torch.save({"klass": OrderedDict, "args": [[("a", 1)]], "kwargs": {}, "state": {}}, folder / "deadbeef.th")
    with pytest.raises(StageUnavailable, match="its model class is"):
        load_model("htdemucs", folder)


def test_real_architecture_with_a_fraction_segment_still_loads(tmp_path):
    """Released htdemucs files keep their segment as a Fraction: allowed, like the model classes."""
    folder = separation_fixtures.make_tiny_htdemucs_repo(tmp_path / "models", "htdemucs", segment=Fraction(39, 5))
    model = load_model("htdemucs", folder)
    assert describe(model, "htdemucs").max_segment == pytest.approx(7.8)
    ref = torch.load(next(folder.glob("*.th")), weights_only=False)
    got = model.models[0].state_dict()
    assert all(torch.equal(got[k], v) for k, v in ref["state"].items())
