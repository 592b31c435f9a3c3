"""The match stage in the app: the "Studio version" chooser of the Restore page and the
correction curve on the results (reference, recording and applied EQ, from the job report)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from resonate.audio.io import READ_EXTENSIONS, READABLE
from resonate.pipeline import ChainSettings
from resonate.ui.session import session_dir, spool_upload

UPLOAD_TYPES = [e.lstrip(".") for e in READ_EXTENSIONS]
FREQ_TICKS = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
REFERENCE_COLOUR = "rgb(99, 110, 250)"
RECORDING_COLOUR = "rgb(128, 132, 149)"
EQ_COLOUR = "rgb(255, 75, 75)"


def choose_reference(scope: str, disabled: bool) -> Path | None:
    """An optional studio version (upload or local path); the chosen file, or None."""
    with st.expander("Studio version (optional)", expanded=bool(st.session_state.get(f"{scope}.reference"))):
        st.caption("The studio recording of the songs: the Match stage brings the recording's tone to it "
                   "(at least 10 s; the whole song is best).")
        uploaded = st.file_uploader(f"Studio version ({READABLE})", type=UPLOAD_TYPES, key=f"{scope}.reference_upload",
                                    disabled=disabled)
        if uploaded is not None and st.session_state.get(f"{scope}.reference_id") != uploaded.file_id:
            path = spool_upload(uploaded, session_dir() / "references" / uploaded.file_id[:12])
            st.session_state[f"{scope}.reference_id"] = uploaded.file_id
            st.session_state[f"{scope}.reference"] = str(path)
        if uploaded is None and st.session_state.get(f"{scope}.reference_id"):
            st.session_state.pop(f"{scope}.reference_id")        # the upload was removed
            st.session_state.pop(f"{scope}.reference", None)
        st.text_input("…or its path on this computer", key=f"{scope}.reference_path", disabled=disabled,
                      placeholder="/Users/me/Music/album/song.flac")
        typed = st.session_state.get(f"{scope}.reference_path", "").strip()
        if typed and uploaded is None:
            st.session_state[f"{scope}.reference"] = str(Path(typed).expanduser())
        elif not typed and uploaded is None:
            st.session_state.pop(f"{scope}.reference", None)
    chosen = st.session_state.get(f"{scope}.reference")
    return Path(chosen) if chosen else None


def choose_references_per_file(scope: str, names: list[str], disabled: bool) -> list[Path | None]:
    """Batch: an optional studio version (a path) for each file, in the files' order (None: no matching)."""
    chosen: list[Path | None] = [None] * len(names)
    if not names:
        return chosen
    with st.expander("Studio versions (optional, one per file)"):
        st.caption("The studio recording of each file's songs, as a path on this computer: the Match stage "
                   "brings that file's tone to it. Leave empty for no matching.")
        for i, name in enumerate(names):
            text = st.text_input(f"Studio version for {name}", key=f"{scope}.reference.{i}", disabled=disabled,
                                 placeholder="/Users/me/Music/album/song.flac")
            chosen[i] = Path(text.strip()).expanduser() if text.strip() else None
    return chosen


def with_reference(settings: ChainSettings, reference: Path | None) -> ChainSettings:
    """``settings`` with ``reference`` as the match stage's one reference (unchanged without one)."""
    if reference is None:
        return settings
    overrides = {**settings.overrides, "match": {**settings.overrides.get("match", {}), "references": [str(reference)]}}
    return dataclasses.replace(settings, overrides=overrides)


def correction_figure(curve: dict[str, Any]) -> go.Figure:
    """Top: the reference's and the recording's smoothed long-term spectra (the reference moved to
    the recording's level); bottom: the EQ applied."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.08,
                        subplot_titles=("Long-term spectrum", "Applied EQ"))
    f = curve["freq_hz"]
    fig.add_trace(go.Scatter(x=f, y=curve["reference_db"], name="Studio version", line=dict(color=REFERENCE_COLOUR)),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=f, y=curve["recording_db"], name="Recording (before)",
                             line=dict(color=RECORDING_COLOUR)), row=1, col=1)
    fig.add_trace(go.Scatter(x=f, y=curve["applied_db"], name="Applied EQ", line=dict(color=EQ_COLOUR, width=2.5)),
                  row=2, col=1)
    fig.add_hline(y=0, line=dict(color="rgba(128,128,128,0.5)", width=1), row=2, col=1)
    ticks = [t for t in FREQ_TICKS if f and f[0] <= t <= f[-1]]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t // 1000}k" if t >= 1000 else str(t) for t in ticks])
    fig.update_xaxes(title_text="Hz", row=2, col=1)
    fig.update_yaxes(title_text="dB", row=1, col=1)
    fig.update_yaxes(title_text="dB", row=2, col=1)
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=1.12))
    return fig


def show_correction(report: dict[str, Any]) -> None:
    """The match stage's correction curves, when it ran."""
    entry = next((s for s in report.get("stages", []) if s["name"] == "match" and not s["skipped"]), None)
    if entry is None or not entry.get("curves"):
        return
    st.markdown(f"**Matched to the studio version** (strength {entry['strength']:g}, at most "
                f"±{entry['max_correction_db']:g} dB; largest boost {entry['max_boost_db']:+.1f} dB, "
                f"largest cut {entry['max_cut_db']:+.1f} dB)")
    for curve in entry["curves"]:
        if len(entry["curves"]) > 1:
            st.caption(curve["reference"])
        st.plotly_chart(correction_figure(curve), width="stretch", key=f"match-curve-{curve['reference']}")
