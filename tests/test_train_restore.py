"""Training and evaluation of the restore model on tiny synthetic data (no shared data, no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from resonate.errors import ResonateError
from resonate.models.io import save_weights
from resonate.models.unet import RestoreUNet, RestoreUNetConfig
from resonate.train import commands
from resonate.train.align import align_pair
from resonate.train.crowd import applause, cheer, whistles
from resonate.train.dataset import PairCrops, find_pairs
from resonate.train.degrade import auto_gain, degrade, mp3_roundtrip
from resonate.train.losses import BAND_EDGES_HZ, LossWeights, RestoreLoss, band_level_error_db
from resonate.train.metrics import band_balance_db, log_spectral_distance, si_sdr
from resonate.train.rooms import late_tail, rt60_of

SR = 8000
TINY = dict(sample_rate=SR, n_fft=256, hop=64, channels=[4, 8], first_factor=4, bottleneck_dim=16, dilations=[1, 2])

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    x = sum(np.sin(2 * np.pi * rng.uniform(150, 900) * t) * rng.uniform(0.3, 1) for _ in range(3))
    return (0.15 * x * (0.7 + 0.3 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


def _write_pairs(folder, count: int, seconds: float = 2.0, noise: float = 0.1):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        clean = np.stack([_tone(seconds, i), _tone(seconds, i + 100)])
        noisy = clean + noise * rng.standard_normal(clean.shape).astype(np.float32)
        sf.write(folder / f"song{i}_0.wav", clean.T, SR, subtype="FLOAT")
        sf.write(folder / f"song{i}_1.wav", noisy.T, SR, subtype="FLOAT")
    return folder


def test_tiny_model_overfits_one_pair():
    torch.manual_seed(0)
    cfg = RestoreUNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()})
    model = RestoreUNet(cfg)
    clean = torch.from_numpy(_tone(0.5, 0))[None]
    noisy = clean + 0.1 * torch.randn_like(clean)
    criterion = RestoreLoss(cfg.n_fft, cfg.hop, cfg.compress_power)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        est, est_c, _ = model.forward_with_spec(noisy)
        loss, _ = criterion(est, est_c, clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.5 * losses[0], losses


def test_eq_target_is_the_inverse_of_a_filter_and_the_eq_loss_trains_the_head():
    """``eq_target`` reads a known filter's inverse off a (recording, target) pair, and a tiny
    model with the EQ head learns it from the loss's EQ term."""
    from scipy import signal

    from resonate.train.losses import LossWeights, eq_target

    cfg = RestoreUNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()},
                            minphase_eq_seconds=0.25, eq_head=True)
    rng = np.random.default_rng(5)
    clean = torch.from_numpy((0.1 * rng.standard_normal((1, SR))).astype(np.float32))
    sos = signal.butter(2, 1500, fs=SR, output="sos")   # a phone mic's roll-off
    noisy = torch.from_numpy(signal.sosfilt(sos, clean.numpy(), axis=-1).astype(np.float32))
    frames = cfg.eq_frames
    target = eq_target(noisy, clean, cfg.n_fft, cfg.hop, frames)
    freqs = np.arange(cfg.bins) * SR / cfg.n_fft
    _, h = signal.sosfreqz(sos, worN=freqs, fs=SR)
    band = (freqs > 100) & (freqs < 2500)
    expected = -np.log(np.abs(h[band]))
    assert np.abs(target[0, band, 5:-5].mean(-1).numpy() - expected).max() < 0.15

    torch.manual_seed(0)
    model = RestoreUNet(cfg)
    criterion = RestoreLoss(cfg.n_fft, cfg.hop, cfg.compress_power, LossWeights(mrstft=0.0, eq=1.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    errors = []
    for _ in range(40):
        est, est_c, eq = model.forward_with_spec(noisy)
        loss, parts = criterion(est, est_c, clean, eq, noisy, frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(parts["eq"])
    assert errors[-1] < 0.5 * errors[0], errors


def test_pair_folder_convention(tmp_path):
    _write_pairs(tmp_path, 2)
    sf.write(tmp_path / "song0_2.wav", np.zeros((100, 2)), SR)   # a second recording of song0
    sf.write(tmp_path / "lonely_1.wav", np.zeros((100, 2)), SR)  # no master: ignored
    names = [(p.song, p.recording.name) for p in find_pairs(tmp_path)]
    assert names == [("song0", "song0_1.wav"), ("song0", "song0_2.wav"), ("song1", "song1_1.wav")]
    with pytest.raises(ResonateError):
        find_pairs(tmp_path / "nothing")


def test_crops_are_seeded_and_include_clean_pairs(tmp_path):
    _write_pairs(tmp_path, 2)
    ds = PairCrops(tmp_path, 0.5, SR, clean_fraction=0.5, seed=3)
    a, b = ds[5], PairCrops(tmp_path, 0.5, SR, clean_fraction=0.5, seed=3)[5]
    assert torch.equal(a[0], b[0]) and a[0].shape == (SR // 2,)
    identical = sum(torch.equal(*ds[i]) for i in range(40))
    assert 5 <= identical <= 35


def _train_config(tmp_path, steps: int) -> str:
    cfg = {
        "out_dir": str(tmp_path / "run"), "seed": 0, "threads": 1, "checkpoint_every": 1, "val_every": 2,
        "ema_decay": 0.9, "model": TINY,
        "data": {"train_dir": str(_write_pairs(tmp_path / "train", 2)), "val_dir": str(_write_pairs(tmp_path / "val", 1)),
                 "crop_seconds": 0.5, "batch_size": 2},
        "optim": {"max_steps": steps, "warmup_steps": 1},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_train_cli_runs_two_steps_and_resumes(tmp_path, capsys):
    config = _train_config(tmp_path, 2)
    assert commands.main(["train", "--config", config]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["step"] == 2
    run = tmp_path / "run"
    assert (run / "last.pt").exists() and (run / "best.safetensors").exists()
    assert commands.main(["train", "--config", config, "--resume", "--max-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "resumed from step 2" in out
    assert json.loads(out.strip().splitlines()[-1])["step"] == 4
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert json.loads(ckpt["state"])["step"] == 4


def test_train_cli_rejects_unknown_config_keys(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {learning_rate: 1}\n")
    assert commands.main(["train", "--config", str(bad)]) == 2
    assert "unknown" in capsys.readouterr().err


def test_evaluate_cli_on_two_clips(tmp_path, capsys):
    data = _write_pairs(tmp_path / "eval", 2)
    cfg = RestoreUNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()})
    weights = save_weights(RestoreUNet(cfg), tmp_path / "identity.safetensors")
    out_json = tmp_path / "eval.json"
    assert commands.main(["evaluate", "--model", str(weights), "--data", str(data), "--device", "cpu",
                          "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "song0_1" in text and "song1_1" in text and "MEAN" in text
    summary = json.loads(out_json.read_text())["summary"]
    assert summary["clips"] == 2
    # An untrained model is the identity: no gain, and clean audio passes unchanged.
    assert abs(summary["si_sdr_gain_model"]) < 0.1
    assert summary["clean_passthrough_si_sdr_min"] > 40


def test_metrics_order_clean_over_noisy():
    clean = _tone(1.0, 1)
    rng = np.random.default_rng(1)
    slightly, badly = clean + 0.01 * rng.standard_normal(clean.shape), clean + 0.2 * rng.standard_normal(clean.shape)
    assert si_sdr(clean, clean) > 60
    assert si_sdr(slightly, clean) > si_sdr(badly, clean)
    assert si_sdr(3.0 * clean, clean) > 60  # scale-invariant
    assert log_spectral_distance(slightly, clean, SR) < log_spectral_distance(badly, clean, SR)


def test_band_balance_reads_highs_taken_away_whatever_the_level():
    sr = 44100
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((2, 4 * sr))
    spec = np.fft.rfft(ref, axis=-1)
    freqs = np.fft.rfftfreq(ref.shape[-1], 1 / sr)
    high = (freqs >= 10000) & (freqs < 16000)
    dull = spec.copy()
    dull[:, high] *= 10 ** (-20 / 20)       # the 10-16 kHz band 20 dB down
    dull = np.fft.irfft(dull, n=ref.shape[-1], axis=-1)
    share = high.sum() / len(freqs)         # white noise: the band's share of the power
    expected = 10 * np.log10(0.01 / (1 - share + 0.01 * share))   # its share falls, the rest's rises
    assert band_balance_db(ref * 0.1, ref, sr) == pytest.approx(0.0, abs=0.05)
    # (within 1 dB: the analysis window leaks the louder neighbours into the band's edge bins)
    assert band_balance_db(0.3 * dull, ref, sr) == pytest.approx(expected, abs=1.0)
    assert band_balance_db(ref[:, ::2], ref[:, ::2], sr // 2) is None   # the band is above Nyquist


def test_alignment_recovers_offset_and_drift():
    rng = np.random.default_rng(5)
    sr = 16000
    master = signal_like = rng.standard_normal(sr * 40).astype(np.float32)
    master = np.convolve(signal_like, np.ones(16) / 16, mode="same")[None]
    # The recording starts 1.25 s early (extra noise before) and its clock runs 200 ppm fast.
    import soxr

    fast = soxr.resample(master[0].astype(np.float64), sr, sr * (1 - 200e-6)).astype(np.float32)
    rec = np.concatenate([0.1 * rng.standard_normal(int(1.25 * sr)).astype(np.float32), fast])[None]
    rec = rec + 0.05 * rng.standard_normal(rec.shape).astype(np.float32)
    m, r, al = align_pair(master, rec, sr)
    assert al.offset_s == pytest.approx(1.25, abs=0.002)
    assert al.drift == pytest.approx(-200e-6, abs=40e-6)
    assert si_sdr(r, m) > 10


def test_degradation_chain_is_seeded_and_keeps_shapes():
    clean = np.stack([_tone(1.0, 2), _tone(1.0, 3)])
    rir = np.zeros((2, 400), dtype=np.float32)
    rir[:, 0] = 1.0
    rir[:, 1:] = 0.1 * late_tail(np.random.default_rng(0), SR, 0.5, 0.005, 2)[:, :399]
    crowd = np.random.default_rng(1).standard_normal(clean.shape)
    a = degrade(clean, SR, np.random.default_rng(7), rir, crowd)
    b = degrade(clean, SR, np.random.default_rng(7), rir, crowd)
    assert np.array_equal(a[0], b[0]) and a[0].shape == clean.shape and a[1].shape == clean.shape
    assert np.abs(a[0]).max() < 1.0 and si_sdr(a[0], a[1]) < si_sdr(a[1], a[1])


def test_target_keeps_the_early_room_and_drops_the_late_tail():
    """The target is the clean music through the RIR's first 50 ms: a reflection inside that
    window stays in the target, one after it does not."""
    from resonate.train.degrade import EARLY_REFLECTIONS_S, early_part

    rng = np.random.default_rng(3)
    clean = rng.standard_normal((2, SR)).astype(np.float32) * 0.1
    early_at, late_at = int(0.02 * SR), int(0.3 * SR)
    rir = np.zeros((2, late_at + 1), dtype=np.float32)
    rir[:, 0], rir[:, early_at], rir[:, late_at] = 1.0, 0.7, 0.7
    part = early_part(rir, SR)
    assert part.shape[1] == int(EARLY_REFLECTIONS_S * SR) and part[0, early_at] == pytest.approx(0.7)
    noisy, target, params = degrade(clean, SR, np.random.default_rng(11), rir, np.zeros_like(clean))
    src = clean.mean(axis=0) if params.get("mono") else clean[0]
    with_early = src + 0.7 * np.concatenate([np.zeros(early_at), src[:-early_at]])
    with_late = with_early + 0.7 * np.concatenate([np.zeros(late_at), src[:-late_at]])
    assert np.corrcoef(target[0], with_early)[0, 1] > 0.999
    assert np.corrcoef(target[0], with_late)[0, 1] < 0.95


def test_crowd_sounds_and_phone_effects():
    rng = np.random.default_rng(0)
    for sound in (applause(rng, SR, SR, 5), cheer(rng, SR, SR, 3), whistles(rng, SR, SR, 2)):
        assert sound.shape == (SR,) and np.std(sound) > 0
    x = np.stack([_tone(2.0, 4)] * 2).astype(np.float64)
    x[:, SR // 2: SR] *= 4  # a loud passage: the AGC turns it down
    y = auto_gain(x, SR, rng)
    assert np.std(y[:, SR // 2: SR]) / np.std(y[:, :SR // 2]) < np.std(x[:, SR // 2: SR]) / np.std(x[:, :SR // 2])
    coded = mp3_roundtrip(x / 4, SR, 32)
    assert coded.shape == x.shape and si_sdr(coded, x) > 5


def test_late_tail_decays_at_the_requested_rate():
    tail = late_tail(np.random.default_rng(0), 16000, 1.0, 0.0, 1)
    assert 0.7 < rt60_of(tail, 16000) < 1.5


def test_si_sdr_term_rewards_the_clean_target():
    import torch

    from resonate.train.losses import LossWeights, RestoreLoss, si_sdr_db

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 8000, generator=g)
    noisy = ref + 0.3 * torch.randn(2, 8000, generator=g)
    assert torch.all(si_sdr_db(3.0 * ref, ref) > 60)          # scale does not matter
    assert torch.allclose(si_sdr_db(noisy, ref), torch.full((2,), 10.46), atol=0.3)
    from resonate.models.spectral import compress, stft

    crit = RestoreLoss(512, 128, 0.3, LossWeights(si_sdr=0.1))
    est_c = compress(stft(noisy, 512, 128), 0.3)
    loss_noisy, parts = crit(noisy, est_c, ref)
    loss_clean, _ = crit(ref, compress(stft(ref, 512, 128), 0.3), ref)
    assert "sisdr" in parts and loss_clean < loss_noisy


def test_band_level_loss_counts_the_highs_a_model_took_away():
    """A band 20 dB too quiet costs 20 dB over that band's share of the third-octave bands; a
    scaled copy of the target costs nothing in level shape but its gain, uniformly."""
    sr = 44100
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 2 * sr)).astype(np.float32))
    cut_hz = BAND_EDGES_HZ[16]                      # 100 Hz * 2^(16/3): the highest 6 of 22 bands are above
    spectrum = torch.fft.rfft(x)
    spectrum[:, torch.fft.rfftfreq(x.shape[-1], 1 / sr) >= cut_hz] *= 0.1
    dull = torch.fft.irfft(spectrum, x.shape[-1])
    assert float(band_level_error_db(x, x, sr)) == 0.0
    assert float(band_level_error_db(dull, x, sr)) == pytest.approx(20.0 * 6 / 22, abs=0.2)
    assert float(band_level_error_db(0.5 * x, x, sr)) == pytest.approx(6.02, abs=0.05)
    loss = RestoreLoss(1024, 256, 0.3, LossWeights(band_level=1.0), sample_rate=sr)
    c = torch.stft(x, 1024, 256, window=torch.hann_window(1024), return_complex=True)
    _, parts = loss(dull, c, x)
    assert parts["band"] == pytest.approx(20.0 * 6 / 22, abs=0.2)


def test_a_wider_deeper_model_starts_as_the_model_it_was_loaded_from():
    torch.manual_seed(0)
    small_cfg = RestoreUNetConfig(**{**TINY, "channels": (4, 8), "dilations": (1, 2)}, eq_head=True,
                                  minphase_eq_seconds=0.1, level_norm_seconds=0.5)
    small = RestoreUNet(small_cfg).eval()
    with torch.no_grad():   # a trained model: nothing at its identity initialisation
        for p in small.parameters():
            p.add_(0.1 * torch.randn_like(p))
    big = RestoreUNet(RestoreUNetConfig(**{**small_cfg.to_dict(), "bottleneck_dim": 40, "channels": (6, 12),
                                            "dilations": (1, 2, 4, 8)})).eval()
    fresh = [p.clone() for p in big.parameters()]
    big.load_compatible(small.state_dict())
    wav = 0.1 * torch.randn(2, SR)
    with torch.no_grad():
        a, b = small(wav), big(wav)
    assert torch.allclose(a, b, atol=1e-6), float((a - b).abs().max())
    # ... and it is not the small model padded with zeros: the new channels are live and learn.
    assert float(big.temporal[0].pointwise.weight.detach()[16:, :].abs().mean()) > 0.01
    loss = big(wav).pow(2).mean()
    loss.backward()
    assert float(big.from_frames.weight.grad[:, 16:].abs().sum()) > 0
    assert any(not torch.equal(p, q) for p, q in zip(big.parameters(), fresh))
    with pytest.raises(ValueError):
        RestoreUNet(RestoreUNetConfig(**{**small_cfg.to_dict(), "bottleneck_dim": 8})).load_compatible(small.state_dict())


def test_freeze_loaded_trains_only_what_the_growth_added(tmp_path, capsys):
    torch.manual_seed(0)
    small_cfg = RestoreUNetConfig(**{**TINY, "channels": (4, 8), "dilations": (1, 2)})
    small = RestoreUNet(small_cfg)
    with torch.no_grad():
        for p in small.parameters():
            p.add_(0.1 * torch.randn_like(p))
    weights = save_weights(small, tmp_path / "small.safetensors")
    config = yaml.safe_load(open(_train_config(tmp_path, 3)))
    config.update(init_weights=str(weights), freeze_loaded=True)
    config["model"] = {**TINY, "bottleneck_dim": 24, "dilations": [1, 2, 4]}
    path = tmp_path / "grow.yaml"
    path.write_text(yaml.safe_dump(config))
    assert commands.main(["train", "--config", str(path)]) == 0
    assert "training only the grown part" in capsys.readouterr().out
    trained = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)["model"]
    old = small.state_dict()
    for key, value in old.items():      # every loaded value as it was
        assert torch.equal(trained[key][tuple(slice(0, n) for n in value.shape)], value), key
    # ... and the grown part trained: the new bottleneck channels and the added block.
    assert not torch.equal(trained["temporal.2.pointwise.weight"], torch.zeros_like(trained["temporal.2.pointwise.weight"])) \
        and float(trained["temporal.2.scale"].abs().sum()) > 0
    assert float(trained["from_frames.weight"][:, 16:].abs().sum()) > 0


def test_validation_clips_are_spread_over_the_set_not_taken_from_its_start():
    from resonate.train.loop import spread_pick

    # A set written kind by kind: 8 of each of four kinds.
    items = [f"{kind}{i}" for kind in "abcd" for i in range(8)]
    picked = spread_pick(items, 8)
    assert len(picked) == 8 and len(set(picked)) == 8
    assert {p[0] for p in picked} == set("abcd")        # every kind is scored
    assert sum(p[0] == "a" for p in picked) == 2
    assert spread_pick(items, 100) == items
    assert spread_pick(items, 0) == []


def test_log_spectral_distance_scores_spectral_damage_not_loudness():
    rng = np.random.default_rng(3)
    clean = 0.1 * rng.standard_normal((1, SR)).astype(np.float32)    # every bin well above the floor
    # A louder copy is no spectral damage once aligned; without alignment it reads as the gain.
    assert log_spectral_distance(4.0 * clean, clean, SR) < 0.01
    assert abs(log_spectral_distance(4.0 * clean, clean, SR, align_level=False) - 20 * np.log10(4.0)) < 0.05
    noisy = clean + 0.05 * rng.standard_normal(clean.shape)
    assert abs(log_spectral_distance(0.1 * noisy, clean, SR) - log_spectral_distance(noisy, clean, SR)) < 1e-6
