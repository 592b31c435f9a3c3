"""The staged pipeline, read top to bottom: read → separate → denoise → restore → master →
(measure) → loudness → write.

Audio flows as a stream of (channels, n) float32 blocks; no stage ever holds the whole file.
Loudness needs the integrated loudness of everything before it, so the first pass writes the
processed stream to a temporary float32 file while measuring it, and the second pass reads it
back through the gain and true-peak limiter into the final, atomically written output. Loudness
is a two-pass stage (:class:`resonate.stages.base.TwoPassStage`); several of them chain, each
with its own spool of what reaches it.

:func:`process_file` reads as the job's phases: probe and checks → job environment → open the
stages → wire the stream → pass 1 (spool and measure) → pass 2 (apply and write) → time
attribution → report.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
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
    AudioInfo,
    AudioWriter,
    NonFiniteCounter,
    parse_bit_depth,
    probe,
    read_blocks,
)
from resonate.audio.resample import StreamResampler, resampled_length
from resonate.config import config_from_dict, merge_config, setting_info
from resonate.device import pick_device, release_free_memory, tune_allocator
from resonate.dsp.loudness import LoudnessMeter
from resonate.errors import ResonateError, StageUnavailable
from resonate.modelcache import ModelLoader
from resonate.presets import DEFAULT_PRESET, load_preset
from resonate.stages import STAGE_ORDER, load_registry
from resonate.stages.base import Stage, StageContext, TwoPassStage
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
    """What the user chose: a preset, per-stage overrides on top of it, and stages to bypass.

    ``skip`` None means the preset's own list (its ``skip`` key; none for the built-in presets);
    a tuple is the whole list (the app's Bypass toggles start from the preset's and can undo it).
    """

    preset: str = DEFAULT_PRESET
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip: tuple[str, ...] | None = None

    def __post_init__(self):
        skip = load_preset(self.preset).get("skip", ()) if self.skip is None else self.skip
        object.__setattr__(self, "skip", tuple(skip))
        unknown = [s for s in self.skip if s not in STAGE_ORDER]
        if unknown:
            raise ResonateError(f"unknown stage '{unknown[0]}' (stages: {', '.join(STAGE_ORDER)})")

    def bypassing(self, stages: Iterable[str]) -> ChainSettings:
        """These settings with ``stages`` bypassed as well (the CLI's ``--skip`` adds to the preset's)."""
        more = tuple(s for s in stages if s not in self.skip)
        return dataclasses.replace(self, skip=self.skip + more) if more else self


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
    # With a studio reference the match stage sets the tone; the master's EQ from the preset would
    # undo part of it, so it stays flat unless the user set it to something other than the
    # preset's (the app hands every control's value over); its compressor and limiter stay.
    match = configs.get("match")
    if match is not None and match.references and "match" not in settings.skip and "master" in configs:
        from resonate.stages.master import with_neutral_eq

        from_preset = config_from_dict(registry["master"].Config, preset.get("master"), f"{settings.preset}.master")
        chosen = merge_config(from_preset, settings.overrides.get("master"), "master")
        user_set = [f.name for f in dataclasses.fields(chosen) if getattr(chosen, f.name) != getattr(from_preset, f.name)]
        configs["master"] = with_neutral_eq(configs["master"], keep=user_set)
    # Loudness that follows the studio version: its integrated loudness becomes the target (read
    # once per file and cached; a bad reference is the same one-line error as for matching).
    loudness = configs.get("loudness")
    if loudness is not None and loudness.follow_reference:
        if match is not None and match.references:
            from resonate.stages.match import references_lufs

            low, high = setting_info(loudness, "target_lufs").range
            target = round(float(np.clip(references_lufs(match.references), low, high)), 2)
            configs["loudness"] = dataclasses.replace(loudness, target_lufs=target)
        else:
            configs["loudness"] = dataclasses.replace(loudness, follow_reference=False)
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


@dataclass(frozen=True)
class JobEnvironment:
    """Where and with what jobs run; the same for every file of a batch.

    ``device`` is a name (auto, cpu, cuda, mps); ``models_dir`` a local folder of Demucs weights
    (offline use); ``cache_dir`` the stem cache (None: the default); ``work_dir`` the folder for
    the temporary spool (None: the system's temporary folder); ``block_frames`` the length of the
    blocks read from the input and from the spool; ``models`` the loader the stages get their
    models from (one loader for a batch loads each model once).
    """

    device: str = "auto"
    models_dir: Path | None = None
    cache_dir: Path | None = None
    work_dir: Path | None = None
    block_frames: int = BLOCK_FRAMES
    models: ModelLoader = field(default_factory=ModelLoader, compare=False)

    def __post_init__(self):
        for name in ("models_dir", "cache_dir", "work_dir"):
            value = getattr(self, name)
            object.__setattr__(self, name, Path(value) if value else None)

    @property
    def spool_root(self) -> Path:
        return self.work_dir if self.work_dir is not None else Path(tempfile.gettempdir())


@dataclass
class _Job:
    """One file's job: what was asked, what the input is, and what it gathers on the way."""

    src: Path
    dst: Path
    settings: ChainSettings
    output: OutputOptions
    stems_dir: Path | None
    info: AudioInfo
    out_rate: int
    out_frames: int
    user_warn: Callable[[str], None] | None
    warnings: list[str] = field(default_factory=list)
    nonfinite: NonFiniteCounter = field(default_factory=NonFiniteCounter)
    in_meter: LoudnessMeter | None = None
    out_meter: LoudnessMeter | None = None

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        if self.user_warn:
            self.user_warn(msg)


@dataclass
class _Pass:
    """A two-pass stage and the one-pass stages after it (up to the next two-pass stage): they
    stream from the spool of what reached the two-pass stage."""

    stage: StageRecord
    after: list[StageRecord] = field(default_factory=list)
    spool_read: StageRecord = field(default_factory=lambda: StageRecord("spool", None))

    @property
    def records(self) -> list[StageRecord]:
        return [self.stage, *self.after]


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
    *,
    env: JobEnvironment | None = None,
) -> dict[str, Any]:
    """Restore one file. Returns the job report (JSON-serialisable). Raises ResonateError on bad input.

    ``env`` (a :class:`JobEnvironment`) replaces ``device``, ``models_dir``, ``cache_dir``,
    ``work_dir`` and ``block_frames`` when given.
    """
    started = time.perf_counter()
    env = env or JobEnvironment(device, models_dir, cache_dir, work_dir, block_frames)

    # Probe the input and check, before any work, everything that would make the job fail late.
    job = _probe_and_check(Path(input_path), Path(output_path), settings or ChainSettings(),
                           output or OutputOptions(), Path(stems_dir) if stems_dir else None, env, warn)
    # The job's environment as the stages see it.
    dev = pick_device(env.device)
    tune_allocator()
    ctx = _stage_context(job, env, dev)
    # Open the stages; one that cannot run here is skipped with its reason.
    records = _open_stages(job, ctx)
    first_pass, passes = _split_passes(records)
    _check_room(job, env, records, passes)

    # Wire the stream: read (metered) → one-pass stages → output rate.
    reading = StageRecord("read", None)
    blocks = _Meter(reading, None, None).wrap(
        _tap(read_blocks(job.src, env.block_frames, nonfinite=job.nonfinite), job.in_meter.update))
    for r in records:
        if not r.skipped and r.stage.measures_source:
            blocks = _tap(blocks, r.stage.measure_source)
    blocks = _run_stages(blocks, first_pass, job.info.frames, job.info.channels, progress)
    blocks = _to_output_rate(blocks, job)

    with ExitStack() as job_files:
        # Pass 1: the stream that reaches each two-pass stage, measured while spooled to disk;
        # the stages after it stream from that spool.
        spool_folder = Path(job_files.enter_context(jobfiles.spool_folder(env.spool_root))) if passes else None
        for index, two_pass in enumerate(passes):
            spool = _spool_and_measure(blocks, two_pass.stage, spool_folder / f"pass{index + 1}.f32", job, env)
            blocks = _Meter(two_pass.spool_read, None, None).wrap(
                _read_spool(spool, job.info.channels, env.block_frames, remove=index + 1 < len(passes)))
            blocks = _run_stages(blocks, two_pass.records, job.out_frames, job.info.channels, progress)
        # Pass 2: apply and write, beside the target, renamed into place when complete.
        _write_output(blocks, job, job_files)

    _attribute_time(reading, first_pass, passes)
    if job.nonfinite.count:
        job.warn(f"input had {job.nonfinite.count} NaN/inf samples; they were replaced with silence")
    return _report(job, records, str(dev), time.perf_counter() - started)


