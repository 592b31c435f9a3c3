"""Per-session folders on disk, upload spooling, and the app's saved preferences.

Audio never lives in ``st.session_state``: uploads are written to the session's folder as soon
as they arrive and jobs write their results there; session state holds paths and metrics only.
"""

from __future__ import annotations

import json
import os
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

SESSION_MAX_AGE_S = 24 * 3600
SPOOL_CHUNK = 4 << 20
DEMO_CLIP = Path(__file__).resolve().parents[2] / "assets" / "demo" / "concert_demo.mp3"


def sessions_root() -> Path:
    """``$RESONATE_SESSIONS_DIR``, else a folder in the system temp dir."""
    env = os.environ.get("RESONATE_SESSIONS_DIR")
    return Path(env).expanduser() if env else Path(tempfile.gettempdir()) / "resonate-sessions"


def _prune_old_sessions(root: Path, keep: Path) -> None:
    """Sessions left by closed tabs: delete folders untouched for a day."""
    now = time.time()
    for d in root.iterdir() if root.is_dir() else ():
        try:
            if d.is_dir() and d != keep and now - d.stat().st_mtime > SESSION_MAX_AGE_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def session_dir() -> Path:
    """This browser session's folder (created on first use)."""
    if "session_dir" not in st.session_state:
        folder = sessions_root() / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True, exist_ok=True)
        _prune_old_sessions(folder.parent, folder)
        st.session_state["session_dir"] = str(folder)
    folder = Path(st.session_state["session_dir"])
    folder.mkdir(parents=True, exist_ok=True)
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


def load_prefs() -> Prefs:
    if "prefs" not in st.session_state:
        prefs = Prefs()
        try:
            data = json.loads(prefs_path().read_text())
            known = {f.name for f in fields(Prefs)}
            prefs = Prefs(**{k: str(v) for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError):
            pass
        st.session_state["prefs"] = asdict(prefs)
    return Prefs(**st.session_state["prefs"])


def save_prefs(prefs: Prefs) -> Path:
    st.session_state["prefs"] = asdict(prefs)
    path = prefs_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(asdict(prefs), indent=2))
    os.replace(tmp, path)
    return path


def optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text.strip() else None


# Controls whose values should survive a visit to another page. Streamlit forgets the state of
# widgets that were not drawn in a run; re-assigning the value makes it plain session state.
KEPT_PREFIXES = ("restore.cfg.", "restore.preset", "batch.cfg.", "batch.preset", "restore.local_path")


def keep_widget_state() -> None:
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(KEPT_PREFIXES):
            st.session_state[key] = st.session_state[key]
