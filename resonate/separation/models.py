"""Finding and loading Demucs models through demucs's own pretrained loader.

Users without internet point ``--models-dir`` at a folder in demucs's local-repo layout: one
``{signature}-{checksum}.th`` (or ``{signature}.th``) file per model plus ``{name}.yaml`` listing
the signatures of a named model (a "bag"), exactly what ``demucs.pretrained.get_model(name,
repo=folder)`` reads. Without a folder, demucs fetches the weights itself (HuggingFace hub, then
its legacy download site); when that fails too the stage is skipped with instructions.

``.th`` files are pickles, and demucs unpickles them in full: a crafted file would run whatever
it names. Here they are read with ``torch.load(weights_only=True)``, which rebuilds tensors and
plain containers only, with just the globals a Demucs package needs allowed (the model classes
and ``fractions.Fraction``); anything else is refused with one line naming what it asked for.
Safetensors files from the hub must name one of those model classes too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import socket
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import yaml
from demucs import __version__ as demucs_version
from demucs.apply import BagOfModels
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs
from demucs.pretrained import REMOTE_ROOT, _parse_remote_files
from demucs.repo import AnyModelRepo, BagOnlyRepo, LocalRepo, ModelLoadingError, RemoteRepo, check_checksum
from demucs.states import load_model as build_model

from resonate.errors import StageUnavailable

log = logging.getLogger("resonate")

MODEL_NAMES = ("htdemucs", "htdemucs_ft", "htdemucs_6s")
DEFAULT_MODEL = "htdemucs"
FOUR_STEMS = ("drums", "bass", "other", "vocals")
SIX_STEMS = (*FOUR_STEMS, "guitar", "piano")


def model_stems(name: str) -> tuple[str, ...]:
    """The stems a released Demucs model makes: six for the ``_6s`` model, four otherwise."""
    return SIX_STEMS if name.endswith("_6s") else FOUR_STEMS


@dataclass(frozen=True)
class ModelInfo:
    """What the runner needs to know about a loaded model, without holding the module."""

    name: str
    sources: tuple[str, ...]
    samplerate: int
    audio_channels: int
    max_segment: float          # longest inner segment (s) the model accepts


def describe(model, name: str) -> ModelInfo:
    if isinstance(model, BagOfModels):
        max_segment = model.max_allowed_segment
        if max_segment == float("inf"):
            max_segment = float(min(m.segment for m in model.models))
    else:
        max_segment = float(model.segment)
    return ModelInfo(name, tuple(model.sources), int(model.samplerate), int(model.audio_channels), max_segment)


def model_segment(model):
    """The segment apply_model will use, as the model stores it (a Fraction for htdemucs)."""
    if isinstance(model, BagOfModels):
        return min((m.segment for m in model.models), key=float)
    return model.segment


def bundled_signatures(name: str) -> list[str]:
    """Signatures that make up a named model, from the bag files shipped inside demucs."""
    bag_file = REMOTE_ROOT / f"{name}.yaml"
    if not bag_file.is_file():
        return []
    return list(yaml.safe_load(bag_file.read_text())["models"])


def how_to_get_weights(name: str, models_dir: Path | None) -> str:
    """Plain instructions: which files to download and where to put them."""
    urls = _parse_remote_files(REMOTE_ROOT / "files.txt")
    sigs = bundled_signatures(name)
    folder = str(models_dir) if models_dir is not None else "a folder of your choice"
    if not sigs:
        return f"'{name}' is not a model demucs knows; choose one of {', '.join(MODEL_NAMES)}."
    files = " ".join(urls[s] for s in sigs if s in urls)
    return (
        f"On a machine with internet, download {files} into {folder}, and save a file {name}.yaml there "
        f"containing `models: {sigs!r}` (a copy of demucs/remote/{name}.yaml from the demucs package), "
        "then run with --models-dir pointing at that folder (Settings > Models folder in the app)."
    )


def weights_fingerprint(name: str, models_dir: Path | None) -> str:
    """Identity of the weights a name resolves to, cheap to compute (no loading).

    Goes into the stem-cache key so that swapping the files behind a name (e.g. a test model for
    the real one) never serves stems from the other weights.
    """
    if models_dir is None:
        return f"demucs-{demucs_version}-remote-{name}"
    models_dir = Path(models_dir)
    parts: list[str] = []
    bag = models_dir / f"{name}.yaml"
    try:
        repo = LocalRepo(models_dir)
        if repo.has_model(name):
            files = [repo.list_model()[name]]
        else:
            parts.append(bag.read_text())
            sigs = yaml.safe_load(parts[-1])["models"]
            files = [repo.list_model()[s] for s in sigs]
        for f in files:
            st = Path(f).stat()
            parts.append(f"{Path(f).name}:{st.st_size}:{st.st_mtime_ns}")
    except (OSError, KeyError, TypeError, yaml.YAMLError, ModelLoadingError):
        return f"unresolved-{name}"
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def missing_files(name: str, models_dir: Path) -> str:
    """What a local repo lacks for ``name``, in words; empty when everything is there."""
    repo = LocalRepo(models_dir)
    if repo.has_model(name):
        return ""
    bag = models_dir / f"{name}.yaml"
    if not bag.is_file():
        return f"no {bag.name} and no {name}.th"
    try:
        sigs = list(yaml.safe_load(bag.read_text())["models"])
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        return f"{bag.name} is not a demucs bag file ({exc})"
    absent = [s for s in sigs if not repo.has_model(s)]
    return f"no weights file for signature(s) {', '.join(absent)}" if absent else ""


# ---------------------------------------------------------------------------------------------
# Loading without running anything the file asks for.

MODEL_CLASSES = (HTDemucs, HDemucs, Demucs)          # what a demucs package's "klass" may be
SAFE_GLOBALS = [*MODEL_CLASSES, Fraction]            # htdemucs stores its segment as a Fraction


class UnsafeWeights(StageUnavailable):
    """A weights file that asks for more than tensors, settings and a Demucs model class."""


def _refuse(path, what: str) -> UnsafeWeights:
    return UnsafeWeights(
        f"refused to load Demucs weights {path}: {what}; a Demucs weights file holds only tensors, "
        "settings and a Demucs model class, so this file is not one (delete it and use the official download)")


def read_package(path: str | os.PathLike):
    """The package dict of a demucs ``.th`` file, unpickled with only tensors, plain containers
    and :data:`SAFE_GLOBALS` allowed."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise _refuse(path, f"loading it would call {named.group(1)}" if named else
                      f"it is not a plain weights pickle ({str(exc).splitlines()[0][:120]})") from None
    return _checked(path, package)


