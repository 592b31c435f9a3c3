"""On-disk cache of separated stems, so re-running later stages with new settings skips Demucs.

An entry is a folder named by the SHA-256 of its key: the input file's content hash, its sample
rate, channels and length, the model name and weights identity, and every option that changes
the stems (segment, overlap, shifts, window). It holds one raw float32 file per stem (frames x
channels, interleaved, at the input's rate and channel count) and ``meta.json``. Entries are
written to a ``.partial-*`` folder and renamed when complete, so a crash never leaves a truncated
entry behind. When the cache grows beyond its cap, least recently used entries go first.

The cache folder is the user's choice and may hold other things, even folders that look like
entries: every folder Resonate creates gets a marker file (``MARKER``) the moment it is made, and
size, clearing and eviction only ever consider marked folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENTRY_NAME = re.compile(r"^[0-9a-f]{64}$")
PARTIAL_NAME = re.compile(r"^[0-9a-f]{64}\.partial-[0-9a-f]+$")
META = "meta.json"
MARKER = ".resonate-stems"
STALE_PARTIAL_SECONDS = 24 * 3600
CACHE_ENV = "RESONATE_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$RESONATE_CACHE_DIR`` if set, else ``~/.cache/resonate/stems``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resonate" / "stems"


def file_sha256(path: Path, chunk: int = 4 << 20) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while buf := f.read(chunk):
            sha.update(buf)
    return sha.hexdigest()


def block_fingerprint(block: np.ndarray) -> str:
    """Hash of the first samples the stage sees; guards against the same file fed differently."""
    return hashlib.sha256(np.ascontiguousarray(block, dtype=np.float32).tobytes()).hexdigest()[:32]


def entry_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _dir_bytes(folder: Path) -> int:
    total = 0
    for f in folder.iterdir():
        try:
            total += f.stat().st_size
        except OSError:
            pass
    return total


def _marked(folder: Path) -> bool:
    return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()


def _ours(cache_dir: Path) -> Iterator[Path]:
    """Entry and partial folders Resonate made in ``cache_dir``; nothing else there is ever touched."""
    if not cache_dir.is_dir():
        return
    for p in cache_dir.iterdir():
        if (ENTRY_NAME.match(p.name) or PARTIAL_NAME.match(p.name)) and _marked(p):
            yield p


def cache_size_bytes(cache_dir=None) -> int:
    """Bytes used by cached stems (complete and partial entries) in ``cache_dir``."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return sum(_dir_bytes(p) for p in _ours(folder))


def clear_cache(cache_dir=None) -> int:
    """Delete every cached entry; returns the bytes freed. Other files in the folder are left alone."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    freed = 0
    for p in list(_ours(folder)):
        freed += _dir_bytes(p)
        shutil.rmtree(p, ignore_errors=True)
    return freed


def enforce_cap(cache_dir: Path, max_bytes: int, keep: str | None = None) -> int:
    """Evict least recently used entries until the cache fits ``max_bytes``; returns bytes freed.

    ``keep`` (the entry just written) is never evicted. Partial folders older than a day are
    leftovers of killed runs and go as well.
    """
    now = time.time()
    entries = []
    freed = 0
    for p in _ours(cache_dir):
        if PARTIAL_NAME.match(p.name):
            if now - p.stat().st_mtime > STALE_PARTIAL_SECONDS:
                freed += _dir_bytes(p)
                shutil.rmtree(p, ignore_errors=True)
            continue
        meta = p / META
        used = meta.stat().st_mtime if meta.exists() else 0.0
        entries.append((used, p, _dir_bytes(p)))
    total = sum(size for _, _, size in entries)
    for _, p, size in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if p.name == keep:
            continue
        shutil.rmtree(p, ignore_errors=True)
        total -= size
        freed += size
    return freed


@dataclass
class CacheEntry:
    folder: Path
    meta: dict[str, Any]

    @property
    def stems(self) -> list[str]:
        return list(self.meta["stems"])

    def reader(self) -> StemReader:
        return StemReader(self.folder, self.stems, int(self.meta["channels"]))


def lookup(cache_dir: Path, key: str) -> CacheEntry | None:
    folder = cache_dir / key
    if not _marked(folder):
        return None
    meta_file = folder / META
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    expected = int(meta["frames"]) * int(meta["channels"]) * 4
    for stem in meta["stems"]:
        f = folder / f"{stem}.f32"
        if not f.is_file() or f.stat().st_size != expected:
            return None
    os.utime(meta_file)          # mark as recently used for eviction
    return CacheEntry(folder, meta)


def clear_entry(entry: CacheEntry) -> None:
    if _marked(entry.folder):
        shutil.rmtree(entry.folder, ignore_errors=True)


class StemReader:
    """Reads cached stems back in blocks of any length, as (stems, channels, n)."""

    def __init__(self, folder: Path, stems: list[str], channels: int):
        self.channels = channels
        self._files = [open(folder / f"{s}.f32", "rb") for s in stems]  # noqa: SIM115 - closed in close()

    def read(self, n: int) -> np.ndarray:
        parts = []
        for f in self._files:
            raw = np.frombuffer(f.read(n * self.channels * 4), dtype="<f4")
            parts.append(raw.reshape(-1, self.channels).T)
        return np.stack(parts).astype(np.float32)

    def close(self) -> None:
        for f in self._files:
            f.close()


class StemCacheWriter:
    """Writes one entry as the stems stream by; ``commit`` makes it visible, ``abort`` drops it."""

    def __init__(self, cache_dir: Path, key: str, stems: list[str], channels: int, meta: dict[str, Any]):
        self.cache_dir = cache_dir
        self.key = key
        self.stems = stems
        self.channels = channels
        self.meta = dict(meta, stems=stems, channels=channels)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.partial = cache_dir / f"{key}.partial-{uuid.uuid4().hex[:12]}"
        self.partial.mkdir()
        (self.partial / MARKER).write_text("Cached stems made by Resonate; safe to delete.\n")
        self._files = [open(self.partial / f"{s}.f32", "wb") for s in stems]  # noqa: SIM115 - closed in commit/abort
        self.frames = 0

    def write(self, stems: np.ndarray) -> None:
        for f, stem in zip(self._files, stems):
            f.write(np.ascontiguousarray(stem.T, dtype="<f4").tobytes())
        self.frames += stems.shape[-1]

    def commit(self) -> Path:
        for f in self._files:
            f.close()
        self.meta["frames"] = self.frames
        self.meta["created"] = time.time()
        (self.partial / META).write_text(json.dumps(self.meta, indent=1, sort_keys=True))
        final = self.cache_dir / self.key
        if _marked(final):
            shutil.rmtree(final, ignore_errors=True)
        elif final.exists() or final.is_symlink():
            # Something of ours by name only: leave it, and keep no entry.
            shutil.rmtree(self.partial, ignore_errors=True)
            return final
        os.replace(self.partial, final)
        return final

    def abort(self) -> None:
        for f in self._files:
            f.close()
        shutil.rmtree(self.partial, ignore_errors=True)
