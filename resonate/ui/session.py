"""Per-session folders on disk, upload spooling, and the app's saved preferences.

Audio never lives in ``st.session_state``: uploads are written to the session's folder as soon
as they arrive and jobs write their results there; session state holds paths and metrics only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import streamlit as st

from resonate.audio.io import sanitize_filename
from resonate.device import DEVICE_CHOICES

SESSION_MAX_AGE_S = 24 * 3600
SESSION_MARKER = ".resonate-session"
SPOOL_CHUNK = 4 << 20
DEMO_CLIP = Path(__file__).resolve().parents[2] / "assets" / "demo" / "concert_demo.mp3"


def sessions_root() -> Path:
    """``$RESONATE_SESSIONS_DIR``, else a folder in the system temp dir."""
    env = os.environ.get("RESONATE_SESSIONS_DIR")
    return Path(env).expanduser() if env else Path(tempfile.gettempdir()) / "resonate-sessions"


def _is_session(folder: Path) -> bool:
    """Only folders Resonate created carry the marker; nothing else in the root is ever touched."""
    return folder.is_dir() and not folder.is_symlink() and (folder / SESSION_MARKER).is_file()


def _last_used(folder: Path) -> float:
    # The marker is touched on every run of the page, so its time is the session's last use (the
    # folder's own time only changes when an entry directly inside it is added or removed).
    return (folder / SESSION_MARKER).stat().st_mtime


def _prune_old_sessions(root: Path, keep: Path) -> None:
    """Sessions left by closed tabs: delete Resonate's session folders unused for a day."""
    now = time.time()
    for d in root.iterdir() if root.is_dir() else ():
        try:
            if d != keep and _is_session(d) and now - _last_used(d) > SESSION_MAX_AGE_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def _new_session(root: Path) -> Path:
    folder = root / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    (folder / SESSION_MARKER).write_text("A Resonate app session: deleted when unused for a day.\n")
    return folder


SESSION_PARAM = "session"            # the URL's ?session=... : a reload finds its folder again
SESSION_ID = re.compile(r"^[0-9a-f]{12}$")


def _from_url(root: Path) -> Path | None:
    """The session folder named in the URL, if it is a Resonate session that still exists."""
    name = st.query_params.get(SESSION_PARAM)
    if not isinstance(name, str) or not SESSION_ID.match(name):
        return None
    folder = root / name
    return folder if _is_session(folder) else None


def session_dir() -> Path:
    """This browser session's folder, marked as Resonate's and as in use.

    Its name is kept in the page's URL, so that reloading the page (a new Streamlit session)
    finds the same folder, and with it the runs made so far.
    """
    if "session_dir" not in st.session_state:
        root = sessions_root()
        folder = _from_url(root) or _new_session(root)
        _prune_old_sessions(root, folder)
        st.session_state["session_dir"] = str(folder)
    folder = Path(st.session_state["session_dir"])
    if not _is_session(folder):
        # Removed from outside (or by hand): start again under the same name.
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SESSION_MARKER).write_text("A Resonate app session: deleted when unused for a day.\n")
    else:
        os.utime(folder / SESSION_MARKER)
    if st.query_params.get(SESSION_PARAM) != folder.name:
        st.query_params[SESSION_PARAM] = folder.name
    return folder


def new_job_dir(kind: str = "job") -> Path:
    """A fresh numbered folder for one run's results."""
    base = session_dir() / "jobs"
    base.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.name.split("-")[-1]) for p in base.glob(f"{kind}-*") if p.name.split("-")[-1].isdigit()),
                default=0)
    folder = base / f"{kind}-{n:03d}"
    folder.mkdir()
    return folder


def spool_upload(uploaded, folder: Path) -> Path:
    """Copy an ``UploadedFile`` to ``folder`` in chunks; the name is sanitised, the suffix kept."""
    folder.mkdir(parents=True, exist_ok=True)
    name = sanitize_filename(uploaded.name, "upload")
    target = folder / name
    uploaded.seek(0)
    with open(target, "wb") as f:
        shutil.copyfileobj(uploaded, f, SPOOL_CHUNK)
    return target


def copy_atomic(src: Path, folder: Path) -> Path:
    """Copy ``src`` into ``folder`` under its own name, atomically: a hidden temp file beside the
    target, renamed into place once complete. On any failure (full disk, no permission) the temp
    file is removed, an existing file of that name is left as it was, and the OSError is raised."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / src.name
    fd, tmp = tempfile.mkstemp(prefix=f".{src.stem[:40]}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, SPOOL_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; a copy for the user follows their umask
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, not while sessions run.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def zip_files(paths: Iterable[Path], target: Path) -> Path:
    """Stored (uncompressed) zip: audio barely compresses and storing is fast."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for p in paths:
            z.write(p, arcname=Path(p).name)
    os.replace(tmp, target)
    return target


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