def _checked(path, package):
    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= set(package):
        raise _refuse(path, "it is not a Demucs package (klass, args, kwargs, state)")
    if package["klass"] not in MODEL_CLASSES:
        raise _refuse(path, f"its model class is {package['klass']!r}")
    return package


class _SafeLocalRepo(LocalRepo):
    """demucs's local repo (same file naming, same checksum check), loading with :func:`read_package`."""

    def get_model(self, sig: str):
        try:
            file = self._models[sig]
        except KeyError:
            raise ModelLoadingError(f"Could not find pre-trained model with signature {sig}.") from None
        if sig in self._checksums:
            check_checksum(file, self._checksums[sig])
        return build_model(read_package(file))


class _SafeRemoteRepo(RemoteRepo):
    """demucs's legacy download site, the downloaded package read like a local one."""

    def get_model(self, sig: str):
        try:
            url = self._models[sig]
        except KeyError:
            raise ModelLoadingError(f"Could not find a pre-trained model with signature {sig}.") from None
        try:
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                package = torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True,
                                                             weights_only=True)
        except pickle.UnpicklingError as exc:
            named = re.search(r"GLOBAL ([\w.]+)", str(exc))
            raise _refuse(url, f"loading it would call {named.group(1)}" if named else "not a plain weights pickle") from None
        return build_model(_checked(url, package))


