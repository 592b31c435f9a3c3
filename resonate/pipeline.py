"""The staged pipeline, read top to bottom: read → separate → denoise → restore → master →
(measure) → loudness → write.

Audio flows as a stream of (channels, n) float32 blocks; no stage ever holds the whole file.
Loudness needs the integrated loudness of everything before it, so the first pass writes the
processed stream to a temporary float32 file while measuring it, and the second pass reads it
back through the gain and true-peak limiter into the final, atomically written output.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from resonate import jobfiles
from resonate.audio.io import (
    MAX_RATE,
    MIN_RATE,
    AudioWriter,
    NonFiniteCounter,
    parse_bit_depth,
    probe,
    read_blocks,
)
from resonate.audio.resample import StreamResampler, resampled_length
from resonate.config import config_from_dict, merge_config
from resonate.device import pick_device, release_free_memory, tune_allocator
from resonate.dsp.loudness import LoudnessMeter
from resonate.errors import ResonateError, StageUnavailable
from resonate.presets import DEFAULT_PRESET, load_preset
from resonate.stages import STAGE_ORDER, load_registry
from resonate.stages.base import Stage, StageContext
from resonate.streams import WriteBehind

BLOCK_FRAMES = 1 << 16
LONG_FILE_SECONDS = 3600.0
OUTPUT_RATE_RANGE = (MIN_RATE, MAX_RATE)   # Hz, the rates Resonate reads too
ProgressFn = Callable[[str, float], None]


@dataclass(frozen=True)
class OutputOptions:
    format: str = "wav"                 # wav | mp3
    bit_depth: str = "24"               # 16 | 24 | 32f (WAV)
    mp3_bitrate: int = 320
    sample_rate: int | None = None      # None keeps the input's rate; else within OUTPUT_RATE_RANGE

    def __post_init__(self):
        object.__setattr__(self, "format", self.format.lower())
        if self.format not in ("wav", "mp3"):
            raise ResonateError(f"unsupported output format '{self.format}' (choose wav or mp3)")
        object.__setattr__(self, "bit_depth", parse_bit_depth(self.bit_depth))
        low, high = OUTPUT_RATE_RANGE
        if self.sample_rate is not None and not low <= self.sample_rate <= high:
            raise ResonateError(f"invalid output settings: sample rate must be between {low} and {high} Hz, "
                                f"got {self.sample_rate}")

    def file_bytes(self, frames: int, sample_rate: int, channels: int) -> int:
        """About how large a file of ``frames`` at ``sample_rate`` is in this format (for the free-space check)."""
        if self.format == "mp3":
            return int(frames / sample_rate * self.mp3_bitrate * 1000 / 8) + 4096
        return frames * channels * {"16": 2, "24": 3, "32f": 4}[self.bit_depth] + 4096


@dataclass(frozen=True)
class ChainSettings:
    """What the user chose: a preset, per-stage overrides on top of it, and stages to bypass."""

    preset: str = DEFAULT_PRESET
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = [s for s in self.skip if s not in STAGE_ORDER]
        if unknown:
            raise ResonateError(f"unknown stage '{unknown[0]}' (stages: {', '.join(STAGE_ORDER)})")


def stage_configs(settings: ChainSettings) -> dict[str, Any]:
    """Config dataclass of every available stage: defaults ← preset ← overrides."""
    registry = load_registry()
    preset = load_preset(settings.preset)
    bad = [k for k in settings.overrides if k not in STAGE_ORDER]
    if bad:
        raise ResonateError(f"unknown stage '{bad[0]}' in settings")
    configs = {}
    for name, cls in registry.items():
        cfg = config_from_dict(cls.Config, preset.get(name), f"{settings.preset}.{name}")
        configs[name] = merge_config(cfg, settings.overrides.get(name), name)
    return configs


@dataclass
class StageRecord:
    name: str
    stage: Stage | None
    skipped: bool = False
    reason: str | None = None
    inclusive: float = 0.0
    seconds: float = 0.0


class _Meter:
    """Wraps a stage's stream: inclusive wall time and progress reporting."""

    def __init__(self, record: StageRecord, total: int | None, progress: ProgressFn | None):
        self.record, self.total, self.progress, self.done = record, total, progress, 0

    def wrap(self, it: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        it = iter(it)
        while True:
            t0 = time.perf_counter()
            try:
                block = next(it)
            except StopIteration:
                self.record.inclusive += time.perf_counter() - t0
                break
            self.record.inclusive += time.perf_counter() - t0
            self.done += block.shape[-1]
            if self.progress and self.total:
                self.progress(self.record.name, min(1.0, self.done / self.total))
            yield block
        if self.progress:
            self.progress(self.record.name, 1.0)


def _tap(blocks: Iterator[np.ndarray], fn: Callable[[np.ndarray], None]) -> Iterator[np.ndarray]:
    for b in blocks:
        fn(b)
        yield b


def _exact_length(blocks: Iterator[np.ndarray], total: int, channels: int) -> Iterator[np.ndarray]:
    """Guarantee the promised length (resamplers can be off by a sample at the very end)."""
    done = 0
    for b in blocks:
        if done + b.shape[-1] > total:
            b = b[:, : total - done]
        done += b.shape[-1]
        if b.shape[-1]:
            yield b
    if done < total:
        yield np.zeros((channels, total - done), dtype=np.float32)


def _check_block(name: str, channels: int) -> Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]]:
    def check(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for b in blocks:
            if b.ndim != 2 or b.shape[0] != channels:
                raise RuntimeError(f"stage {name} produced a block of shape {b.shape}, expected ({channels}, n)")
            yield b.astype(np.float32, copy=False)
    return check


def process_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    settings: ChainSettings | None = None,
    output: OutputOptions | None = None,
    device: str = "auto",
    models_dir: str | os.PathLike | None = None,
    stems_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    warn: Callable[[str], None] | None = None,
    work_dir: str | os.PathLike | None = None,
    block_frames: int = BLOCK_FRAMES,
) -> dict[str, Any]:
    """Restore one file. Returns the job report (JSON-serialisable). Raises ResonateError on bad input."""
    started = time.perf_counter()
    settings = settings or ChainSettings()
    output = output or OutputOptions()
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        if warn:
            warn(msg)

    src, dst = Path(input_path), Path(output_path)
    info = probe(src)
    jobfiles.refuse_overwriting_inputs([src], [("output", dst)])
    # Where this job will write, checked before any work: a read-only folder found only at the
    # end of the first pass costs the whole pass.
    jobfiles.check_folder_writable(dst.parent, "output")
    if stems_dir is not None and "separate" not in settings.skip:
        jobfiles.check_folder_writable(stems_dir, "stems")
    spool_root = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
    removed = jobfiles.remove_leftovers([spool_root, dst.parent, stems_dir])
    if removed:
        _warn(jobfiles.leftovers_message(removed))
    if info.seconds > LONG_FILE_SECONDS:
        _warn(f"long recording ({info.seconds / 3600:.1f} h): processing streams in bounded memory, "
              "watch the progress bars for the remaining time")
    dev = pick_device(device)
    tune_allocator()
    out_rate = output.sample_rate or info.sample_rate
    ctx = StageContext(
        sample_rate=info.sample_rate, channels=info.channels, total_frames=info.frames, device=dev,
        models_dir=Path(models_dir) if models_dir else None, input_path=src,
        stems_dir=Path(stems_dir) if stems_dir else None,
        output_format={"format": output.format, "bit_depth": output.bit_depth, "mp3_bitrate": output.mp3_bitrate},
        cache_dir=Path(cache_dir) if cache_dir else None, warn=_warn,
    )

    # Build and open the stages; one that cannot run here is skipped with its reason.
    configs = stage_configs(settings)
    registry = load_registry()
    records: list[StageRecord] = []
    for name in STAGE_ORDER:
        if name not in registry:
            continue
        if name in settings.skip:
            records.append(StageRecord(name, None, skipped=True, reason="bypassed"))
            continue
        stage = registry[name](configs[name])
        try:
            # Two-pass stages (loudness) come after any output resampling: they work at the output rate.
            stage.open(dataclasses.replace(ctx, sample_rate=out_rate) if getattr(stage, "two_pass", False) else ctx)
        except StageUnavailable as exc:
            _warn(f"{name} skipped: {exc}")
            records.append(StageRecord(name, None, skipped=True, reason=str(exc)))
            continue
        records.append(StageRecord(name, stage))

    active = [r for r in records if not r.skipped]
    split = next((i for i, r in enumerate(active) if getattr(r.stage, "two_pass", False)), len(active))
    first_pass, two_pass = active[:split], active[split:]
    nonfinite = NonFiniteCounter()
    in_meter = LoudnessMeter(info.sample_rate, info.channels)
    out_meter = LoudnessMeter(out_rate, info.channels)
    out_frames = resampled_length(info.frames, info.sample_rate, out_rate)
    # Room for what this job will write, checked before the work (the writes would fail at the end).
    needs = [(dst.parent, output.file_bytes(out_frames, out_rate, info.channels), "output")]
    if two_pass:
        jobfiles.check_folder_writable(spool_root, "temporary spool")
        # float32 planar blocks, each after an 8-byte frame count; blocks are thousands of frames.
        needs.append((spool_root, out_frames * info.channels * 4 + out_frames // 64 + 4096, "temporary spool"))
    separate = next((r.stage for r in records if r.name == "separate" and not r.skipped), None)
    if separate is not None and ctx.stems_dir is not None:
        from resonate.stages.separate import stem_paths

        sources = list(separate.report().get("stems", ()))
        stem_files = list(stem_paths(ctx.stems_dir, src, sources, output.format).values())
        jobfiles.refuse_overwriting_inputs([src], [("output", dst)] + [("stem file", p) for p in stem_files])
        stem_bytes = output.file_bytes(info.frames, info.sample_rate, info.channels)
        needs.append((ctx.stems_dir, len(stem_files) * stem_bytes, "stems"))
    jobfiles.check_free_space(needs)

    def chain(blocks: Iterator[np.ndarray], recs: list[StageRecord], total: int) -> Iterator[np.ndarray]:
        for r in recs:
            blocks = _Meter(r, total, progress).wrap(_check_block(r.name, info.channels)(r.stage.stream(blocks)))
        return blocks

    # Reading (and metering the input) is timed on its own, so that it is not billed to the first stage.
    reading = StageRecord("read", None)
    blocks: Iterator[np.ndarray] = _Meter(reading, None, None).wrap(
        _tap(read_blocks(src, block_frames, nonfinite=nonfinite), in_meter.update))
    blocks = chain(blocks, first_pass, info.frames)
    if out_rate != info.sample_rate:
        blocks = StreamResampler(info.sample_rate, out_rate, info.channels).stream(blocks)
    blocks = _exact_length(blocks, out_frames, info.channels)

    reading_spool = StageRecord("spool", None)
    with ExitStack() as job_files:
        if two_pass:
            # Pass 1: everything up to loudness, measured, spooled to a float32 file on disk.
            tmp = job_files.enter_context(jobfiles.spool_folder(spool_root))
            spool = Path(tmp) / "pass1.f32"
            measure = two_pass[0].stage.measure
            t_measure = 0.0
            spool_failure = _WriteFailures("temporary spool file", spool,
                                           "; set TMPDIR to a folder with more room" if work_dir is None else "")
            with spool_failure:
                f = open(spool, "wb")  # noqa: SIM115 - closed by the with below
            with f:
                for b in blocks:
                    t0 = time.perf_counter()
                    measure(b)
                    t_measure += time.perf_counter() - t0
                    with spool_failure:
                        _write_spool_block(f, b)
                with spool_failure:
                    f.flush()
            release_free_memory()
            if hasattr(two_pass[0].stage, "plan"):   # loudness: what the limiter will take, from the spool
                t0 = time.perf_counter()
                two_pass[0].stage.plan(lambda: _read_spool(spool, info.channels, block_frames))
                t_measure += time.perf_counter() - t0
            two_pass[0].inclusive += t_measure
            blocks = _Meter(reading_spool, None, None).wrap(_read_spool(spool, info.channels, block_frames))
            blocks = chain(blocks, two_pass, out_frames)

        # The output is written beside its target in a folder named with this process's PID,
        # renamed into place when complete, with the user's usual file mode.
        output_failure = _WriteFailures("output", dst)
        with output_failure:
            staged = job_files.enter_context(jobfiles.staged_output(dst))
            writer = job_files.enter_context(
                AudioWriter(staged, out_rate, info.channels, output.format, output.bit_depth, output.mp3_bitrate))

        def finish(b: np.ndarray) -> None:
            out_meter.update(b)
            with output_failure:
                writer.write(b)

        with WriteBehind(finish) as sink:
            for b in blocks:
                # A copy the writer owns: a stage may reuse its buffers for the next block.
                sink.put(np.array(b, dtype=np.float32, order="C"))
        with output_failure:
            job_files.close()   # finish the file, rename it into place, remove the temporary folders

    # Exclusive time per stage: a stage's inclusive time includes everything upstream of it.
    prev = reading.inclusive
    for r in first_pass:
        r.seconds, prev = max(0.0, r.inclusive - prev), r.inclusive
    prev = reading_spool.inclusive
    for r in two_pass:
        r.seconds, prev = max(0.0, r.inclusive - prev), r.inclusive
    if nonfinite.count:
        _warn(f"input had {nonfinite.count} NaN/inf samples; they were replaced with silence")

    elapsed = time.perf_counter() - started
    return {
        "input": str(src),
        "output": str(dst),
        "sample_rate": info.sample_rate,
        "output_sample_rate": out_rate,
        "channels": info.channels,
        "seconds": round(info.seconds, 3),
        "device": str(dev),
        "preset": settings.preset,
        "format": output.format,
        "bit_depth": output.bit_depth if output.format == "wav" else None,
        "mp3_bitrate": output.mp3_bitrate if output.format == "mp3" else None,
        "input_loudness": in_meter.summary(),
        "output_loudness": out_meter.summary(),
        "stages": [
            {
                "name": r.name,
                "seconds": round(r.seconds, 3),
                "rtf": round(r.seconds / info.seconds, 4) if info.seconds else None,
                "skipped": r.skipped,
                **({"reason": r.reason} if r.reason else {}),
                **(r.stage.report() if r.stage is not None else {}),
            }
            for r in records
        ],
        "warnings": warnings,
        "elapsed_seconds": round(elapsed, 3),
        "rtf": round(elapsed / info.seconds, 4) if info.seconds else None,
    }


class _WriteFailures:
    """Failures writing ``path`` (disk full, read-only folder, no permission) become one clear error.

    Reusable; use it in the thread that writes (see :func:`_write_failure`).
    """

    def __init__(self, what: str, path: Path, hint: str = ""):
        self.what, self.path, self.hint = what, path, hint

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, OSError | sf.SoundFileRuntimeError):
            raise ResonateError(f"cannot write the {self.what} {self.path}: {_write_failure(exc)}{self.hint}") from exc


# What a failed write of libsndfile (which says only "System error.") most likely ran into.
_WRITE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EIO", "EACCES")
                          if hasattr(errno, name))


