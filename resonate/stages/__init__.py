"""The stage registry. Order is fixed; a stage module registers itself when imported."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from resonate.stages.base import Stage, StageContext, TwoPassStage

STAGE_ORDER: tuple[str, ...] = ("separate", "denoise", "restore", "match", "extend", "master", "loudness")

# Modules that provide stages; each defines one Stage subclass decorated with @register.
_STAGE_MODULES = {
    "separate": "resonate.stages.separate",
    "denoise": "resonate.stages.denoise",
    "restore": "resonate.stages.restore",
    "match": "resonate.stages.match",
    "extend": "resonate.stages.extend",
    "master": "resonate.stages.master",
    "loudness": "resonate.stages.loudness",
}



@dataclass(frozen=True)
class StageInfo:
    """How a stage is named and explained to users (the app's panels and About page read this)."""

    title: str          # "Separate"
    detail: str         # what the panel title adds in brackets ("Demucs stems"), or ""
    summary: str        # a paragraph for users

    @property
    def panel_title(self) -> str:
        return f"{self.title} ({self.detail})" if self.detail else self.title


# Here rather than on the Stage classes: a stage whose module cannot be imported (a missing
# optional package) is still explained, as not installed.
STAGE_INFO: dict[str, StageInfo] = {
    "separate": StageInfo("Separate", "Demucs stems", (
        "Splits the recording into stems (drums, bass, vocals and the rest; six with the "
        "htdemucs_6s model, adding guitar and piano), treats each on its own and mixes them back: the "
        "crowd mostly lands in the *other* stem, which can be turned down or gated. The stems can be "
        "downloaded. They are kept on disk, so changing later settings does not separate again.")),
    "denoise": StageInfo("Denoise", "", (
        "Learns the steady noise floor (hiss, hum, room rumble) from the quietest stretch, or "
        "from a stretch you pick, and turns down what stays below it. Gentle by default: music gated "
        "too hard sounds thin and watery.")),
    "restore": StageInfo("Restore", "learned model", (
        "Resonate's own learned model removes what the room and the crowd added: hall "
        "echo, audience chatter and applause, the colouring of the PA and of a phone's microphone. "
        "Strength blends restored and original.")),
    "match": StageInfo("Match", "studio version as reference", (
        "Give the studio version of the songs and Resonate makes the recording sound like it: it "
        "compares the two long-term spectra (each averaged over an octave) and corrects the "
        "difference the PA, the hall and the phone made with a linear-phase EQ, at most ±12 dB, never "
        "boosting what the recording does not hold (its noise, above a codec's cutoff). Several "
        "references can each cover a time range of the show. Strength blends the correction; without "
        "a reference the stage is skipped, and with one the Master stage's tonal EQ stays neutral "
        "unless you set it.")),
    "extend": StageInfo("Extend", "bandwidth extension", (
        "Brings back the highs a phone or a low-bit-rate MP3/AAC cut (cymbals, air, sibilance). It "
        "finds where the recording's spectrum falls to the noise floor (7-16 kHz for such files) and "
        "regenerates the band above from the band below, at the level a small learned model "
        "predicts. Full-band recordings pass unchanged; nothing below the cutoff is touched. "
        "Strength sets how loud the new highs are.")),
    "master": StageInfo("Master", "EQ, compressor, limiter", (
        "Tone and dynamics like a mastering desk: a high-pass against rumble, low and high "
        "shelves, up to four EQ bands (linear phase: no band moves in time against another), a "
        "gentle compressor and a limiter.")),
    "loudness": StageInfo("Loudness", "", (
        "Measures the loudness of the whole recording (as streaming services do, in LUFS) "
        "and brings it to your target, with a true-peak limiter so the master never goes over its "
        "ceiling. −14 LUFS suits streaming, −16 podcasts, −23 broadcast.")),
}

REGISTRY: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    REGISTRY[cls.name] = cls
    return cls


def load_registry() -> dict[str, type[Stage]]:
    """Import every stage module that exists. A stage whose module is absent is simply not offered."""
    for name, module in _STAGE_MODULES.items():
        if name in REGISTRY:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return {name: REGISTRY[name] for name in STAGE_ORDER if name in REGISTRY}


__all__ = ["STAGE_ORDER", "REGISTRY", "Stage", "StageContext", "TwoPassStage", "register", "load_registry"]
