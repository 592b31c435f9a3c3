"""Community Roformer models (crowd removal, de-reverb) as modes of the ``separate`` stage.

The catalogue (``community_models.toml``) lists a few checkpoints trained by the community around
Ultimate Vocal Remover and ZFTurbo's Music-Source-Separation-Training (MSST): what each removes,
where it is published, its size, SHA-256 and licence. They are in MSST's published format: a YAML
model config (``audio:`` chunk_size/sample_rate, ``model:`` the constructor arguments,
``training:`` instruments/target_instrument) and a PyTorch state dict. The networks are built with
the field's own package, ``bs-roformer`` (``BSRoformer``, ``MelBandRoformer``).

Files live in ``MODELS_DIR/community/NAME/`` (the models folder: ``--models-dir``, Settings, or
``~/.cache/resonate/models``). Nothing is downloaded unless the user asks: ``python -m resonate
models fetch NAME`` or the app's Download button. Offline users put the two files there by hand.

Trust: a checkpoint is a pickle, so it is never read before its SHA-256 matches a known value, and
then only with ``torch.load(weights_only=True)`` (tensors and plain containers, nothing called).
The known value is the catalogue's pinned hash; for an entry without a published hash, the user
may choose ``--trust-unpinned`` once, which records the hash of the file fetched (or dropped by
hand) in ``trusted.json`` beside it; from then on any other file is refused. The YAML config is
read with a safe loader that only adds plain tuples (MSST configs write ``!!python/tuple``).

MSST's model code is a fork of an older ``bs-roformer``; its state-dict keys differ from the
current package's in three ways, all mapped here: each transformer branch sits in a residual
wrapper (``.branch.``), a Mel-band layer keeps a ``None`` slot for an absent linear transformer
(so time/frequency transformers are at 1/2, not 0/1), and the package's BS-RoFormer adds
value-residual mixing that MSST models do not have (removed after building). Hyper-connections are
turned off (one residual stream), which is the plain residual MSST uses.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import time
import tomllib
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from resonate.errors import ResonateError, StageUnavailable

CATALOGUE_FILE = Path(__file__).with_name("community_models.toml")
CATALOGUE_ENV = "RESONATE_COMMUNITY_CATALOGUE"     # another catalogue file (a mirror; the tests)
SUBFOLDER = "community"
TRUST_RECORD = "trusted.json"
ARCHITECTURES = ("mel_band_roformer", "bs_roformer")
PURPOSES = {"crowd": "removes crowd noise (applause, chatter, singing along)",
            "reverb": "removes reverberation (room and hall echo)"}
DOWNLOAD_TIMEOUT_S = 30.0
_READ = 1 << 20

# bs-roformer's attention picks its kernel through a context manager torch now calls deprecated,
# once per model pass; and BSRoformer's constructor measures its STFT size without a window.
warnings.filterwarnings("ignore", message=r".*sdp_kernel\(\)` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"A window was not provided", category=UserWarning,
                        module=r"torch\.functional")


@dataclass(frozen=True)
class CommunityModel:
    """One catalogue entry (see the comments at the top of community_models.toml)."""

    name: str
    title: str
    purpose: str
    architecture: str
    removes: str
    authors: str
    page: str
    config_url: str
    config_file: str
    weights_url: str
    weights_file: str
    sha256: str
    sha256_source: str
    size_bytes: int
    licence: str

    @property
    def pinned(self) -> bool:
        return bool(self.sha256)

    @property
    def stems(self) -> tuple[str, str]:
        """The two stems the stage gets: everything else (music) and what the model removes."""
        return ("music", self.purpose)

    def size_text(self) -> str:
        return f"{self.size_bytes / 1e6:,.0f} MB" if self.size_bytes else "size not published"


def catalogue_path() -> Path:
    return Path(os.environ.get(CATALOGUE_ENV) or CATALOGUE_FILE).expanduser()


def catalogue() -> dict[str, CommunityModel]:
    """Every catalogued model by name (read afresh each call: the file is small)."""
    path = catalogue_path()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ResonateError(f"cannot read the community model catalogue {path}: {exc}") from exc
    models = {}
    fields = [f for f in CommunityModel.__dataclass_fields__ if f != "name"]
    for name, entry in data.items():
        missing = [f for f in fields if f not in entry]
        if missing or entry.get("architecture") not in ARCHITECTURES or entry.get("purpose") not in PURPOSES:
            raise ResonateError(f"community model catalogue {path}: entry [{name}] is incomplete or unknown "
                                f"({', '.join(missing) or 'architecture/purpose'})")
        models[name] = CommunityModel(name=name, **{f: entry[f] for f in fields})
    return models


def is_community_model(name: str) -> bool:
    try:
        return name in catalogue()
    except ResonateError:
        return False


def entry(name: str) -> CommunityModel:
    models = catalogue()
    if name not in models:
        raise ResonateError(f"'{name}' is not in the community model catalogue (known: {', '.join(models)})")
    return models[name]


def models_root(models_dir: Path | str | None) -> Path:
    """The models folder the files go to: the one given, else the default (as for Demucs)."""
    from resonate.separation.models import default_models_dir

    return Path(models_dir).expanduser() if models_dir else default_models_dir()


def model_folder(model: CommunityModel, models_dir: Path | str | None) -> Path:
    return models_root(models_dir) / SUBFOLDER / model.name


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while buf := f.read(_READ):
            sha.update(buf)
    return sha.hexdigest()


def _trust_record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / TRUST_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def expected_sha256(model: CommunityModel, folder: Path) -> str:
    """The hash the weights must have: the catalogue's, else the one the user chose to trust; "" if none."""
    return model.sha256 or str(_trust_record(folder).get("weights_sha256", ""))