def _write_failure(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    # cffi keeps the C errno of the last call per thread: the failed write's, in the writing thread.
    code = getattr(getattr(sf, "_ffi", None), "errno", 0)
    return os.strerror(code) if code in _WRITE_ERRNOS else str(exc)


# The spool holds the blocks as the stages made them, each channel-planar after its frame count:
# no interleaving on the way out and back (600 s of stereo: 0.1-0.2 s instead of 0.6 s).
_SPOOL_HEADER = np.dtype("<i8")


def _write_spool_block(f, block: np.ndarray) -> None:
    f.write(np.array(block.shape[-1], dtype=_SPOOL_HEADER).tobytes())
    f.write(np.ascontiguousarray(block, dtype=np.float32).data)


def _read_spool(path: Path, channels: int, block_frames: int) -> Iterator[np.ndarray]:
    """The spooled blocks again, none longer than ``block_frames`` (pass 2's working set stays small)."""
    with open(path, "rb") as f:
        while header := f.read(_SPOOL_HEADER.itemsize):
            block = np.empty((channels, int(np.frombuffer(header, dtype=_SPOOL_HEADER)[0])), dtype=np.float32)
            if block.nbytes and f.readinto(memoryview(block.reshape(-1)).cast("B")) != block.nbytes:
                raise ResonateError("the temporary spool file was cut short (disk full?)")
            for start in range(0, max(1, block.shape[-1]), block_frames):
                yield block[:, start: start + block_frames]
