"""The files a job writes: where they may go, the temporary ones it leaves while it runs, and
cleaning up after jobs that were killed.

While a job runs it keeps two kinds of temporary folders, each named with the PID of the process
that made it and a tag of the machine it runs on:

* ``resonate-spool-<pid>-<host>-XXXXXXXX`` in the work folder ($TMPDIR unless told otherwise):
  the pass-1 spool (about 350 MB per hour of stereo);
* ``.resonate-part-<pid>-<host>-XXXXXXXX`` beside an output: the output being written, renamed
  into place only when complete.

A job that ends, fails or is interrupted (Ctrl-C, SIGTERM) removes them itself. One killed
outright (SIGKILL, power loss) cannot, so every job first removes the ones it finds whose process
no longer exists: only folders with exactly these names, owned by this user, made on this machine
(a PID means nothing on another one sharing the folder, or in another container), of dead PIDs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from resonate.errors import ResonateError

SPOOL_PREFIX = "resonate-spool-"
PARTIAL_PREFIX = ".resonate-part-"
# PID, machine tag, then tempfile's random part: 8 characters of [a-z0-9_].
_LEFTOVER = re.compile(rf"^(?:{re.escape(SPOOL_PREFIX)}|{re.escape(PARTIAL_PREFIX)})(\d+)-([0-9a-f]{{8}})-[a-z0-9_]{{8}}$")
# Room left over on top of the estimate (file headers, file system blocks, an estimate a bit short).
SPACE_MARGIN_BYTES = 1 << 20


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file: by inode where both exist (hard links, symlinks,
    case-insensitive file systems), else by their resolved paths."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(a.resolve()) == os.path.normcase(b.resolve())


def refuse_overwriting_inputs(inputs: Iterable[Path], outputs: Iterable[tuple[str, Path]]) -> None:
    """Raise if any output (``(what, path)`` pairs) is one of the inputs, or two outputs are one file."""
    inputs, outputs = list(inputs), list(outputs)
    for what, path in outputs:
        for src in inputs:
            if same_file(path, src):
                raise ResonateError(f"the {what} {path} would overwrite the input {src}; choose another path")
    for i, (what, path) in enumerate(outputs):
        for other_what, other in outputs[:i]:
            if same_file(path, other):
                raise ResonateError(f"the {what} and the {other_what} are the same file ({path}); choose another path")


def _nearest_existing(folder: Path) -> Path:
    p = Path(os.path.abspath(folder))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_folder_writable(folder: str | os.PathLike, what: str) -> None:
    """Raise unless new files can be made in ``folder`` (or, where it does not exist yet, in the
    folder above it that does, where it will be created)."""
    folder = Path(folder)
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise ResonateError(f"cannot write the {what} in {folder}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ResonateError(f"cannot write the {what} in {folder}: {base} is read-only or not writable by you")


def check_free_space(needs: Iterable[tuple[str | os.PathLike, int, str]]) -> None:
    """Raise unless each file system has room for what will be written to it.

    ``needs``: ``(folder, bytes, what)``; needs on the same file system add up.
    """
    by_device: dict[int, tuple[Path, int, list[str]]] = {}
    for folder, size, what in needs:
        base = _nearest_existing(Path(folder))
        device = os.stat(base).st_dev
        known, total, whats = by_device.get(device, (base, 0, []))
        by_device[device] = (known, total + int(size), [*whats, what])
    for base, total, whats in by_device.values():
        free = shutil.disk_usage(base).free
        if total + SPACE_MARGIN_BYTES > free:
            raise ResonateError(f"not enough free space in {base} for the {' and the '.join(whats)}: "
                                f"about {_megabytes(total)} needed, {_megabytes(free)} free")


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (the dance with
    ``os.umask`` briefly sets it process-wide, racing other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: temp files are made 0600, outputs should not be."""
    return 0o666 & ~current_umask()


def host_tag() -> str:
    """8 hex digits naming this machine (its host name; containers have their own)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owned_prefix(prefix: str) -> str:
    return f"{prefix}{os.getpid()}-{host_tag()}-"


@contextmanager
def staged_output(dst: str | os.PathLike) -> Iterator[Path]:
    """A path to write ``dst``'s content to, in a folder of our own beside ``dst``.

    When the ``with`` body succeeds, the file gets the user's usual permissions and is renamed
    onto ``dst`` (atomically: same folder, same file system); whatever happens, the folder goes.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=_owned_prefix(PARTIAL_PREFIX), dir=dst.parent))
    try:
        staged = folder / dst.name
        yield staged
        os.chmod(staged, new_file_mode())
        os.replace(staged, dst)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def spool_folder(work_dir: str | os.PathLike | None = None) -> tempfile.TemporaryDirectory:
    """A temporary folder for the pass-1 spool, named so a later job can tell whether its owner lives."""
    return tempfile.TemporaryDirectory(prefix=_owned_prefix(SPOOL_PREFIX), dir=work_dir)


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix" or pid <= 0:
        return True  # no safe way to ask (os.kill terminates on Windows): keep the files
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else, or we cannot tell
    return True


def remove_leftovers(folders: Iterable[str | os.PathLike | None]) -> list[Path]:
    """Remove the temporary folders of killed jobs found in ``folders``; returns what was removed."""
    removed: list[Path] = []
    seen: set[str] = set()
    here = host_tag()
    for folder in folders:
        if folder is None:
            continue
        key = os.path.abspath(folder)
        if key in seen:
            continue
        seen.add(key)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _LEFTOVER.match(entry.name)
            if match is None or match.group(2) != here:
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if hasattr(os, "getuid") and entry.stat(follow_symlinks=False).st_uid != os.getuid():
                    continue
            except OSError:
                continue
            if _process_exists(int(match.group(1))):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.lexists(entry.path):
                removed.append(Path(entry.path))
    return removed


def leftovers_message(removed: list[Path]) -> str:
    total = len(removed)
    return (f"removed {total} temporary folder{'s' if total > 1 else ''} left by killed Resonate jobs: "
            + ", ".join(str(p) for p in removed))
