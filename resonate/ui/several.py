"""The Restore page's "Several recordings of one show" mode: recordings in (uploads and/or paths),
aligned and fused (``resonate/fuse.py``), the normal chain run on the fused show, then the result
with the alignment: where each recording lies, its offset over time, and the fusion's facts.

Its state keys start with ``restore.show.``; the chain's controls are the single mode's own
(``restore.cfg.``), so switching modes keeps them. Runs are kept in the session folder like the
single mode's (``history``, kind ``show``) and so survive reruns and a reload.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from resonate import jobfiles
from resonate.audio.io import READ_EXTENSIONS, READABLE, output_suffix, probe, sanitize_filename
from resonate.errors import ResonateError
from resonate.fuse import FuseConfig, fuse_files, time_map_from_report
from resonate.stages import load_registry
from resonate.ui import history, numbers
from resonate.ui.controls import Controls, build_settings
from resonate.ui.delivery import deliver
from resonate.ui.results import download_name, show_result
from resonate.ui.runner import StageProgress, cancel_job, format_seconds, run_job, wait_for_cancelled_job
from resonate.ui.session import load_prefs, new_job_dir, optional_path, session_dir, spool_upload

PAGE = "restore.show"                  # cancel_job / wait_for_cancelled_job read PAGE.running, .job, .stopping, .notice
RUNNING = f"{PAGE}.running"
JOB = f"{PAGE}.job"
NOTICE = f"{PAGE}.notice"
ERROR = f"{PAGE}.error"
SHOWN = f"{PAGE}.result"
RUN_KIND = "show"                      # job folders show-001, ... in the session folder
UPLOAD_TYPES = [e.lstrip(".") for e in READ_EXTENSIONS]
FUSE_PHASES = ["align", "fuse"]


# ---------------------------------------------------------------------------------------------
# What the fusion report says, as a figure and a table (no Streamlit: testable on their own)


def _timeline_of(report: dict[str, Any], t_ref: np.ndarray) -> np.ndarray:
    """Reference time -> time on the fused output."""
    return np.asarray(t_ref, dtype=np.float64) - report["timeline_start_in_reference_s"]


def alignment_figure(report: dict[str, Any]) -> go.Figure:
    """Top: where each recording lies on the fused show. Bottom: each recording's offset against
    the reference over time, less its offset at the start (so clock drift shows as a slope): the
    local measurements (circles agree with the fit, crosses were outvoted) and the fitted map."""
    used = [r for r in report["recordings"] if r["used"]]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14, row_heights=[0.35, 0.65],
                        subplot_titles=("Where each recording lies in the fused show",
                                        "Offset against the reference over time (less its start offset)"))
    colours = ["#ff4b4b", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2"]
    for k, row in enumerate(used):
        colour = colours[k % len(colours)]
        role = "reference" if row["reference"] else f"{row['drift_ppm']:+.1f} ppm"
        fig.add_trace(go.Bar(y=[row["name"]], x=[row["end_s"] - row["start_s"]], base=[row["start_s"]],
                             orientation="h", marker_color=colour, name=row["name"], legendgroup=row["name"],
                             showlegend=False,
                             hovertemplate=f"{row['name']}: %{{base:.1f}}–%{{x:.1f}} s long<extra>{role}</extra>"),
                      row=1, col=1)
        if row["reference"] or not row.get("local_offsets"):
            continue
        pts = np.array([[p[0], p[1]] for p in row["local_offsets"]], dtype=np.float64)
        agree = np.array([bool(p[3]) for p in row["local_offsets"]])
        start_ms = row["offset_s"] * 1e3
        x = _timeline_of(report, pts[:, 0])
        for mask, symbol, label in ((agree, "circle", "agrees"), (~agree, "x", "outvoted")):
            if mask.any():
                fig.add_trace(go.Scatter(x=x[mask], y=pts[mask, 1] - start_ms, mode="markers", name=row["name"],
                                         legendgroup=row["name"], showlegend=False,
                                         marker=dict(color=colour, symbol=symbol, size=6),
                                         hovertemplate="%{x:.1f} s · %{y:.3f} ms<extra>" + label + "</extra>"),
                              row=2, col=1)
        t = np.linspace(pts[:, 0].min(), pts[:, 0].max(), 200)
        tmap = time_map_from_report(row)
        fit_ms = (np.asarray(tmap(t)) - t) * 1e3 - start_ms
        fig.add_trace(go.Scatter(x=_timeline_of(report, t), y=fit_ms, mode="lines", line=dict(color=colour),
                                 name=f"{row['name']} ({row['drift_ppm']:+.1f} ppm)", legendgroup=row["name"],
                                 hoverinfo="skip"),
                      row=2, col=1)
    fig.update_yaxes(autorange="reversed", automargin=True, row=1, col=1)
    fig.update_yaxes(title_text="ms", automargin=True, row=2, col=1)
    fig.update_xaxes(title_text="time in the fused show (s)", automargin=True, row=2, col=1)
    fig.update_layout(height=170 + 110 * len(used) + 260, margin=dict(l=80, r=20, t=50, b=50), barmode="overlay",
                      legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0, xanchor="left"))
    return fig


def recordings_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per recording given, in the order given: what the alignment found, or why it was left out."""
    rows = []
    for r in report["recordings"]:
        if not r["used"]:
            rows.append({"Recording": r["name"], "Role": "left out", "Starts at": numbers.DASH,
                         "Offset": numbers.DASH, "Clock drift": numbers.DASH, "Overlap": numbers.DASH,
                         "Windows agreeing": numbers.DASH, "Cells kept": numbers.DASH, "Why": r["reason"]})
            continue
        ref = r["reference"]
        rows.append({
            "Recording": r["name"],
            "Role": "reference" if ref else "fused",
            "Starts at": format_seconds(r["start_s"]) if r["start_s"] >= 60 else f"{r['start_s']:.3f} s",
            # Its own time at the reference's start: positive when it started earlier.
            "Offset": numbers.DASH if ref else f"{r['offset_s']:+.4f} s",
            "Clock drift": numbers.DASH if ref else f"{r['drift_ppm']:+.1f} ppm",
            "Overlap": format_seconds(r["overlap_with_reference_s"]),
            "Windows agreeing": numbers.DASH if ref else
            f"{r['windows_agreeing']} of {r['windows']} (spread {r['fit_residual_ms']:.3f} ms)",
            "Cells kept": numbers.DASH if r.get("cells_kept") is None else f"{100 * r['cells_kept']:.0f} %",
            "Why": "",
        })
    return pd.DataFrame(rows).set_index("Recording")