def _hub_model(name: str):
    """demucs.hf.get_hf_model, with each safetensors file's model class checked before it is built
    (demucs imports and calls whatever class name the file's metadata gives)."""
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name, load_safetensors_model
    from huggingface_hub import hf_hub_download
    from safetensors import safe_open

    allowed = {f"{c.__module__}.{c.__name__}" for c in MODEL_CLASSES}
    repo_id = f"{DEFAULT_NAMESPACE}/{hf_repo_name(name)}"
    with open(hf_hub_download(repo_id, f"{name}.yaml")) as file:
        bag = yaml.safe_load(file)
    models = []
    for sig in bag["models"]:
        path = hf_hub_download(repo_id, f"{sig}.safetensors")
        with safe_open(path, framework="pt") as f:
            klass = (f.metadata() or {}).get("klass")
        if klass not in allowed:
            raise _refuse(path, f"its model class is {klass!r}")
        models.append(load_safetensors_model(path))
    return BagOfModels(models, bag.get("weights"), bag.get("segment"))


def get_model(name: str, repo: Path | None = None):
    """``demucs.pretrained.get_model`` for names and local folders, loading safely."""
    if repo is None:
        try:
            return _hub_model(name)
        except UnsafeWeights:
            raise
        except Exception as exc:  # noqa: BLE001 - as demucs: fall back to the legacy site
            log.debug("Could not load %s from the HuggingFace hub (%r), trying the legacy site.", name, exc)
        model_repo = _SafeRemoteRepo(_parse_remote_files(REMOTE_ROOT / "files.txt"))
        bag_repo = BagOnlyRepo(REMOTE_ROOT, model_repo)
    else:
        model_repo = _SafeLocalRepo(Path(repo))
        bag_repo = BagOnlyRepo(Path(repo), model_repo)
    return AnyModelRepo(model_repo, bag_repo).get_model(name)


DOWNLOAD_HOSTS = (("huggingface.co", 443), ("dl.fbaipublicfiles.com", 443))


def default_models_dir() -> Path:
    """Where offline users can drop Demucs weights without passing --models-dir every time."""
    return Path(os.environ.get("RESONATE_MODELS_DIR", Path.home() / ".cache" / "resonate" / "models")).expanduser()


def can_reach_download_hosts(timeout: float = 2.0) -> bool:
    for host, port in DOWNLOAD_HOSTS:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return True
        except OSError:
            continue
    return False


def hub_cached(name: str) -> bool:
    """Whether demucs's HuggingFace download of ``name`` is already in the local HF cache."""
    try:
        from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(f"{DEFAULT_NAMESPACE}/{hf_repo_name(name)}", f"{name}.yaml")
    return isinstance(found, str)


def load_model(name: str, models_dir: Path | None):
    """Load ``name`` through demucs's loader; every failure becomes :class:`StageUnavailable`."""
    if models_dir is None:
        local = default_models_dir()
        if local.is_dir() and not missing_files(name, local):
            models_dir = local
        elif not hub_cached(name) and not can_reach_download_hosts():
            # demucs would spend ~30-50 s in network retries before giving up: say it at once.
            raise StageUnavailable(
                f"Demucs model '{name}' is not on this machine and there is no internet connection to "
                f"download it. {how_to_get_weights(name, None)} (Or put the files in {local}.)"
            )
    if models_dir is not None:
        models_dir = Path(models_dir).expanduser()
        if not models_dir.is_dir():
            # demucs would call sys.exit on a missing folder; say it ourselves.
            raise StageUnavailable(
                f"models folder {models_dir} does not exist. {how_to_get_weights(name, models_dir)}"
            )
        try:
            missing = missing_files(name, models_dir)
        except (OSError, ModelLoadingError) as exc:      # unreadable folder, duplicate weights files
            raise StageUnavailable(f"models folder {models_dir}: {exc}") from exc
        if missing:
            raise StageUnavailable(
                f"Demucs weights for '{name}' are missing from {models_dir} ({missing}). "
                f"{how_to_get_weights(name, models_dir)}"
            )
    try:
        model = get_model(name, repo=models_dir)
    except UnsafeWeights:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any loader failure means "skip separation"
        # Offline downloads fail with URLError or hub errors, a truncated file in torch.load,
        # a bad bag file in yaml; demucs itself may call sys.exit.
        what = f"could not be loaded from {models_dir}" if models_dir is not None else "is not here and could not be downloaded"
        raise StageUnavailable(
            f"Demucs model '{name}' {what} ({type(exc).__name__}: {exc}). "
            f"{how_to_get_weights(name, models_dir)}"
        ) from exc
    model.eval()
    return model
