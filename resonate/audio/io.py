"""Reading and writing audio files. Float32, channel-first (channels, frames) everywhere inside.

Reads WAV/FLAC/OGG/MP3 through libsndfile and phone/video formats (M4A/AAC, MP4/MOV, WebM)
through PyAV (FFmpeg), both streamed in blocks at the file's own rate; writes WAV (16/24-bit PCM
with TPDF dither, or 32-bit float) and MP3 (lameenc). Every write goes to a temp file in the
target folder and is renamed into place only when complete, so a failure never leaves a
half-written file.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import lameenc
import numpy as np
import soundfile as sf

from resonate.audio.resample import StreamResampler
from resonate.errors import ResonateError

SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
AV_EXTENSIONS = (".m4a", ".aac", ".mp4", ".mov", ".webm")      # phones and video: PyAV (FFmpeg)
READ_EXTENSIONS = SOUNDFILE_EXTENSIONS + AV_EXTENSIONS
SUPPORTED_EXTENSIONS = READ_EXTENSIONS
READABLE = "WAV, FLAC, OGG, MP3, M4A/AAC, MP4/MOV or WebM"
MIN_RATE, MAX_RATE = 8000, 192000
MAX_CHANNELS = 2
BIT_DEPTHS = ("16", "24", "32f")
MP3_BITRATES = (128, 160, 192, 224, 256, 320)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    backend: str = "soundfile"          # soundfile | av

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | os.PathLike) -> AudioInfo:
    """Check that ``path`` is audio Resonate can process; one clear error otherwise.

    Only headers are read (and, for raw AAC, the packet list), never the whole audio."""
    p = Path(path)
    if not p.exists():
        raise ResonateError(f"input file not found: {p}")
    if p.is_dir():
        raise ResonateError(f"input is a folder, not an audio file: {p}")
    if not p.is_file():
        raise ResonateError(f"input is not a regular file (a pipe or a device?): {p}")
    if not os.access(p, os.R_OK):
        raise ResonateError(f"cannot read {p.name}: permission denied")
    if p.stat().st_size == 0:
        raise ResonateError(f"input file is empty (0 bytes): {p}")
    info = None
    if p.suffix.lower() not in AV_EXTENSIONS:
        try:
            i = sf.info(str(p))
            info = AudioInfo(p, int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            pass                        # a misnamed file: FFmpeg may still know it
    if info is None:
        info = _av_probe(p)
    if info is None:
        raise ResonateError(f"{p.name} is not an audio file we can read (we read {READABLE})")
    if info.frames <= 0:
        raise ResonateError(f"input file has no audio samples (zero length): {p}")
    if info.channels > MAX_CHANNELS:
        raise ResonateError(f"{p.name} has {info.channels} channels; Resonate handles mono or stereo files")
    if not MIN_RATE <= info.sample_rate <= MAX_RATE:
        raise ResonateError(
            f"{p.name} has a sample rate of {info.sample_rate} Hz; supported rates are {MIN_RATE}–{MAX_RATE} Hz"
        )
    return info


# ---------------------------------------------------------------------------------------------
# PyAV (FFmpeg): M4A/AAC, MP4/MOV, WebM. The first audio stream, decoded frame by frame into
# blocks at the stream's own rate; video streams are demuxed past, never decoded.

# Containers whose headers give the audio length exactly (MP4's edit list also trims the AAC
# encoder's priming and padding) or to the millisecond (Matroska/WebM). For anything else (raw
# ADTS AAC has no header; FFmpeg would guess from the bitrate) the packets are counted instead.
_EXACT_DURATION_FORMATS = ("mov", "mp4", "m4a", "3gp", "matroska", "webm")
_AV_PROBES: dict[tuple[str, int, int], AudioInfo] = {}


def _av():
    """PyAV, imported on first use: its FFmpeg libraries cost ~20 MB of memory that WAV jobs never need."""
    import av

    return av


def _open_av(p: Path):
    return _av().open(str(p), metadata_errors="ignore")


def _av_probe(p: Path) -> AudioInfo | None:
    """Rate, channels and length from the container, or None when FFmpeg cannot read it as audio."""
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key in _AV_PROBES:
        return _AV_PROBES[key]
    try:
        with _open_av(p) as c:
            if not c.streams.audio:
                raise ResonateError(f"{p.name} has no audio track")
            s = c.streams.audio[0]
            rate, channels = int(s.codec_context.sample_rate or s.rate or 0), int(s.codec_context.channels or 0)
            if rate <= 0 or channels <= 0:
                return None
            names = c.format.name.split(",")
            if s.duration is not None and s.time_base and any(n in ("mov", "mp4", "m4a") for n in names):
                frames = round(s.duration * s.time_base * rate)
            elif c.duration and any(n in _EXACT_DURATION_FORMATS for n in names):
                frames = round(c.duration * rate / _av().time_base)
                if s.codec_context.name == "opus":       # the decoder drops the encoder's pre-skip
                    frames -= int(s.codec_context.delay or 0)
            else:
                end = 0
                for pkt in c.demux(s):
                    if pkt.pts is not None and pkt.duration:
                        end = max(end, pkt.pts + pkt.duration)
                frames = round(end * s.time_base * rate) if s.time_base else 0
            info = AudioInfo(p, rate, channels, int(frames), names[0], s.codec_context.name, backend="av")
    except ResonateError:
        raise
    except (_av().FFmpegError, OSError, ValueError, IndexError):
        return None
    if len(_AV_PROBES) > 256:
        _AV_PROBES.clear()
    _AV_PROBES[key] = info
    return info


_INT_SCALE = {np.dtype(np.int16): 2.0 ** -15, np.dtype(np.int32): 2.0 ** -31}


def _frame_samples(frame, channels: int) -> np.ndarray:
    """One decoded frame as float32 (channels, n), whatever FFmpeg's sample format."""
    a = frame.to_ndarray()
    if not frame.format.is_planar:
        a = a.reshape(-1, channels).T
    if a.shape[0] != channels:
        raise ResonateError(f"the audio changes its channel count mid-stream ({channels} -> {a.shape[0]})")
    if a.dtype == np.uint8:
        return ((a.astype(np.float32) - 128.0) / 128.0)
    if a.dtype in _INT_SCALE:
        return (a * np.float32(_INT_SCALE[a.dtype])).astype(np.float32)
    return a.astype(np.float32, copy=False)