def show_alignment(fusion: dict[str, Any]) -> None:
    st.subheader("Alignment")
    used = [r for r in fusion["recordings"] if r["used"]]
    st.caption(f"{len(used)} of {len(fusion['recordings'])} recordings fused ({fusion['mode']} per "
               f"time-frequency cell), on the clock of {fusion['reference']}; the fused show is "
               f"{format_seconds(fusion['seconds'])} long.")
    for r in fusion["recordings"]:
        if not r["used"]:
            st.warning(f"**{r['name']} was left out:** {r['reason']}", icon=":material/call_split:")
    st.plotly_chart(alignment_figure(fusion), width="stretch")
    st.table(recordings_table(fusion))
    st.caption("Offset: the recording's own time at the reference's start. Clock drift: how much faster "
               "(+) or slower its clock ran. Windows agreeing: the stretches of a few seconds where its "
               "offset was measured, and how far they stray from the fitted line. Cells kept: the share of "
               "its sound that agreed with the other recordings and went into the fused show.")


# ---------------------------------------------------------------------------------------------
# The page's blocks


def start_run() -> None:
    if st.session_state.get(f"{PAGE}.cancel"):
        return                      # a Run click handed over with the Cancel that stopped it
    st.session_state[RUNNING] = True
    st.session_state.pop(ERROR, None)
    st.session_state.pop(NOTICE, None)


