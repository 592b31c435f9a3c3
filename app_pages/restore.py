"""Restore: one recording in (upload, local path or the demo clip), a master and its views out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import streamlit as st

from resonate.audio.io import READ_EXTENSIONS, READABLE, output_suffix, probe
from resonate.errors import ResonateError
from resonate.stages import load_registry
from resonate.ui import history, several
from resonate.ui.controls import Controls, build_settings
from resonate.ui.delivery import deliver
from resonate.ui.matching import choose_reference, with_reference
from resonate.ui.results import download_name, show_result
from resonate.ui.runner import cancel_job, format_seconds, run_job, wait_for_cancelled_job
from resonate.ui.session import (
    DEMO_CLIP,
    load_prefs,
    new_job_dir,
    session_dir,
    spool_upload,
)

UPLOAD_TYPES = [e.lstrip(".") for e in READ_EXTENSIONS]
RUNNING = "restore.running"
SHOWN = "restore.result"            # the job folder of the run shown below the controls
NOTICE = "restore.notice"
JOB = "restore.job"                 # the job folder of the run in progress
STOPPING = "restore.stopping"       # the job folder of a cancelled run, until it is gone
INPUT_FILE = "restore-input.json"   # the chosen recording, in the session folder: survives a reload


def set_input(path: Path, name: str, kind: str) -> None:
    chosen = {"path": str(path), "name": name, "kind": kind}
    st.session_state["restore.input"] = chosen
    st.session_state.pop("restore.error", None)
    (session_dir() / INPUT_FILE).write_text(json.dumps(chosen))


def clear_input() -> None:
    st.session_state.pop("restore.input", None)
    (session_dir() / INPUT_FILE).unlink(missing_ok=True)


def current_input() -> dict | None:
    if "restore.input" not in st.session_state:
        try:
            chosen = json.loads((session_dir() / INPUT_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(chosen, dict) or not {"path", "name", "kind"} <= set(chosen):
            return None
        st.session_state["restore.input"] = chosen
    return st.session_state["restore.input"]


def use_demo() -> None:
    set_input(DEMO_CLIP, DEMO_CLIP.name, "demo")


def use_local_path() -> None:
    text = st.session_state.get("restore.local_path", "").strip()
    if text:
        set_input(Path(text).expanduser(), Path(text).name, "local")


def start_run() -> None:
    if st.session_state.get("restore.cancel"):
        # Streamlit hands the interrupted run's Run click to the next run together with the
        # Cancel click that interrupted it: Cancel wins.
        return
    st.session_state[RUNNING] = True
    st.session_state.pop("restore.error", None)
    st.session_state.pop(NOTICE, None)


def cancel_run() -> None:
    cancel_job("restore", "run")


def wait_for_the_cancelled_job() -> None:
    wait_for_cancelled_job("restore", "run")


def choose_input(disabled: bool) -> None:
    uploaded = st.file_uploader(f"Drop a concert recording ({READABLE})", type=UPLOAD_TYPES,
                                key="restore.upload", disabled=disabled)
    if uploaded is not None and st.session_state.get("restore.upload_id") != uploaded.file_id:
        # Spool to disk at once: the job, the plots and the player all read the file from there.
        path = spool_upload(uploaded, session_dir() / "uploads" / uploaded.file_id[:12])
        st.session_state["restore.upload_id"] = uploaded.file_id
        set_input(path, uploaded.name, "upload")
    current = current_input()
    if uploaded is None and st.session_state.get("restore.upload_id") and current and current["kind"] == "upload":
        # The user removed the upload (after a reload the uploader starts empty: that is no removal).
        clear_input()
        st.session_state.pop("restore.upload_id", None)
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    c1.text_input("…or the path of a file on this computer", key="restore.local_path", on_change=use_local_path,
                  placeholder="/Users/me/Music/show.flac", disabled=disabled)
    c2.button("Try the demo", on_click=use_demo, disabled=disabled, width="stretch",
              help="A 30-second degraded audience recording made for Resonate (see About)")


def describe_input() -> float | None:
    """One line about the chosen recording; its duration, or None when there is none (or it is bad)."""
    current = current_input()
    if not current:
        st.info("Choose a recording above, or try the demo clip.")
        return None
    try:
        info = probe(current["path"])
    except ResonateError as exc:
        st.error(str(exc))
        return None
    channels = {1: "mono", 2: "stereo"}.get(info.channels, f"{info.channels} channels")
    st.markdown(f"**{current['name']}** · {format_seconds(info.seconds)} · {info.sample_rate / 1000:g} kHz · {channels}")
    return info.seconds


def check_reference(reference: Path | None) -> bool:
    """Whether the studio version can be used (one error line under the chooser if not)."""
    if reference is None:
        return True
    from resonate.stages.match import Reference, check_reference_paths, check_references

    try:
        current = current_input()
        check_reference_paths([Reference(str(reference))], [Path(current["path"])] if current else [], [])
        check_references([Reference(str(reference))])
    except ResonateError as exc:
        st.error(str(exc))
        return False
    return True


def run(settings, output) -> None:
    current = current_input()
    prefs = load_prefs()
    src = Path(current["path"])
    job = new_job_dir("restore")
    st.session_state[JOB] = str(job)
    finished = False
    try:
        dst = job / download_name(current["name"], output_suffix(output.format))
        separating = "separate" in load_registry() and "separate" not in settings.skip
        stems_dir = job / "stems" if separating else None
        report, error = run_job(src, dst, settings, output, prefs, stems_dir=stems_dir)
        if report is None:
            st.session_state["restore.error"] = f"Could not restore {current['name']}: {error}"
            return
        done = deliver(dst, report, prefs, report_path=job / "report.json", stems_dir=stems_dir)
        history.write_run(job, {
            "input": str(src), "input_name": current["name"], "output": str(dst), "report": report,
            **done.run_fields(output),
            "settings": history.settings_record(settings, output),
            "fingerprint": history.fingerprint(src, settings, output),
        })
        st.session_state[SHOWN] = str(job)
        finished = True
    finally:
        # An error, Cancel, leaving the page or a closed tab: nothing half-made stays behind.
        if not finished:
            shutil.rmtree(job, ignore_errors=True)
        st.session_state.pop(JOB, None)


def show_runs(settings, output) -> None:
    runs = history.runs(session_dir(), "restore")
    if not runs:
        return
    by_job = {r["job_dir"]: r for r in runs}
    if st.session_state.get(SHOWN) not in by_job:
        st.session_state[SHOWN] = runs[0]["job_dir"]           # after a reload: the latest run
    st.divider()
    if len(runs) > 1:
        st.selectbox("This session's runs", list(by_job), key=SHOWN, format_func=lambda j: history.describe(by_job[j]),
                     help="Every run of this session stays here, with its downloads and A/B, until the tab "
                          "is closed for a day")
    record = by_job[st.session_state[SHOWN]]
    current = current_input()
    if current and settings is not None and record.get("fingerprint") != history.fingerprint(current["path"], settings,
                                                                                           output):
        st.warning("**Out of date:** the recording or the controls changed after this result. "
                   "Run again to hear the change.", icon=":material/update:")
    show_result(record, "restore")


ONE, SEVERAL = "One recording", "Several recordings of one show"


def choose_mode() -> str:
    """One recording (below), or several of one show fused first (resonate/ui/several.py)."""
    busy = bool(st.session_state.get(RUNNING) or st.session_state.get(several.RUNNING))
    return st.radio("What to restore", (ONE, SEVERAL), key="restore.mode", horizontal=True, disabled=busy,
                    label_visibility="collapsed")


def main() -> None:
    st.title("Restore")
    if choose_mode() == SEVERAL:
        several.several_recordings()
        return
    running = bool(st.session_state.get(RUNNING, False))
    choose_input(running)
    duration = describe_input()
    reference = choose_reference("restore", running)
    reference_ok = check_reference(reference)
    settings, output = build_settings(Controls("restore", disabled=running), duration)
    settings = with_reference(settings, reference) if settings is not None else None
    ready = settings is not None and duration is not None and reference_ok
    c1, c2 = st.columns([1, 6])
    c1.button("Run", type="primary", on_click=start_run, disabled=running or not ready, key="restore.run")
    if running:
        c2.button("Cancel", on_click=cancel_run, key="restore.cancel", help="Stop this run; nothing of it is kept")
        try:
            if ready:
                run(settings, output)
        finally:
            # Also when the run is interrupted (Cancel, page change): the controls must come back.
            st.session_state[RUNNING] = False
        st.rerun()
    wait_for_the_cancelled_job()
    if st.session_state.get(NOTICE):
        st.info(st.session_state[NOTICE])
    if st.session_state.get("restore.error"):
        st.error(st.session_state["restore.error"])
    show_runs(settings, output)


main()