def _av_blocks(path: Path, info: AudioInfo, block_frames: int, start: int, stop: int | None) -> Iterator[np.ndarray]:
    """Blocks of ``block_frames`` from sample ``start`` up to ``stop`` (at most ``info.frames``:
    MP4's trailing encoder padding is dropped). Memory: one block plus one decoded frame."""
    end = info.frames if stop is None else min(stop, info.frames)
    rate, channels = info.sample_rate, info.channels
    parts: list[np.ndarray] = []
    have = 0
    with _open_av(path) as c:
        s = c.streams.audio[0]
        pos = 0                                     # sample index of the next decoded sample
        origin = s.start_time or 0
        # Seeking is sample-exact only when timestamps count samples; otherwise decode from 0.
        exact_ts = s.time_base == Fraction(1, rate)
        if start > rate and exact_ts:
            c.seek(origin + start - rate, stream=s, backward=True, any_frame=False)
            pos = None
        for frame in c.decode(s):
            if pos is None:
                if frame.pts is None:
                    raise ResonateError(f"cannot seek in {path.name}: its audio has no timestamps")
                pos = int(frame.pts - origin)
            x = _frame_samples(frame, channels)
            n = x.shape[-1]
            lo, hi = max(0, start - pos), min(n, end - pos)
            pos += n
            if hi > lo:
                parts.append(x[:, lo:hi])
                have += hi - lo
                while have >= block_frames:
                    buf = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
                    yield np.ascontiguousarray(buf[:, :block_frames])
                    rest = buf[:, block_frames:]
                    parts, have = ([rest] if rest.shape[-1] else []), rest.shape[-1]
            if pos >= end:
                break
    if have:
        yield np.ascontiguousarray(np.concatenate(parts, axis=-1))


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