def cancel_run() -> None:
    cancel_job(PAGE, "run")


def choose_recordings(disabled: bool) -> list[tuple[Path, str]]:
    """(path on disk, name) of every recording chosen: uploads first, then the paths typed."""
    uploads = st.file_uploader(f"Drop two or more recordings of the same show ({READABLE})", type=UPLOAD_TYPES,
                               accept_multiple_files=True, key=f"{PAGE}.uploads", disabled=disabled) or []
    spooled: dict[str, str] = st.session_state.setdefault(f"{PAGE}.spooled", {})
    chosen = []
    for up in uploads:
        if up.file_id not in spooled:
            # To disk at once: the job reads the files from there, never from memory.
            spooled[up.file_id] = str(spool_upload(up, session_dir() / "uploads" / up.file_id[:12]))
        chosen.append((Path(spooled[up.file_id]), up.name))
    text = st.text_area("…and/or paths of files on this computer, one per line", key=f"{PAGE}.paths",
                        disabled=disabled, height=90, placeholder="/Users/me/Music/show-phone1.m4a")
    for line in text.splitlines():
        path = optional_path(line)
        if path is not None:
            chosen.append((path, path.name))
    return chosen


def describe_recordings(chosen: list[tuple[Path, str]]) -> float | None:
    """One line per recording; the longest one's duration, or None unless two or more are readable."""
    if not chosen:
        st.info("Choose two or more recordings of the same show: phones in the crowd, a recorder, a video's "
                "sound. They are lined up (start times, clock drift), fused where they overlap, and restored.")
        return None
    longest, good = 0.0, 0
    for path, name in chosen:
        try:
            info = probe(path)
        except ResonateError as exc:
            st.error(f"{name}: {exc}")
            continue
        good += 1
        longest = max(longest, info.seconds)
        channels = {1: "mono", 2: "stereo"}.get(info.channels, f"{info.channels} channels")
        st.markdown(f"**{name}** · {format_seconds(info.seconds)} · {info.sample_rate / 1000:g} kHz · {channels}")
    if good < 2:
        st.info("Add at least one more recording of the same show.")
        return None
    if good < len(chosen):
        return None                  # a bad file: shown above; the user removes it first
    return longest


def fuse_recordings(chosen: list[tuple[Path, str]], job: Path) -> tuple[Path | None, dict[str, Any] | None, str | None]:
    """Align and fuse into a float32 file in ``job``: (its path, the fusion report, None) or (None, None, error)."""
    names = [n for _, n in chosen]
    with st.status(f"Aligning and fusing {len(chosen)} recordings…", expanded=True) as status:
        progress = StageProgress(FUSE_PHASES, set(), set())
        try:
            infos = [probe(p) for p, _ in chosen]
            # float32 at the highest rate, at most as long as all of them one after another.
            size = sum(i.seconds for i in infos) * max(i.sample_rate for i in infos) * max(i.channels for i in infos) * 4
            jobfiles.check_free_space([(job, int(size), "fused show")])
            fused = job / (sanitize_filename(Path(names[0]).stem, "show") + "_fused.wav")
            fusion = fuse_files([p for p, _ in chosen], fused, FuseConfig(), progress=progress.update)
        except ResonateError as exc:
            status.update(label="Could not fuse the recordings", state="error", expanded=True)
            st.error(str(exc))
            return None, None, str(exc)
        progress.draw(force=True)
        used = sum(r["used"] for r in fusion["recordings"])
        status.update(label=f"Fused {used} of {len(chosen)} recordings in {format_seconds(progress.model.clock() - progress.model.started)}",
                      state="complete", expanded=False)
    return fused, fusion, None