def on_this_machine(model: CommunityModel, models_dir: Path | str | None) -> bool:
    """Both files are in the model's folder (not verified: that happens when it is fetched or loaded)."""
    folder = model_folder(model, models_dir)
    return (folder / model.weights_file).is_file() and (folder / model.config_file).is_file()


def where_to_put_files(model: CommunityModel, models_dir: Path | str | None) -> str:
    folder = model_folder(model, models_dir)
    return (f"download {model.weights_url} and {model.config_url} on a machine with internet and put "
            f"{model.weights_file} and {model.config_file} in {folder}")


# ---------------------------------------------------------------------------------------------
# Fetching: only on the user's explicit request, atomic, hash-verified.


def _download(url: str, folder: Path, progress: Callable[[int, int], None] | None) -> tuple[Path, str]:
    """Stream ``url`` into a partial file in ``folder``; returns it and its SHA-256 (removed on failure)."""
    partial = folder / f".download.partial-{uuid.uuid4().hex[:8]}"
    sha = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:  # noqa: S310 - URLs from the catalogue
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while buf := response.read(_READ):
                out.write(buf)
                sha.update(buf)
                done += len(buf)
                if progress is not None:
                    progress(done, total)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial, sha.hexdigest()


def fetch(name: str, models_dir: Path | str | None, *, trust_unpinned: bool = False,
          progress: Callable[[int, int], None] | None = None) -> Path:
    """Put model ``name``'s config and weights into its folder, verified; returns the folder.

    Files already there (fetched before or dropped by hand) are checked, not downloaded again. An
    entry without a pinned SHA-256 is refused unless ``trust_unpinned``; then the hash of its
    weights is recorded in the folder and every later load is checked against it. Every failure
    is one :class:`ResonateError` line. A download is written to a partial file and renamed only
    once its hash is right, so a failed or wrong download leaves nothing under the final name.
    """
    model = entry(name)
    folder = model_folder(model, models_dir)
    expected = expected_sha256(model, folder)
    if not expected and not trust_unpinned:
        raise ResonateError(
            f"{name} has no published SHA-256, so Resonate cannot check what it downloads; run again with "
            "--trust-unpinned to download it anyway and record the hash of the file you get (every later "
            "load is checked against that record)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResonateError(f"cannot create the models folder {folder}: {exc.strerror or exc}") from exc
    hashes = {}
    for what, url, file_name in (("config", model.config_url, model.config_file),
                                 ("weights", model.weights_url, model.weights_file)):
        target = folder / file_name
        if target.is_file():
            source, hashes[what] = target, file_sha256(target)
        else:
            try:
                source, hashes[what] = _download(url, folder, progress if what == "weights" else None)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise ResonateError(
                    f"cannot download {url} ({reason}); offline, {where_to_put_files(model, models_dir)}, "
                    f"then run `python -m resonate models fetch {name}` again to check them") from None
        if what == "weights" and expected and hashes[what] != expected:
            if source == target:
                rejected = folder / f"{file_name}.rejected"
                os.replace(target, rejected)
                where = f"it was moved aside to {rejected} (delete it)"
            else:
                source.unlink(missing_ok=True)
                where = "the download was deleted"
            raise ResonateError(f"{file_name} has SHA-256 {hashes[what]}, not the expected {expected}; "
                                f"it was not loaded and {where}")
        if source != target:
            os.replace(source, target)
    if not model.pinned:
        record = {"weights_sha256": hashes["weights"], "config_sha256": hashes["config"],
                  "weights_url": model.weights_url, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "why": "no published SHA-256; the user chose --trust-unpinned"}
        _write_atomic(folder / TRUST_RECORD, json.dumps(record, indent=1))
    return folder


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def remove(name: str, models_dir: Path | str | None) -> None:
    """Delete a fetched model's folder (the app's Remove button)."""
    folder = model_folder(entry(name), models_dir)
    if folder.is_dir():
        shutil.rmtree(folder)


# ---------------------------------------------------------------------------------------------
# Reading the published format.


class _ConfigLoader(yaml.SafeLoader):
    """yaml's safe loader plus ``!!python/tuple`` (MSST configs write lists of sizes that way)."""


_ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                              lambda loader, node: tuple(loader.construct_sequence(node)))


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.load(path.read_text(), Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except (OSError, yaml.YAMLError) as exc:
        raise StageUnavailable(f"cannot read the model config {path}: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise StageUnavailable(f"{path} is not a model config (no `model:` section)")
    return config


# Config keys that only matter for training or pick an attention kernel: the network is the same.
_IGNORED = {"flash_attn", "sage_attention", "use_torch_checkpoint", "attn_dropout", "ff_dropout",
            "multi_stft_resolution_loss_weight", "multi_stft_resolutions_window_sizes", "multi_stft_hop_size",
            "multi_stft_normalized", "dim_freqs_in", "match_input_audio_length"}

@dataclass(frozen=True)
class LoadedModel:
    """A community model ready to run, with what the stage needs to know about it."""

    model: CommunityModel
    network: torch.nn.Module
    samplerate: int
    audio_channels: int
    chunk_size: int              # samples per model pass, as trained (config audio.chunk_size)
    outputs: tuple[str, ...]     # the instruments the network returns, in order
    use_amp: bool                # the config's own mixed-precision flag (used on CUDA only)


def build_network(model: CommunityModel, config: dict[str, Any]) -> torch.nn.Module:
    """The ``bs-roformer`` network a config describes, laid out as MSST's (see the module docstring)."""
    try:
        from bs_roformer import BSRoformer, MelBandRoformer
    except ImportError as exc:
        raise StageUnavailable(f"community models need the bs-roformer package ({exc}); "
                               "install it with `pip install bs-roformer==1.2.4`") from exc

    klass = MelBandRoformer if model.architecture == "mel_band_roformer" else BSRoformer
    params = inspect.signature(klass.__init__).parameters
    given = dict(config["model"])
    kwargs: dict[str, Any] = {}
    mlp_expansion = given.pop("mlp_expansion_factor", 4)
    # MSST options the package cannot build the same way: refused rather than built differently.
    if given.pop("skip_connection", False):
        raise StageUnavailable(f"{model.name}: skip_connection models are not supported by bs-roformer")
    if model.architecture == "bs_roformer" and given.pop("linear_transformer_depth", 0):
        raise StageUnavailable(f"{model.name}: a BS-RoFormer with linear transformers is not supported by bs-roformer")
    unknown = sorted(k for k in given if k not in params and k not in _IGNORED)
    if unknown:
        raise StageUnavailable(f"{model.name}: the config asks for {', '.join(unknown)}, which bs-roformer "
                               "cannot build; refusing rather than building a different network")
    for key, value in given.items():
        if key in params and key not in _IGNORED:
            kwargs[key] = tuple(int(v) for v in value) if key == "freqs_per_bands" else value
    kwargs["num_residual_streams"] = 1          # no hyper-connections: MSST's plain residual
    if model.architecture == "mel_band_roformer":
        kwargs["add_value_residual"] = False
        kwargs["match_input_audio_length"] = True
    kwargs["flash_attn"] = True                 # scaled_dot_product_attention: same maths, any device
    try:
        network = klass(**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise StageUnavailable(f"{model.name}: bs-roformer cannot build this config ({exc})") from exc
    if model.architecture == "bs_roformer":
        # The package mixes in the first layer's values from the second layer on; MSST models do not.
        for module in network.modules():
            if hasattr(module, "learned_value_residual_mix"):
                module.learned_value_residual_mix = None
    if mlp_expansion != 4:
        module = "mel_band_roformer" if model.architecture == "mel_band_roformer" else "bs_roformer"
        MaskEstimator = __import__(f"bs_roformer.{module}", fromlist=["MaskEstimator"]).MaskEstimator  # noqa: N806

        dims = network.band_split.dim_inputs
        network.mask_estimators = torch.nn.ModuleList(
            MaskEstimator(dim=kwargs["dim"], dim_inputs=dims, depth=kwargs.get("mask_estimator_depth", params["mask_estimator_depth"].default),
                          mlp_expansion_factor=int(mlp_expansion)) for _ in range(kwargs.get("num_stems", 1)))
    return network


_TRANSFORMER_KEY = re.compile(r"^layers\.(\d+)\.(\d+)\.(layers\.\d+\.\d+\.|norm\.)(.*)$")


def to_package_keys(state: dict[str, torch.Tensor], architecture: str, linear_depth: int) -> dict[str, torch.Tensor]:
    """MSST state-dict names -> the ``bs-roformer`` package's (see the module docstring)."""
    shift = 1 if architecture == "mel_band_roformer" and linear_depth == 0 else 0
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        m = _TRANSFORMER_KEY.match(key)
        if m:
            layer, slot, inner, rest = m.groups()
            inner = inner + "branch." if inner.startswith("layers.") else inner
            key = f"layers.{layer}.{int(slot) + shift}.{inner}{rest}"
        out[key] = value
    return out


def from_package_keys(state: dict[str, torch.Tensor], architecture: str, linear_depth: int) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_package_keys`: how MSST saves a network built by the package."""
    shift = 1 if architecture == "mel_band_roformer" and linear_depth == 0 else 0
    out = {}
    for key, value in state.items():
        m = _TRANSFORMER_KEY.match(key)
        if m:
            layer, slot, inner, rest = m.groups()
            rest = rest.removeprefix("branch.")
            key = f"layers.{layer}.{int(slot) - shift}.{inner}{rest}"
        out[key] = value
    return out


def _state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict):
        for wrapper in ("state_dict", "state", "model"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise StageUnavailable(f"{path} is not a state dict of tensors")
    return loaded


def load(name: str, models_dir: Path | str | None, device: torch.device | str = "cpu") -> LoadedModel:
    """Verify and load catalogued model ``name`` from the models folder.

    Every problem is a :class:`StageUnavailable` (the chain goes on without separation and the
    report says why): files missing, no hash to check against, a hash that does not match, a
    config the package cannot build, weights that do not fit it.
    """
    try:
        model = entry(name)
    except ResonateError as exc:
        raise StageUnavailable(str(exc)) from None
    folder = model_folder(model, models_dir)
    weights, config_file = folder / model.weights_file, folder / model.config_file
    absent = [p.name for p in (weights, config_file) if not p.is_file()]
    if absent:
        fetch_hint = f"`python -m resonate models fetch {name}" + ("`" if model.pinned else " --trust-unpinned`")
        raise StageUnavailable(
            f"community model {name} is not on this machine ({', '.join(absent)} missing from {folder}); "
            f"run {fetch_hint} (downloads {model.size_text()}, licence: {model.licence}), "
            f"or offline {where_to_put_files(model, models_dir)}")
    expected = expected_sha256(model, folder)
    if not expected:
        raise StageUnavailable(
            f"{weights} has no SHA-256 to be checked against (the catalogue has none for {name}); run "
            f"`python -m resonate models fetch {name} --trust-unpinned` to record the hash of this file if you trust it")
    actual = file_sha256(weights)
    if actual != expected:
        raise StageUnavailable(f"refused to load {weights}: its SHA-256 is {actual}, not {expected} "
                               "(the file was changed or is another one; delete it and fetch it again)")
    config = read_config(config_file)
    network = build_network(model, config)
    try:
        loaded = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a refused or unreadable pickle: never load it another way
        raise StageUnavailable(f"refused to load {weights}: not a plain tensor checkpoint "
                               f"({str(exc).splitlines()[0][:160]})") from None
    linear_depth = int(config["model"].get("linear_transformer_depth", 0) or 0)
    state = to_package_keys(_state_dict(loaded, weights), model.architecture, linear_depth)
    result = network.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise StageUnavailable(
            f"{weights} does not fit the network its config describes (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})")
    network.eval().to(device)

    audio, training = config.get("audio") or {}, config.get("training") or {}
    instruments = tuple(str(i) for i in training.get("instruments") or ())
    target = training.get("target_instrument")
    outputs = (str(target),) if target else instruments
    if len(outputs) != int(config["model"].get("num_stems", 1)):
        raise StageUnavailable(f"{config_file}: {len(outputs)} output instrument(s) named, "
                               f"{config['model'].get('num_stems', 1)} stems built")
    if model.removes not in instruments:
        raise StageUnavailable(f"{config_file}: no '{model.removes}' among the instruments {list(instruments)}")
    channels = 2 if config["model"].get("stereo", False) else 1
    return LoadedModel(model, network, int(audio.get("sample_rate", 44100)), channels,
                       int(audio.get("chunk_size", 352800)), outputs, bool(training.get("use_amp", True)))


def weights_fingerprint(name: str, models_dir: Path | str | None) -> str:
    """Identity of the files behind ``name`` for the stem cache, without hashing them again."""
    try:
        model = entry(name)
    except ResonateError:
        return f"unresolved-{name}"
    folder = model_folder(model, models_dir)
    parts = [expected_sha256(model, folder)]
    for f in (model.weights_file, model.config_file):
        try:
            st = (folder / f).stat()
        except OSError:
            return f"unresolved-{name}"
        parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Running: one fixed-length model pass per window of the engine's overlap-add.


class RoformerSeparator:
    """``fn`` for OverlapAdd: a (channels, chunk) window in, (2, channels, chunk) out: music, then
    what the model removes. The two always sum to the window, so keeping 100 % of the removed part
    gives the input back.

    Mixed precision (fp16 autocast) only on CUDA and only where the model's own config trains
    with it (MSST's ``use_amp``, which its inference uses too); MPS and the CPU run in float32.
    """

    def __init__(self, loaded: LoadedModel, device: torch.device):
        self.loaded = loaded
        self.device = torch.device(device)
        self.half = self.device.type == "cuda" and loaded.use_amp
        self.remove_index = loaded.outputs.index(loaded.model.removes) if loaded.model.removes in loaded.outputs else None
        self.windows = 0
        self.seconds = 0.0

    @property
    def precision(self) -> str:
        return "fp16 autocast" if self.half else "fp32"

    def __call__(self, window: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        mix = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None].to(self.device)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.half else nullcontext()
        with torch.inference_mode(), autocast:
            out = self.loaded.network(mix)
        out = out.float()
        if out.ndim == 3:                     # one stem: (batch, channels, n)
            out = out[:, None]
        out = out[0, :, :, : mix.shape[-1]]
        if out.shape[-1] < mix.shape[-1]:     # an iSTFT without a length stops at the last full hop
            out = torch.nn.functional.pad(out, (0, mix.shape[-1] - out.shape[-1]))
        if self.remove_index is not None:
            removed = out[self.remove_index]
            music = mix[0] - removed
        else:                                 # the model returns the wanted part (e.g. the dry signal)
            music = out[0]
            removed = mix[0] - music
        result = torch.stack([music, removed]).cpu().numpy()
        self.windows += 1
        self.seconds += time.perf_counter() - start
        return result