def _probe_and_check(src: Path, dst: Path, settings: ChainSettings, output: OutputOptions,
                     stems_dir: Path | None, env: JobEnvironment, warn: Callable[[str], None] | None) -> _Job:
    info = probe(src)
    out_rate = output.sample_rate or info.sample_rate
    job = _Job(src, dst, settings, output, stems_dir, info, out_rate,
               resampled_length(info.frames, info.sample_rate, out_rate), warn,
               in_meter=LoudnessMeter(info.sample_rate, info.channels),
               out_meter=LoudnessMeter(out_rate, info.channels))
    jobfiles.refuse_overwriting_inputs([src], [("output", dst)])
    # Where this job will write, checked before any work: a read-only folder found only at the
    # end of the first pass costs the whole pass.
    jobfiles.check_folder_writable(dst.parent, "output")
    if stems_dir is not None and "separate" not in settings.skip:
        jobfiles.check_folder_writable(stems_dir, "stems")
    removed = jobfiles.remove_leftovers([env.spool_root, dst.parent, stems_dir])
    if removed:
        job.warn(jobfiles.leftovers_message(removed))
    if info.seconds > LONG_FILE_SECONDS:
        job.warn(f"long recording ({info.seconds / 3600:.1f} h): processing streams in bounded memory, "
                 "watch the progress bars for the remaining time")
    return job


