"""Batch: several recordings (uploads or a folder), one preset, a table of results, each file's
download, warnings and A/B, and a zip of everything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import streamlit as st

from resonate.audio.io import READ_EXTENSIONS, output_suffix
from resonate.ui import history, numbers
from resonate.ui.controls import Controls, build_settings
from resonate.ui.delivery import deliver
from resonate.ui.matching import choose_references_per_file, with_reference
from resonate.ui.results import MIME, ab_player, download_name
from resonate.ui.runner import cancel_job, format_seconds, notice, run_job, wait_for_cancelled_job
from resonate.ui.session import (
    load_prefs,
    new_job_dir,
    optional_path,
    session_dir,
    spool_upload,
    zip_files,
)

RUNNING = "batch.running"
SHOWN = "batch.result"              # the job folder of the batch shown below the controls
NOTICE = "batch.notice"
JOB = "batch.job"
STOPPING = "batch.stopping"
UPLOAD_TYPES = [e.lstrip(".") for e in READ_EXTENSIONS]


def start_run() -> None:
    if st.session_state.get("batch.cancel"):
        return                      # a Run click handed over with the Cancel that stopped it
    st.session_state[RUNNING] = True
    st.session_state.pop(NOTICE, None)


def cancel_run() -> None:
    cancel_job("batch", "batch")


def wait_for_the_cancelled_job() -> None:
    wait_for_cancelled_job("batch", "batch")


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
    """``NAME_restored.wav``, then ``NAME_restored_2.wav`` for a second file of the same name (as the CLI)."""
    candidate, n = download_name(name, suffix), 2
    while candidate in taken:
        candidate, n = download_name(name, suffix, f"restored_{n}"), n + 1
    taken.add(candidate)
    return candidate


def row(name: str, status: str, report: dict | None = None) -> dict[str, str]:
    """One line of the table, every number formatted (a dash where there is none)."""
    report = report or {}
    before, after = report.get("input_loudness", {}), report.get("output_loudness", {})
    return {"File": name, "Status": status,
            "Loudness before": numbers.with_unit(before.get("integrated_lufs"), "LUFS"),
            "Loudness after": numbers.with_unit(after.get("integrated_lufs"), "LUFS"),
            "True peak after": numbers.with_unit(after.get("true_peak_dbtp"), "dBTP"),
            "Length": format_seconds(report["seconds"]) if "seconds" in report else numbers.DASH,
            "Time": numbers.seconds(report.get("elapsed_seconds"))}


def draw_table(slot, rows: list[dict[str, str]]) -> None:
    # st.table wraps long cells (a failure's reason) instead of cutting them off.
    slot.table(pd.DataFrame(rows).set_index("File"))


def run(files: list[tuple[Path, str]], settings, output, references: list[Path | None] | None = None) -> None:
    prefs = load_prefs()
    job = new_job_dir("batch")
    st.session_state[JOB] = str(job)
    finished = False
    try:
        rows = [row(name, "queued") for _, name in files]
        table = st.empty()
        overall = st.progress(0.0, text=f"0 of {len(files)} files")
        draw_table(table, rows)
        results, outputs, reports, taken = [], [], [], set()
        for i, (src, name) in enumerate(files):
            rows[i] = row(name, "running")
            draw_table(table, rows)
            dst = job / unique_name(name, output_suffix(output.format), taken)
            warnings: list[str] = []
            settings_here = with_reference(settings, references[i] if references else None)
            report, error = run_job(src, dst, settings_here, output, prefs, on_warning=warnings.append)
            if report is None:
                rows[i] = row(name, f"failed: {error}")
                results.append({"name": name, "input": str(src), "error": error})
            else:
                done = deliver(dst, report, prefs)
                if done.copy_error:
                    warnings.append(done.copy_error)
                count = len(warnings)
                rows[i] = row(name, "done" + (f", {count} warning{'s' if count > 1 else ''}" if count else ""), report)
                results.append({"name": name, "input": str(src), "output": str(dst), "warnings": warnings,
                                "report": report})
                outputs.append(dst)
                reports.append(report)
            draw_table(table, rows)
            overall.progress((i + 1) / len(files), text=f"{i + 1} of {len(files)} files")
        (job / "reports.json").write_text(json.dumps(reports, indent=2))
        archive = zip_files([*outputs, job / "reports.json"], job / "resonate-batch.zip") if outputs else None
        history.write_run(job, {"rows": rows, "files": results, "zip": str(archive) if archive else None,
                                "output": str(archive) if archive else "",
                                "settings": history.settings_record(settings, output)})
        st.session_state[SHOWN] = str(job)
        finished = True
    finally:
        if not finished:
            shutil.rmtree(job, ignore_errors=True)
        st.session_state.pop(JOB, None)


def _reader(path: Path):
    return lambda: path.read_bytes()


def show_batch(record: dict) -> None:
    st.subheader("Results")
    draw_table(st, record["rows"])
    if record.get("zip") and Path(record["zip"]).exists():
        path = Path(record["zip"])
        st.download_button("Download all (zip)", _reader(path), file_name=path.name, mime=MIME[".zip"],
                           on_click="ignore", type="primary", key="batch.dl_zip",
                           help="Every master and a JSON report of the batch")
    done = [f for f in record["files"] if f.get("output") and Path(f["output"]).exists()]
    for f in record["files"]:
        if f.get("error"):
            st.error(f"{f['name']}: {f['error']}")
    if not done:
        return
    st.markdown("**Each file**")
    for i, f in enumerate(done):
        out = Path(f["output"])
        c1, c2 = st.columns([3, 2], vertical_alignment="center")
        c1.markdown(f"{f['name']} → `{out.name}` · "
                    f"{numbers.with_unit(f['report']['output_loudness'].get('integrated_lufs'), 'LUFS')}")
        c2.download_button("Download", _reader(out), file_name=out.name, mime=MIME.get(out.suffix),
                           on_click="ignore", key=f"batch.dl.{i}", icon=":material/download:")
        for msg in f.get("warnings", []):
            st.warning(f"{f['name']}: {notice(msg)}")
    names = {str(i): f["name"] for i, f in enumerate(done)}
    pick = st.selectbox("Listen: A/B of original and restored, at matched loudness", list(names),
                        format_func=names.get, key="batch.ab_file")
    chosen = done[int(pick)]
    ab_player(Path(chosen["input"]), Path(chosen["output"]), "batch")


def main() -> None:
    st.title("Batch")
    running = bool(st.session_state.get(RUNNING, False))
    files = chosen_files(running)
    st.caption(f"{len(files)} file{'s' if len(files) != 1 else ''} chosen")
    references = choose_references_per_file("batch", [name for _, name in files], running)
    settings, output = build_settings(Controls("batch", disabled=running), None)
    c1, c2 = st.columns([1, 6])
    c1.button("Run batch", type="primary", on_click=start_run, key="batch.run",
              disabled=running or settings is None or not files)
    if running:
        c2.button("Cancel", on_click=cancel_run, key="batch.cancel", help="Stop the batch; nothing of it is kept")
        try:
            if settings is not None and files:
                run(files, settings, output, references)
        finally:
            st.session_state[RUNNING] = False
        st.rerun()
    wait_for_the_cancelled_job()
    if st.session_state.get(NOTICE):
        st.info(st.session_state[NOTICE])
    batches = {r["job_dir"]: r for r in history.runs(session_dir(), "batch")}
    shown = st.session_state.get(SHOWN)
    if batches:
        record = batches.get(shown) or next(iter(batches.values()))      # after a reload: the latest batch
        show_batch(record)


main()
