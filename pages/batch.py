"""Batch: several recordings (uploads or a folder), one preset, a table of results and a zip."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from resonate.audio.io import READ_EXTENSIONS, output_suffix
from resonate.ui.controls import Controls, build_settings
from resonate.ui.entry import require_entrypoint
from resonate.ui.results import MIME, download_name
from resonate.ui.runner import run_job
from resonate.ui.session import load_prefs, new_job_dir, optional_path, session_dir, spool_upload, zip_files

require_entrypoint()

RUNNING = "batch.running"
UPLOAD_TYPES = [e.lstrip(".") for e in READ_EXTENSIONS]


def start_run() -> None:
    st.session_state[RUNNING] = True


def chosen_files(disabled: bool) -> list[tuple[Path, str]]:
    """(path on disk, display name) of every file to process, uploads first."""
    uploads = st.file_uploader("Drop recordings", type=UPLOAD_TYPES, accept_multiple_files=True,
                               key="batch.uploads", disabled=disabled) or []
    spooled: dict[str, str] = st.session_state.setdefault("batch.spooled", {})
    files = []
    for up in uploads:
        if up.file_id not in spooled:
            spooled[up.file_id] = str(spool_upload(up, session_dir() / "uploads" / up.file_id[:12]))
        files.append((Path(spooled[up.file_id]), up.name))
    folder_text = st.text_input("…and/or a folder on this computer (its audio files, not sub-folders)",
                                key="batch.folder", disabled=disabled)
    folder = optional_path(folder_text)
    if folder is not None:
        if folder.is_dir():
            files += [(p, p.name) for p in sorted(folder.iterdir())
                      if p.is_file() and p.suffix.lower() in READ_EXTENSIONS]
        else:
            st.error(f"{folder} is not a folder")
    return files


def unique_name(name: str, suffix: str, taken: set[str]) -> str:
    candidate, n = download_name(name, suffix), 2
    while candidate in taken:
        candidate, n = download_name(name, suffix, f"restored_{n}"), n + 1
    taken.add(candidate)
    return candidate


def row(name: str, status: str, report: dict | None = None) -> dict:
    before = (report or {}).get("input_loudness", {})
    after = (report or {}).get("output_loudness", {})
    return {"file": name, "status": status, "LUFS before": before.get("integrated_lufs"),
            "LUFS after": after.get("integrated_lufs"), "true peak after (dBTP)": after.get("true_peak_dbtp"),
            "length (s)": (report or {}).get("seconds"), "time (s)": (report or {}).get("elapsed_seconds")}


def run(files: list[tuple[Path, str]], settings, output) -> None:
    prefs = load_prefs()
    job = new_job_dir("batch")
    rows = [row(name, "queued") for _, name in files]
    table = st.empty()
    overall = st.progress(0.0, text=f"0 of {len(files)} files")
    table.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    outputs, reports, taken = [], [], set()
    for i, (src, name) in enumerate(files):
        rows[i] = row(name, "running")
        table.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        dst = job / unique_name(name, output_suffix(output.format), taken)
        report, error = run_job(src, dst, settings, output, prefs)
        if report is None:
            rows[i] = row(name, f"failed: {error}")
        else:
            rows[i] = row(name, "done" + (" (with warnings)" if report["warnings"] else ""), report)
            outputs.append(dst)
            reports.append(report)
        table.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        overall.progress((i + 1) / len(files), text=f"{i + 1} of {len(files)} files")
    (job / "reports.json").write_text(json.dumps(reports, indent=2))
    archive = zip_files([*outputs, job / "reports.json"], job / "resonate-batch.zip") if outputs else None
    st.session_state["batch.result"] = {"rows": rows, "zip": str(archive) if archive else None}


def main() -> None:
    st.title("Batch")
    running = bool(st.session_state.get(RUNNING, False))
    files = chosen_files(running)
    st.caption(f"{len(files)} file{'s' if len(files) != 1 else ''} chosen")
    settings, output = build_settings(Controls("batch", disabled=running), None)
    st.button("Run batch", type="primary", on_click=start_run, key="batch.run",
              disabled=running or settings is None or not files)
    if running:
        try:
            if settings is not None and files:
                run(files, settings, output)
        finally:
            st.session_state[RUNNING] = False
        st.rerun()
    result = st.session_state.get("batch.result")
    if result:
        st.subheader("Results")
        st.dataframe(pd.DataFrame(result["rows"]), hide_index=True, width="stretch")
        if result["zip"] and Path(result["zip"]).exists():
            path = Path(result["zip"])
            st.download_button("Download all (zip)", lambda: path.read_bytes(), file_name=path.name,
                               mime=MIME[".zip"], on_click="ignore", type="primary", key="batch.dl_zip")


main()