# ---------------------------------------------------------------------------------------------
# Preferences (Settings page), saved as JSON so they survive restarts.


@dataclass
class Prefs:
    device: str = "auto"
    models_dir: str = ""            # folder with offline Demucs weights; empty = demucs's own download
    cache_dir: str = ""             # stem cache; empty = the engine's default
    output_dir: str = ""            # also copy masters here; empty = keep them in the session folder


def prefs_path() -> Path:
    env = os.environ.get("RESONATE_APP_CONFIG")
    return Path(env).expanduser() if env else Path.home() / ".config" / "resonate" / "app.json"


PREFS_PROBLEM = "prefs.problem"


def _validated_prefs(data: object) -> tuple[Prefs, list[str]]:
    """Prefs from the parsed file, and what had to be dropped (each falls back to its default)."""
    if not isinstance(data, dict):
        return Prefs(), [f"it holds {type(data).__name__ if data is not None else 'null'}, not an object of settings"]
    values, problems = {}, []
    for f in fields(Prefs):
        if f.name not in data:
            continue
        value = data[f.name]
        if not isinstance(value, str):
            problems.append(f"{f.name} is not text")
        elif f.name == "device" and value not in DEVICE_CHOICES:
            problems.append(f"device '{value}' is not one of {', '.join(DEVICE_CHOICES)}")
        else:
            values[f.name] = value
    return Prefs(**values), problems


def load_prefs() -> Prefs:
    """The saved preferences; a file that cannot be used falls back to defaults, and says so
    (``prefs_problem``) instead of breaking every page."""
    if "prefs" not in st.session_state:
        prefs, problems = Prefs(), []
        path = prefs_path()
        try:
            prefs, problems = _validated_prefs(json.loads(path.read_text()))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            problems = [f"it could not be read ({exc})"]
        if problems:
            st.session_state[PREFS_PROBLEM] = (f"The settings file {path} could not be used in full: "
                                               f"{'; '.join(problems)}. Defaults are in use for that; "
                                               "saving on the Settings page replaces the file.")
        st.session_state["prefs"] = asdict(prefs)
    return Prefs(**st.session_state["prefs"])


def prefs_problem() -> str | None:
    return st.session_state.get(PREFS_PROBLEM)


def _folder_problem(label: str, text: str, must_exist: bool) -> str | None:
    folder = optional_path(text)
    if folder is None:
        return None
    if folder.exists():
        if not folder.is_dir():
            return f"{label}: {folder} is not a folder."
        if not must_exist and not os.access(folder, os.W_OK | os.X_OK):
            return f"{label}: {folder} is not writable."
        return None
    if must_exist:
        return f"{label}: {folder} does not exist."
    parent = next((p for p in folder.parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"{label}: {folder} does not exist and cannot be created there."
    return None


def prefs_problems(prefs: Prefs) -> list[str]:
    """Why these preferences cannot be saved (empty when they can)."""
    problems = []
    if prefs.device not in DEVICE_CHOICES:
        problems.append(f"Compute device: '{prefs.device}' is not one of {', '.join(DEVICE_CHOICES)}.")
    for label, text, must_exist in (("Models folder", prefs.models_dir, True),
                                    ("Stem cache folder", prefs.cache_dir, False),
                                    ("Default output folder", prefs.output_dir, False)):
        problem = _folder_problem(label, text, must_exist)
        if problem:
            problems.append(problem)
    return problems


def save_prefs(prefs: Prefs) -> Path:
    """Write the preferences (atomically); raises OSError when the file cannot be written."""
    path = prefs_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(asdict(prefs), indent=2))
    os.replace(tmp, path)
    st.session_state["prefs"] = asdict(prefs)
    st.session_state.pop(PREFS_PROBLEM, None)
    return path


def optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text.strip() else None


# Controls whose values should survive a visit to another page. Streamlit forgets the state of
# widgets that were not drawn in a run; re-assigning the value makes it plain session state.
KEPT_PREFIXES = ("restore.cfg.", "restore.preset", "batch.cfg.", "batch.preset", "restore.local_path",
                 "restore.result", "restore.mode", "restore.show.paths", "restore.show.result")


def keep_widget_state() -> None:
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(KEPT_PREFIXES):
            st.session_state[key] = st.session_state[key]