def run(chosen: list[tuple[Path, str]], settings, output) -> None:
    prefs = load_prefs()
    job = new_job_dir(RUN_KIND)
    st.session_state[JOB] = str(job)
    finished = False
    try:
        fused, fusion, error = fuse_recordings(chosen, job)
        if fused is None:
            st.session_state[ERROR] = f"Could not fuse the recordings: {error}"
            return
        name = f"{fused.stem}.wav"
        dst = job / download_name(name, output_suffix(output.format))
        separating = "separate" in load_registry() and "separate" not in settings.skip
        stems_dir = job / "stems" if separating else None
        report, error = run_job(fused, dst, settings, output, prefs, stems_dir=stems_dir)
        if report is None:
            st.session_state[ERROR] = f"Could not restore the fused show: {error}"
            return
        report["input"] = [str(p) for p, _ in chosen]
        report["fusion"] = fusion
        done = deliver(dst, report, prefs, report_path=job / "report.json", stems_dir=stems_dir)
        history.write_run(job, {
            # The fused show is the chain's input: the A/B and the plots compare the result with it.
            "input": str(fused), "input_name": name, "output": str(dst), "report": report, "fusion": fusion,
            "recordings": [{"path": str(p), "name": n} for p, n in chosen],
            **done.run_fields(output),
            "settings": history.settings_record(settings, output),
            "fingerprint": fingerprint(chosen, settings, output),
        })
        st.session_state[SHOWN] = str(job)
        finished = True
    finally:
        # An error, Cancel, leaving the page or a closed tab: nothing half-made stays behind.
        if not finished:
            shutil.rmtree(job, ignore_errors=True)
        st.session_state.pop(JOB, None)


def fingerprint(chosen: list[tuple[Path, str]], settings, output) -> str:
    return history.fingerprint("\n".join(str(p) for p, _ in chosen), settings, output)


def show_runs(chosen: list[tuple[Path, str]], settings, output) -> None:
    runs = history.runs(session_dir(), RUN_KIND)
    if not runs:
        return
    by_job = {r["job_dir"]: r for r in runs}
    if st.session_state.get(SHOWN) not in by_job:
        st.session_state[SHOWN] = runs[0]["job_dir"]           # after a reload: the latest run
    st.divider()
    if len(runs) > 1:
        st.selectbox("This session's fused shows", list(by_job), key=SHOWN,
                     format_func=lambda j: history.describe(by_job[j]))
    record = by_job[st.session_state[SHOWN]]
    if chosen and settings is not None and record.get("fingerprint") != fingerprint(chosen, settings, output):
        st.warning("**Out of date:** the recordings or the controls changed after this result. "
                   "Run again to hear the change.", icon=":material/update:")
    show_result(record, PAGE)
    if Path(record["output"]).exists():
        show_alignment(record["fusion"])


def several_recordings() -> None:
    """The whole mode, below the page's title and mode switch."""
    running = bool(st.session_state.get(RUNNING, False))
    chosen = choose_recordings(running)
    duration = describe_recordings(chosen)
    settings, output = build_settings(Controls("restore", disabled=running), duration)
    ready = settings is not None and duration is not None
    c1, c2 = st.columns([1, 6])
    c1.button("Fuse and restore", type="primary", on_click=start_run, disabled=running or not ready, key=f"{PAGE}.run")
    if running:
        c2.button("Cancel", on_click=cancel_run, key=f"{PAGE}.cancel", help="Stop this run; nothing of it is kept")
        try:
            if ready:
                run(chosen, settings, output)
        finally:
            # Also when the run is interrupted (Cancel, page change): the controls must come back.
            st.session_state[RUNNING] = False
        st.rerun()
    wait_for_cancelled_job(PAGE, "run")
    if st.session_state.get(NOTICE):
        st.info(st.session_state[NOTICE])
    if st.session_state.get(ERROR):
        st.error(st.session_state[ERROR])
    show_runs(chosen, settings, output)
