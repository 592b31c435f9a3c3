"""A tiny, randomly initialised Demucs of the real architecture, saved like downloaded weights.

For tests and benchmarks of anything that runs the ``separate`` stage: the folder it builds is
in demucs's local-repo layout, so it is loaded through the same code path as real weights given
with ``--models-dir``. The model separates nothing useful, but it has the real shapes, stems,
sample rate and inner segmenting, and runs at a small fraction of real time on a CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, save_with_checksum

from resonate.separation.models import FOUR_STEMS, SIX_STEMS, model_stems  # noqa: F401 (tests import the stem lists from here)

# Few channels, one transformer layer, a 1 s training segment: ~90k parameters. nfft 2048 with
# depth 4 brings the frequency axis down to 4 bins, which keeps the transformer's sequence short.
TINY_KWARGS = dict(channels=4, depth=4, nfft=2048, t_layers=1, t_heads=2, t_hidden_scale=1.0,
                   dconv_comp=2, segment=1, samplerate=44100, audio_channels=2)


def tiny_htdemucs(sources=FOUR_STEMS, seed: int = 0, **overrides) -> HTDemucs:
    torch.manual_seed(seed)
    model = HTDemucs(list(sources), **{**TINY_KWARGS, **overrides})
    return model.eval()


def _save(model: HTDemucs, folder: Path, sig: str) -> None:
    args, kwargs = model._init_args_kwargs
    package = {"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": get_state(model, None, half=False)}
    save_with_checksum(package, folder / f"{sig}.th")   # writes {sig}-{sha256[:8]}.th, as demucs's files


def make_tiny_htdemucs_repo(folder, name: str = "htdemucs", seed: int = 0, **overrides) -> Path:
    """Write a tiny model under ``name`` into ``folder`` (created if needed) and return the folder.

    ``htdemucs_6s`` gets six stems; ``htdemucs_ft`` is a bag of four models with one-hot stem
    weights, like the real one. ``overrides`` change HTDemucs arguments (e.g. ``segment``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources = model_stems(name)
    count = 4 if name.endswith("_ft") else 1
    sigs = []
    for i in range(count):
        sig = hashlib.sha1(f"{name}-{seed}-{i}".encode()).hexdigest()[:8]
        _save(tiny_htdemucs(sources, seed + i, **overrides), folder, sig)
        sigs.append(sig)
    bag: dict = {"models": sigs}
    if count > 1:
        bag["weights"] = [[1.0 if j == i else 0.0 for j in range(len(sources))] for i in range(count)]
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(bag))
    return folder


# ---------------------------------------------------------------------------------------------
# Community Roformer models: tiny random networks of the real architectures, saved in
# Music-Source-Separation-Training's published format (YAML config + state dict, MSST's key names)
# and listed in a catalogue of their own whose URLs point at local files.

TINY_ROFORMER_AUDIO = {"chunk_size": 64 * 160, "sample_rate": 44100, "num_channels": 2}
TINY_ROFORMER_COMMON = dict(dim=16, depth=1, stereo=True, num_stems=1, time_transformer_depth=1,
                            freq_transformer_depth=1, dim_head=8, heads=2, stft_n_fft=256, stft_hop_length=64,
                            stft_win_length=256, mask_estimator_depth=1, flash_attn=True,
                            attn_dropout=0.1, ff_dropout=0.1)
TINY_ROFORMERS = {
    # (architecture, model arguments beyond the common ones, instruments, target, what it removes)
    "tiny_crowd_melband": ("mel_band_roformer", dict(num_bands=8, linear_transformer_depth=0),
                           ["crowd", "other"], "crowd", "crowd"),
    "tiny_dereverb_bs": ("bs_roformer", dict(freqs_per_bands=(16, 16, 32, 65)),
                         ["noreverb", "reverb"], "noreverb", "reverb"),
}


def tiny_roformer(architecture: str, seed: int = 0, **model_args):
    """A randomly initialised network built the way :func:`resonate.separation.community.load` builds one."""
    from resonate.separation import community

    torch.manual_seed(seed)
    fake = community.CommunityModel(name="tiny", title="", purpose="crowd", architecture=architecture,
                                    removes="", authors="", page="", config_url="", config_file="",
                                    weights_url="", weights_file="", sha256="", sha256_source="",
                                    size_bytes=0, licence="")
    network = community.build_network(fake, {"model": model_args})
    with torch.no_grad():                  # random masks far from identity, so a wrong load shows
        for p in network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return network.eval()


def make_tiny_community_models(folder, models_dir=None, *, pinned: bool = True, seed: int = 0,
                               audio: dict | None = None) -> Path:
    """Write every tiny model's YAML and checkpoint into ``folder/files`` and a catalogue listing
    them (file:// URLs, their SHA-256 when ``pinned``) as ``folder/catalogue.toml``; returns the
    catalogue. Point ``RESONATE_COMMUNITY_CATALOGUE`` at it; ``models fetch`` then copies the files
    into the models folder. ``models_dir`` given: the files are also placed there, as a fetch would.
    """
    from resonate.separation import community

    folder = Path(folder).resolve()          # file:// URLs need an absolute path
    files = folder / "files"
    files.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (name, (architecture, extra, instruments, target, removes)) in enumerate(TINY_ROFORMERS.items()):
        model_args = {**TINY_ROFORMER_COMMON, **extra}
        network = tiny_roformer(architecture, seed + i, **model_args)
        linear = int(model_args.get("linear_transformer_depth", 0))
        state = community.from_package_keys(network.state_dict(), architecture, linear)
        weights = files / f"{name}.ckpt"
        torch.save(state, weights)
        config = {"audio": {**TINY_ROFORMER_AUDIO, **(audio or {})}, "model": model_args,
                  "training": {"instruments": instruments, "target_instrument": target, "use_amp": True},
                  "inference": {"num_overlap": 4}}
        config_file = files / f"{name}.yaml"
        config_file.write_text(_msst_yaml(config))
        sha = hashlib.sha256(weights.read_bytes()).hexdigest()
        lines += [f"[{name}]", f'title = "Tiny random {architecture} ({removes})"', f'purpose = "{removes}"',
                  f'architecture = "{architecture}"', f'removes = "{removes}"', 'authors = "the tests"',
                  'page = ""', f'config_url = "{config_file.as_uri()}"', f'config_file = "{config_file.name}"',
                  f'weights_url = "{weights.as_uri()}"', f'weights_file = "{weights.name}"',
                  f'sha256 = "{sha if pinned else ""}"', 'sha256_source = "computed by the test"',
                  f"size_bytes = {weights.stat().st_size if pinned else 0}",
                  'licence = "none (random weights made by the tests)"', ""]
        if models_dir is not None:
            target_dir = Path(models_dir) / community.SUBFOLDER / name
            target_dir.mkdir(parents=True, exist_ok=True)
            (target_dir / weights.name).write_bytes(weights.read_bytes())
            (target_dir / config_file.name).write_text(config_file.read_text())
    catalogue = folder / "catalogue.toml"
    catalogue.write_text("\n".join(lines))
    return catalogue


def _msst_yaml(config: dict) -> str:
    """YAML as MSST writes its configs: plain sections, and a ``!!python/tuple`` in ``model:``."""
    parts = []
    for section, values in config.items():
        block = yaml.safe_dump({section: values}, sort_keys=False)
        if section == "model":
            block += "  multi_stft_resolutions_window_sizes: !!python/tuple\n  - 256\n  - 128\n"
        parts.append(block)
    return "".join(parts)
