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