def _stage_context(job: _Job, env: JobEnvironment, dev: Any) -> StageContext:
    output = job.output
    return StageContext(
        sample_rate=job.info.sample_rate, channels=job.info.channels, total_frames=job.info.frames, device=dev,
        models_dir=env.models_dir, input_path=job.src, output_path=job.dst, stems_dir=job.stems_dir,
        output_format={"format": output.format, "bit_depth": output.bit_depth, "mp3_bitrate": output.mp3_bitrate},
        cache_dir=env.cache_dir, source_sample_rate=job.info.sample_rate, warn=job.warn, models=env.models,
    )


def _open_stages(job: _Job, ctx: StageContext) -> list[StageRecord]:
    """Every registered stage in order: bypassed, skipped (cannot run here, with the reason) or open.

    Two-pass stages, and every stage after the first of them, come after any output resampling:
    they are opened at the output rate.
    """
    configs = stage_configs(job.settings)
    registry = load_registry()
    records: list[StageRecord] = []
    at_output_rate = False
    for name in STAGE_ORDER:
        if name not in registry:
            continue
        if name in job.settings.skip:
            records.append(StageRecord(name, None, skipped=True, reason="bypassed"))
            continue
        stage = registry[name](configs[name])
        idle = stage.idle_reason()
        if idle:
            records.append(StageRecord(name, None, skipped=True, reason=idle))
            continue
        late = at_output_rate or isinstance(stage, TwoPassStage)
        try:
            stage.open(dataclasses.replace(ctx, sample_rate=job.out_rate) if late else ctx)
        except StageUnavailable as exc:
            job.warn(f"{name} skipped: {exc}")
            records.append(StageRecord(name, None, skipped=True, reason=str(exc)))
            continue
        at_output_rate = late
        records.append(StageRecord(name, stage))
    return records


def _split_passes(records: list[StageRecord]) -> tuple[list[StageRecord], list[_Pass]]:
    """The open stages before the first two-pass stage, and one :class:`_Pass` per two-pass stage."""
    first_pass: list[StageRecord] = []
    passes: list[_Pass] = []
    for r in records:
        if r.skipped:
            continue
        if isinstance(r.stage, TwoPassStage):
            passes.append(_Pass(r))
        elif passes:
            passes[-1].after.append(r)
        else:
            first_pass.append(r)
    return first_pass, passes


def _check_room(job: _Job, env: JobEnvironment, records: list[StageRecord], passes: list[_Pass]) -> None:
    """Room for what this job will write, checked before the work (the writes would fail at the end)."""
    info, output = job.info, job.output
    needs = [(job.dst.parent, output.file_bytes(job.out_frames, job.out_rate, info.channels), "output")]
    if passes:
        jobfiles.check_folder_writable(env.spool_root, "temporary spool")
        # float32 planar blocks, each after an 8-byte frame count; blocks are thousands of frames.
        # A spool is removed once read, so at most two exist at a time.
        spool_bytes = job.out_frames * info.channels * 4 + job.out_frames // 64 + 4096
        needs.append((env.spool_root, min(2, len(passes)) * spool_bytes, "temporary spool"))
    separate = next((r.stage for r in records if r.name == "separate" and not r.skipped), None)
    if separate is not None and job.stems_dir is not None:
        from resonate.stages.separate import stem_paths

        sources = list(separate.report().get("stems", ()))
        stem_files = list(stem_paths(job.stems_dir, job.src, sources, output.format).values())
        jobfiles.refuse_overwriting_inputs([job.src], [("output", job.dst)] + [("stem file", p) for p in stem_files])
        stem_bytes = output.file_bytes(info.frames, info.sample_rate, info.channels)
        needs.append((job.stems_dir, len(stem_files) * stem_bytes, "stems"))
    jobfiles.check_free_space(needs)


def _run_stages(blocks: Iterator[np.ndarray], records: list[StageRecord], total: int, channels: int,
                progress: ProgressFn | None) -> Iterator[np.ndarray]:
    """The stream through ``records``' stages, each checked, timed and reporting its progress."""
    for r in records:
        blocks = _Meter(r, total, progress).wrap(_check_block(r.name, channels)(r.stage.stream(blocks)))
    return blocks


