"""The extend stage: bandwidth extension. Brings back the highs a phone or a codec cut.

Two passes, because the cutoff is a property of the whole file: pass 1 accumulates the long-term
spectrum of everything that reaches the stage (constant memory, :class:`LongTermSpectrum`) and
``plan`` finds the cutoff (:func:`detect_cutoff`); pass 2 regenerates the band from the cutoff up
to ``top_hz`` (or just under Nyquist) with the learned envelope model and band replication
(:mod:`resonate.models.extend`), chunk by chunk. Full-band input, or a cutoff above
``max_cutoff_hz``, passes through unchanged and the report says "full band, nothing to extend".
Nothing below the cutoff changes; ``strength`` scales what is added.

The cutoff is also measured on the recording as read (``measure_source``): the stages before
this one can hide it (restoration leaves faint sound above a phone's 5 kHz roll-off, and the
cliff is gone), and what the recording never had is still missing. The lower of the two cutoffs
is the one extended from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resonate.config import check_ranges, setting
from resonate.device import needs_fixed_shapes
from resonate.dsp.bandwidth import MIN_DROP_DB, Bandwidth, LongTermSpectrum, detect_cutoff
from resonate.errors import ResonateError, StageUnavailable
from resonate.stages import register
from resonate.stages.base import StageContext, TwoPassStage

FULL_BAND = "full band, nothing to extend"
MIN_ADDED_HZ = 500.0      # a band narrower than this between cutoff and top is not worth adding


@dataclass(frozen=True)
class ExtendConfig:
    strength: float = setting(1.0, label="Extension strength", range=(0.0, 1.0), step=0.05,
                              help="level of the regenerated highs: 0 = none added, 1 = the level the model predicts")
    max_cutoff_hz: float = setting(16500.0, label="Extend cutoffs up to", unit="Hz", range=(5000.0, 22000.0),
                                   step=100.0, help="a recording whose highs stop above this counts as full band")
    top_hz: float = setting(19500.0, label="Regenerate up to", unit="Hz", range=(6000.0, 24000.0), step=100.0,
                            help="the top of the regenerated band (never above the output's Nyquist frequency)")
    min_drop_db: float = MIN_DROP_DB   # how far the spectrum must fall at the cutoff (to the noise floor)
    weights: str = ""                  # a .safetensors file; empty = the shipped model
    chunk_seconds: float = 8.0
    overlap_seconds: float = 0.5

    def __post_init__(self):
        check_ranges(self)


@register
class ExtendStage(TwoPassStage):
    name = "extend"
    Config = ExtendConfig
    measures_source = True

    def open(self, ctx: StageContext) -> None:
        from resonate.models.extend import DEFAULT_EXTEND_WEIGHTS, load_extend_model

        path = Path(self.config.weights) if self.config.weights else DEFAULT_EXTEND_WEIGHTS
        if not path.exists():
            raise StageUnavailable(f"bandwidth-extension weights not found at {path}")
        try:
            self.model = ctx.models.load(load_extend_model, path, ctx.device)
        except ResonateError as exc:
            raise StageUnavailable(str(exc)) from exc
        self.ctx = ctx
        self.weights_path = path
        self.spectrum = LongTermSpectrum(ctx.sample_rate, ctx.channels)
        self.source_spectrum = LongTermSpectrum(ctx.source_sample_rate or ctx.sample_rate, ctx.channels)
        self.measured_on = "its input"
        self.bandwidth: Bandwidth | None = None
        self.extender = None
        self.note = ""
        self._seconds_in = 0.0

    def measure_source(self, block: np.ndarray) -> None:
        self.source_spectrum.update(block)

    def measure(self, block: np.ndarray) -> None:
        self.spectrum.update(block)

    def _cutoff(self) -> Bandwidth:
        """The stream's bandwidth, or the recording's where that is lower (see the module's doc)."""
        cfg, sr = self.config, self.ctx.sample_rate
        here = detect_cutoff(self.spectrum.power, sr, cfg.min_drop_db)
        self.measured_on = "its input"
        if not self.source_spectrum.frames:
            return here
        source = detect_cutoff(self.source_spectrum.power, self.source_spectrum.sample_rate, cfg.min_drop_db)
        if source.limited and source.cutoff_hz < min(here.cutoff_hz or np.inf, here.top_hz):
            self.measured_on = "the recording as read"
            return Bandwidth(source.cutoff_hz, source.drop_db, here.top_hz)
        return here

    def plan(self, reread: Callable[[], Iterable[np.ndarray]] | None = None) -> None:
        """Between the passes: find the cutoff and decide what to add (the spool is not reread)."""
        from resonate.models.extend import BandExtender

        cfg, sr = self.config, self.ctx.sample_rate
        self.bandwidth = found = self._cutoff()
        self.extender = None
        if not found.limited:
            self.note = FULL_BAND
            return
        if found.cutoff_hz > cfg.max_cutoff_hz:
            self.note = f"{FULL_BAND} (the highs stop at {found.cutoff_hz / 1000:.1f} kHz, above {cfg.max_cutoff_hz / 1000:g})"
            return
        top = min(cfg.top_hz, found.top_hz)
        if top - found.cutoff_hz < MIN_ADDED_HZ:
            self.note = (f"cut at {found.cutoff_hz / 1000:.1f} kHz, at the top of what is regenerated "
                         f"({top / 1000:.1f} kHz, under Nyquist): nothing to extend")
            return
        if cfg.strength == 0.0:
            self.note = f"cut at {found.cutoff_hz / 1000:.1f} kHz; strength 0: nothing added"
            return
        self.extender = BandExtender(self.model, sr, found.cutoff_hz, top, cfg.strength, self.ctx.device,
                                     chunk_seconds=cfg.chunk_seconds, overlap_seconds=cfg.overlap_seconds,
                                     fixed_shape=needs_fixed_shapes(self.ctx.device))
        lay = self.extender.layout
        self.note = f"extended {lay.cutoff_hz / 1000:.1f}-{lay.top_hz / 1000:.1f} kHz"

    def apply(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        if self.bandwidth is None:
            self.plan()
        for block in (self.extender.stream(blocks) if self.extender is not None else blocks):
            self._seconds_in += block.shape[-1] / self.ctx.sample_rate
            yield block

    def report(self) -> dict:
        found, ext = self.bandwidth, self.extender
        lay = ext.layout if ext is not None else None
        return {
            "detected_cutoff_hz": round(found.cutoff_hz, 1) if found is not None and found.limited else None,
            "cliff_db": round(found.drop_db, 1) if found is not None else None,
            "cutoff_measured_on": self.measured_on,
            "extended": ext is not None,
            "added_band_hz": [round(lay.cutoff_hz, 1), round(lay.top_hz, 1)] if lay is not None else None,
            # Energy of what was added relative to the whole signal's (dB); None when nothing was.
            "added_db": round(ext.added_db, 2) if ext is not None and ext.added_db is not None else None,
            "note": self.note,
            "model": self.weights_path.name,
            "device": str(self.ctx.device),
            "strength": self.config.strength,
            # Model and STFT time only (the spool and the rest of the chain excluded).
            "realtime_factor": round(ext.compute_s / self._seconds_in, 4) if ext is not None and self._seconds_in else None,
        }