class NonFiniteCounter:
    """Counts NaN/inf samples replaced with zeros while reading."""

    def __init__(self) -> None:
        self.count = 0

    def clean(self, block: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(block)
        n = int(bad.sum())
        if n:
            self.count += n
            block = np.where(bad, np.float32(0.0), block)
        return block


def read_blocks(
    path: str | os.PathLike,
    block_frames: int = 65536,
    start: int = 0,
    stop: int | None = None,
    nonfinite: NonFiniteCounter | None = None,
) -> Iterator[np.ndarray]:
    """Stream a file as float32 (channels, n) blocks; NaN/inf become 0 (counted in ``nonfinite``)."""
    counter = nonfinite or NonFiniteCounter()
    p = Path(path)
    try:
        f = None if p.suffix.lower() in AV_EXTENSIONS else sf.SoundFile(str(p))
    except sf.LibsndfileError:
        f = None
    if f is None:
        info = _av_probe(p)
        if info is None:
            raise ResonateError(f"{p.name} is not an audio file we can read (we read {READABLE})")
        try:
            for block in _av_blocks(p, info, block_frames, start, stop):
                yield counter.clean(block)
        except (_av().FFmpegError, OSError, ValueError) as exc:
            raise ResonateError(f"cannot decode {p.name}: {_short(exc)}") from None
        return
    try:
        with f:
            if start:
                f.seek(start)
            remaining = None if stop is None else max(0, stop - start)
            while remaining is None or remaining > 0:
                n = block_frames if remaining is None else min(block_frames, remaining)
                data = f.read(n, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                if remaining is not None:
                    remaining -= data.shape[0]
                yield counter.clean(np.ascontiguousarray(data.T))
    except sf.LibsndfileError as exc:
        raise ResonateError(f"cannot decode {p.name}: {_short(exc)}") from None


def read_audio(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Whole (or part of a) file as float32 (channels, n) and its rate. For short clips, previews, tests."""
    info = probe(path)
    blocks = list(read_blocks(path, 1 << 18, start, stop))
    x = np.concatenate(blocks, axis=-1) if blocks else np.zeros((info.channels, 0), np.float32)
    return x, info.sample_rate


# ---------------------------------------------------------------------------------------------
# Writing


def tpdf_dither_quantize(x: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Quantise float samples to ``bits``-bit integers with ±1 LSB triangular (TPDF) dither.

    Returns int32 (or int16 for 16 bits) codes; values clip at full scale.
    """
    scale = float(2 ** (bits - 1))
    noise = rng.random(x.shape, dtype=np.float32)
    noise -= rng.random(x.shape, dtype=np.float32)
    # float64 so that 24-bit codes keep the dither's fractions; in place, because on a long
    # file the temporaries cost more than the arithmetic (600 s stereo: 1.1 s -> 0.5 s).
    q = x.astype(np.float64)
    q *= scale
    q += noise
    q += 0.5
    np.floor(q, out=q)
    np.clip(q, -scale, scale - 1, out=q)
    return q.astype(np.int16 if bits == 16 else np.int32)


def sanitize_filename(name: str, default: str = "audio") -> str:
    """A safe, portable file name: no folders, no control or shell-special characters."""
    name = unicodedata.normalize("NFKC", str(name)).replace("\\", "/").split("/")[-1]
    name = re.sub(r"[^\w.\- ]+", "_", name, flags=re.UNICODE).strip(" ._")
    name = re.sub(r"\s+", " ", name)[:120]
    return name or default


def parse_bit_depth(value: str | int) -> str:
    v = str(value).lower().replace("bit", "").strip()
    if v in ("32", "32float", "float"):
        v = "32f"
    if v not in BIT_DEPTHS:
        raise ResonateError(f"unsupported bit depth '{value}' (choose 16, 24 or 32f)")
    return v


class AudioWriter:
    """Streamed, atomic writer for WAV (16/24/32f) and MP3.

    Use as a context manager: the target appears only if the block exits without an error.
    16/24-bit WAV and MP3 (which encodes 16-bit PCM) get TPDF dither; 32-bit float does not.
    MP3 above 48 kHz is resampled to 48 kHz, the highest rate MP3 supports.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int,
        channels: int,
        format: str = "wav",
        bit_depth: str | int = "24",
        mp3_bitrate: int = 320,
        seed: int | None = None,
    ):
        self.path = Path(path)
        self.format = format.lower()
        if self.format not in ("wav", "mp3"):
            raise ResonateError(f"unsupported output format '{format}' (choose wav or mp3)")
        if channels not in (1, 2):
            raise ResonateError(f"cannot write {channels} channels (mono or stereo only)")
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.bit_depth = parse_bit_depth(bit_depth)
        if self.format == "mp3" and int(mp3_bitrate) not in MP3_BITRATES:
            raise ResonateError(f"unsupported MP3 bitrate {mp3_bitrate} (choose one of {MP3_BITRATES})")
        self.mp3_bitrate = int(mp3_bitrate)
        self._rng = np.random.default_rng(seed)
        self._tmp: Path | None = None
        self._sf: sf.SoundFile | None = None
        self._fh = None
        self._enc = None
        self._resampler: StreamResampler | None = None
        self.frames_written = 0

    # -- lifecycle
    def __enter__(self) -> AudioWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem[:40]}.", suffix=".part", dir=folder)
        os.close(fd)
        self._tmp = Path(tmp)
        if self.format == "wav":
            subtype = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}[self.bit_depth]
            self._sf = sf.SoundFile(str(self._tmp), "w", self.sample_rate, self.channels, subtype, format="WAV")
        else:
            rate = self.sample_rate
            if rate not in MP3_RATES:
                target = 48000 if rate > 48000 else min(r for r in MP3_RATES if r >= rate)
                self._resampler = StreamResampler(rate, target, self.channels)
                rate = target
            enc = lameenc.Encoder()
            enc.set_bit_rate(self.mp3_bitrate)
            enc.set_in_sample_rate(rate)
            enc.set_channels(self.channels)
            enc.set_quality(2)
            self._enc = enc
            self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()

    def write(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, n) block, got {block.shape}")
        if block.shape[1] == 0:
            return
        self.frames_written += block.shape[1]
        if self._sf is not None:
            if self.bit_depth == "32f":
                self._sf.write(block.T)
            elif self.bit_depth == "16":
                self._sf.write(tpdf_dither_quantize(block, 16, self._rng).T)
            else:
                # libsndfile takes the top 24 bits of int32 samples for PCM_24.
                codes = tpdf_dither_quantize(block, 24, self._rng)
                codes <<= 8
                self._sf.write(codes.T)
        else:
            self._encode(block, last=False)

    def _encode(self, block: np.ndarray, last: bool) -> None:
        if self._resampler is not None:
            block = self._resampler.process(block, last=last)
        if block.shape[1]:
            pcm = tpdf_dither_quantize(block, 16, self._rng)
            self._fh.write(self._enc.encode(np.ascontiguousarray(pcm.T).tobytes()))

    def close(self) -> None:
        try:
            if self._sf is not None:
                self._sf.close()
                self._sf = None
            if self._enc is not None:
                self._encode(np.zeros((self.channels, 0), np.float32), last=True)
                self._fh.write(self._enc.flush())
                self._fh.close()
                self._fh = self._enc = None
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        for h in (self._sf, self._fh):
            try:
                if h is not None:
                    h.close()
            except Exception:  # noqa: BLE001 - best effort while failing already
                pass
        self._sf = self._fh = self._enc = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def write_audio(path: str | os.PathLike, x: np.ndarray, sample_rate: int, **kwargs) -> Path:
    """Write a whole (channels, n) array atomically. kwargs as for :class:`AudioWriter`."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    with AudioWriter(path, sample_rate, x.shape[0], **kwargs) as w:
        w.write(x)
    return Path(path)


def output_suffix(fmt: str) -> str:
    return ".mp3" if fmt.lower() == "mp3" else ".wav"


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a small text file (reports) via temp file + rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