def _to_output_rate(blocks: Iterator[np.ndarray], job: _Job) -> Iterator[np.ndarray]:
    if job.out_rate != job.info.sample_rate:
        blocks = StreamResampler(job.info.sample_rate, job.out_rate, job.info.channels).stream(blocks)
    return _exact_length(blocks, job.out_frames, job.info.channels)


def _spool_and_measure(blocks: Iterator[np.ndarray], record: StageRecord, spool: Path, job: _Job,
                       env: JobEnvironment) -> Path:
    """Pass 1 of one two-pass stage: the stream reaching it, fed to ``measure`` while written to
    ``spool``; then its ``plan`` with the spool to read again. Its time goes to the stage."""
    stage = record.stage
    t_measure = 0.0
    failure = _WriteFailures("temporary spool file", spool,
                             "; set TMPDIR to a folder with more room" if env.work_dir is None else "")
    with failure:
        f = open(spool, "wb")  # noqa: SIM115 - closed by the with below
    with f:
        for b in blocks:
            t0 = time.perf_counter()
            stage.measure(b)
            t_measure += time.perf_counter() - t0
            with failure:
                _write_spool_block(f, b)
        with failure:
            f.flush()
    release_free_memory()
    t0 = time.perf_counter()
    stage.plan(lambda: _read_spool(spool, job.info.channels, env.block_frames))
    record.inclusive += t_measure + time.perf_counter() - t0
    return spool


def _write_output(blocks: Iterator[np.ndarray], job: _Job, job_files: ExitStack) -> None:
    """Pass 2: the stream written to the output beside its target (a folder named with this
    process's PID), renamed into place when complete, with the user's usual file mode; then the
    job's temporary files are removed (``job_files`` closed)."""
    output = job.output
    output_failure = _WriteFailures("output", job.dst)
    with output_failure:
        staged = job_files.enter_context(jobfiles.staged_output(job.dst))
        writer = job_files.enter_context(AudioWriter(staged, job.out_rate, job.info.channels, output.format,
                                                     output.bit_depth, output.mp3_bitrate))

    def finish(b: np.ndarray) -> None:
        job.out_meter.update(b)
        with output_failure:
            writer.write(b)

    with WriteBehind(finish) as sink:
        for b in blocks:
            # A copy the writer owns: a stage may reuse its buffers for the next block.
            sink.put(np.array(b, dtype=np.float32, order="C"))
    with output_failure:
        job_files.close()   # finish the file, rename it into place, remove the temporary folders


def _attribute_time(reading: StageRecord, first_pass: list[StageRecord], passes: list[_Pass]) -> None:
    """Exclusive time per stage: a stage's inclusive time includes everything upstream of it
    in its pass (the reading of the input, or of its spool)."""
    for source, records in [(reading, first_pass)] + [(p.spool_read, p.records) for p in passes]:
        prev = source.inclusive
        for r in records:
            r.seconds, prev = max(0.0, r.inclusive - prev), r.inclusive


def _report(job: _Job, records: list[StageRecord], device: str, elapsed: float) -> dict[str, Any]:
    info, output = job.info, job.output
    return {
        "input": str(job.src),
        "output": str(job.dst),
        "sample_rate": info.sample_rate,
        "output_sample_rate": job.out_rate,
        "channels": info.channels,
        "seconds": round(info.seconds, 3),
        "device": device,
        "preset": job.settings.preset,
        "format": output.format,
        "bit_depth": output.bit_depth if output.format == "wav" else None,
        "mp3_bitrate": output.mp3_bitrate if output.format == "mp3" else None,
        "input_loudness": job.in_meter.summary(),
        "output_loudness": job.out_meter.summary(),
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
        "warnings": job.warnings,
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


def _read_spool(path: Path, channels: int, block_frames: int, remove: bool = False) -> Iterator[np.ndarray]:
    """The spooled blocks again, none longer than ``block_frames`` (pass 2's working set stays small);
    ``remove``: the spool is deleted once read to its end (the next two-pass stage's spool needs the room)."""
    with open(path, "rb") as f:
        while header := f.read(_SPOOL_HEADER.itemsize):
            block = np.empty((channels, int(np.frombuffer(header, dtype=_SPOOL_HEADER)[0])), dtype=np.float32)
            if block.nbytes and f.readinto(memoryview(block.reshape(-1)).cast("B")) != block.nbytes:
                raise ResonateError("the temporary spool file was cut short (disk full?)")
            for start in range(0, max(1, block.shape[-1]), block_frames):
                yield block[:, start: start + block_frames]
    if remove:
        path.unlink(missing_ok=True)
