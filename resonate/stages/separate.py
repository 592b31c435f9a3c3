"""Separate: split the recording into Demucs stems, treat each stem on its own, remix.

The stream goes through Demucs in windows (memory bounded by the window, not the show), the raw
stems are cached on disk and optionally written to ``--stems DIR``, then each stem gets its gain
and gating and the stems are summed back into the mix that the rest of the chain works on.

A community model from the catalogue (``model = "crowd_melband_aufr33_viperx"``, see
resonate.separation.community) is the other mode: it splits the recording into ``music`` and what
it removes (``crowd`` or ``reverb``), and ``keep_percent`` of the removed part goes back in.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resonate.audio.io import AudioWriter, output_suffix, sanitize_filename
from resonate.chunking import Counter, exact_length
from resonate.config import check_ranges, setting
from resonate.device import needs_fixed_shapes
from resonate.errors import StageUnavailable
from resonate.separation import cache as stem_cache
from resonate.separation import community
from resonate.separation.models import (
    DEFAULT_MODEL,
    ModelInfo,
    describe,
    load_model,
    model_segment,
    weights_fingerprint,
)
from resonate.separation.remix import DEFAULT_PRESET, StemProcessor, StemSettings, remix, resolve_settings
from resonate.separation.runner import WindowPlan, WindowSeparator, plan_windows, separate_stream
from resonate.stages import register
from resonate.stages.base import Stage, StageContext

FINGERPRINT_SECONDS = 1.0
CACHE_FORMAT = 1
MAX_COMMUNITY_OVERLAP = 0.5         # the engine's overlap-add crossfades at most half a window


@dataclass(frozen=True)
class SeparateConfig:
    model: str = DEFAULT_MODEL              # htdemucs, htdemucs_ft, htdemucs_6s, or a community model's name
    segment: float | None = None            # seconds per model pass; None = the model's own (7.8 s for htdemucs)
    overlap: float = 0.25                   # overlap between model passes, as in demucs
    shifts: int = 0                         # 0: one deterministic pass; N: average N randomly shifted passes
    window_seconds: float = 60.0            # audio held per window; bounds memory on long shows
    preset: str = DEFAULT_PRESET            # neutral, concert, vocal_lift, crowd_cut
    gains_db: dict[str, float] = field(default_factory=dict)    # per-stem gain, overrides the preset
    denoise: dict[str, float] = field(default_factory=dict)     # per-stem gating strength 0..1, overrides it
    cache: bool = True
    cache_max_gb: float = 20.0
    keep_percent: float = setting(
        20.0, label="Crowd or reverb kept", unit="%", range=(0.0, 100.0), step=5.0,
        help="with a community crowd or de-reverb model: how much of what it removes stays in the mix "
             "(0: all removed, 100: the recording unchanged)")

    def __post_init__(self):
        check_ranges(self)
        if self.segment is not None and self.segment <= 0:
            raise ValueError("segment must be positive")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError("overlap must be in [0, 1)")
        if self.shifts < 0:
            raise ValueError("shifts must be >= 0")
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if self.cache_max_gb < 0:
            raise ValueError("cache_max_gb must be >= 0")


def stem_paths(stems_dir: Path, input_path: Path | None, sources: list[str], fmt: str) -> dict[str, Path]:
    base = sanitize_filename(input_path.stem, "stems") if input_path is not None else "stems"
    return {s: Path(stems_dir) / f"{base}-{s}{output_suffix(fmt)}" for s in sources}


def take_frames(blocks: Iterator[np.ndarray], n: int) -> tuple[list[np.ndarray], Iterator[np.ndarray]]:
    """Pull blocks until at least ``n`` frames are in hand; returns them and the whole stream again."""
    head: list[np.ndarray] = []
    have = 0
    for b in blocks:
        head.append(b)
        have += b.shape[-1]
        if have >= n:
            break
    return head, itertools.chain(head, blocks)


@register
class SeparateStage(Stage):
    name = "separate"
    Config = SeparateConfig

    # -- setup

    def open(self, ctx: StageContext) -> None:
        cfg = self.config
        self.ctx = ctx
        self.model = None
        self.entry: stem_cache.CacheEntry | None = None
        self.separator: WindowSeparator | community.RoformerSeparator | None = None
        self.community = community.is_community_model(cfg.model)
        self._report: dict[str, Any] = {"model": cfg.model, "device": str(ctx.device), "preset": cfg.preset}
        if self.community:
            about = community.entry(cfg.model)
            self._report.update(kind="community", removes=about.purpose, keep_percent=cfg.keep_percent,
                                licence=about.licence)
        if ctx.channels not in (1, 2):
            raise StageUnavailable(f"separation handles mono and stereo recordings; this one has {ctx.channels} channels")

        self.cache_dir = Path(ctx.cache_dir).expanduser() if ctx.cache_dir is not None else stem_cache.default_cache_dir()
        self.key_fields = self._key_fields() if cfg.cache and ctx.input_path is not None else None
        self.key = stem_cache.entry_key(self.key_fields) if self.key_fields else None
        if self.key is not None:
            self.entry = stem_cache.lookup(self.cache_dir, self.key)
        if self.entry is not None:
            m = self.entry.meta
            self.info = ModelInfo(cfg.model, tuple(m["stems"]), m["model_rate"], m["model_channels"], m["max_segment"])
        else:
            self._load()
        self.settings = resolve_settings(self.info.sources, cfg.preset, cfg.gains_db, cfg.denoise)
        if self.community:
            self.settings = self._keeping(self.settings)
        self._report["stems"] = list(self.info.sources)

    def _keeping(self, settings: dict[str, StemSettings]) -> dict[str, StemSettings]:
        """The removed stem goes back in at ``keep_percent`` (on top of any gain given for it)."""
        removed = self.info.sources[1]
        keep = self.config.keep_percent / 100.0
        base = settings[removed]
        gain_db = base.gain_db + 20.0 * np.log10(keep) if keep > 0 else float("-inf")
        return {**settings, removed: StemSettings(float(gain_db), base.denoise)}

    def _key_fields(self) -> dict[str, Any]:
        cfg, ctx = self.config, self.ctx
        return {
            "format": CACHE_FORMAT,
            "input_sha256": stem_cache.file_sha256(Path(ctx.input_path)),
            "sample_rate": ctx.sample_rate, "channels": ctx.channels, "frames": ctx.total_frames,
            "model": cfg.model,
            "weights": (community.weights_fingerprint(cfg.model, ctx.models_dir) if self.community
                        else weights_fingerprint(cfg.model, ctx.models_dir)),
            "segment": cfg.segment, "overlap": cfg.overlap, "shifts": cfg.shifts,
            "window_seconds": cfg.window_seconds,
        }

    def _load(self) -> None:
        if self.community:
            self._load_community()
            return
        cfg = self.config
        self.fixed_shape = needs_fixed_shapes(self.ctx.device)
        self.model = self.ctx.models.load(load_model, cfg.model, self.ctx.models_dir)
        self.info = describe(self.model, cfg.model)
        segment = cfg.segment
        if segment is not None and segment > self.info.max_segment:
            self.ctx.warn(f"separation segment {segment:g} s is longer than {cfg.model} allows; "
                          f"using {self.info.max_segment:g} s")
            segment = None
        # apply_model's own segment value (a Fraction for htdemucs), so window sizes match its grid.
        self.segment = segment if segment is not None else model_segment(self.model)
        self.plan = plan_windows(self.info.samplerate, self.segment, cfg.overlap, cfg.window_seconds)
        self.separator = WindowSeparator(self.model, segment=self.segment, overlap=cfg.overlap,
                                         shifts=cfg.shifts, device=self.ctx.device)

    def _load_community(self) -> None:
        """A catalogued Roformer: one model pass per window of its trained length (``chunk_size``),
        windows crossfaded by ``overlap`` of a window. Always one window shape, on every device:
        the model was trained on that length, and MPS compiles one graph."""
        cfg, ctx = self.config, self.ctx
        loaded = ctx.models.load(community.load, cfg.model, ctx.models_dir, ctx.device)
        self.model = loaded
        self.info = ModelInfo(cfg.model, loaded.model.stems, loaded.samplerate, loaded.audio_channels,
                              loaded.chunk_size / loaded.samplerate)
        overlap = cfg.overlap
        if overlap > MAX_COMMUNITY_OVERLAP:
            ctx.warn(f"separation overlap {overlap:g} is more than community models take; using {MAX_COMMUNITY_OVERLAP:g}")
            overlap = MAX_COMMUNITY_OVERLAP
        crossfade = int(round(loaded.chunk_size * overlap))
        self.plan = WindowPlan(loaded.chunk_size, crossfade, loaded.chunk_size, loaded.chunk_size - crossfade)
        self.fixed_shape = True
        self.separator = community.RoformerSeparator(loaded, ctx.device)
        self._report.update(precision=self.separator.precision, chunk_seconds=round(loaded.chunk_size / loaded.samplerate, 3))

    # -- streaming

    def stream(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        source = Counter(blocks)
        head, stream = take_frames(iter(source), int(FINGERPRINT_SECONDS * self.ctx.sample_rate))
        if not head:
            return
        first = np.concatenate(head, axis=-1)[..., : int(FINGERPRINT_SECONDS * self.ctx.sample_rate)]
        fingerprint = stem_cache.block_fingerprint(first)

        if self.entry is not None and self.entry.meta.get("fingerprint") == fingerprint:
            self._report["cache"] = "hit"
            stems = self._from_cache(stream, source)
        else:
            if self.model is None:
                self._load()
            stems = self._separated(stream, source, fingerprint)
        yield from self._remixed(stems)

        # The pipeline reports the stage's own seconds and RTF; these are Demucs's share of them.
        if self.separator is not None:
            duration = source.frames / self.ctx.sample_rate
            self._report.update(
                model_seconds=round(self.separator.seconds, 3),
                model_rtf=round(self.separator.seconds / duration, 4) if duration else None,
                windows=self.separator.windows, window_seconds=round(self.plan.window / self.info.samplerate, 2),
            )

    def _separated(self, blocks: Iterator[np.ndarray], source: Counter, fingerprint: str) -> Iterator[np.ndarray]:
        """Stems from the model, stored in the cache as they stream by when there is room."""
        ctx, info = self.ctx, self.info
        stems = separate_stream(
            blocks, self.separator, n_stems=len(info.sources), in_rate=ctx.sample_rate, in_channels=ctx.channels,
            model_rate=info.samplerate, model_channels=info.audio_channels, plan=self.plan,
            fixed_shape=self.fixed_shape,
        )
        stems = exact_length(stems, source, (len(info.sources), ctx.channels))
        writer = self._cache_writer(fingerprint)
        if writer is None:
            yield from stems
            return
        try:
            for s in stems:
                writer.write(s)
                yield s
        except BaseException:
            writer.abort()
            raise
        writer.commit()
        freed = stem_cache.enforce_cap(self.cache_dir, self._cap_bytes, keep=self.key)
        self._report["cache"] = "stored" + (f", evicted {freed / 1e9:.2f} GB" if freed else "")

    def _cache_writer(self, fingerprint: str) -> stem_cache.StemCacheWriter | None:
        ctx, info = self.ctx, self.info
        self._cap_bytes = int(self.config.cache_max_gb * 1e9)
        if self.key is None:
            self._report["cache"] = "off" if not self.config.cache else "off (no input file to key on)"
            return None
        if ctx.total_frames is not None:
            size = ctx.total_frames * ctx.channels * 4 * len(info.sources)
            if size > self._cap_bytes:
                self._report["cache"] = f"off (stems would take {size / 1e9:.1f} GB, cap {self.config.cache_max_gb:g} GB)"
                return None
        meta = {"key": self.key_fields, "fingerprint": fingerprint, "model_rate": info.samplerate,
                "model_channels": info.audio_channels, "max_segment": info.max_segment,
                "sample_rate": ctx.sample_rate}
        try:
            return stem_cache.StemCacheWriter(self.cache_dir, self.key, list(info.sources), ctx.channels, meta)
        except OSError as exc:
            ctx.warn(f"stem cache disabled: cannot write to {self.cache_dir} ({exc})")
            self._report["cache"] = "off (not writable)"
            return None

    def _from_cache(self, blocks: Iterator[np.ndarray], source: Counter) -> Iterator[np.ndarray]:
        """Cached stems, read in step with the input so the output keeps its block structure."""
        reader = self.entry.reader()
        short = False
        try:
            for b in blocks:
                n = b.shape[-1]
                s = reader.read(n)
                if s.shape[-1] < n:
                    short = True
                    s = np.concatenate([s, np.zeros(s.shape[:-1] + (n - s.shape[-1],), np.float32)], axis=-1)
                yield s
        finally:
            reader.close()
        if short or source.frames != int(self.entry.meta["frames"]):
            self.ctx.warn("cached stems did not match this input's length; the cache entry was dropped, "
                          "run again to separate afresh")
            stem_cache.clear_entry(self.entry)

    def _remixed(self, stems: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        ctx, sources = self.ctx, list(self.info.sources)
        processed = StemProcessor(sources, self.settings, ctx.sample_rate).stream(stems)
        with ExitStack() as files:
            writers = []
            if ctx.stems_dir is not None:
                fmt = ctx.output_format or {}
                paths = stem_paths(Path(ctx.stems_dir), ctx.input_path, sources, fmt.get("format", "wav"))
                for path in paths.values():
                    writers.append(files.enter_context(AudioWriter(
                        path, ctx.sample_rate, ctx.channels, format=fmt.get("format", "wav"),
                        bit_depth=fmt.get("bit_depth", "24"), mp3_bitrate=fmt.get("mp3_bitrate", 320))))
                self._report["stem_files"] = [str(p) for p in paths.values()]
            for s in processed:
                for w, stem in zip(writers, s):
                    w.write(stem)
                yield remix(s)

    def report(self) -> dict[str, Any]:
        return dict(self._report)

