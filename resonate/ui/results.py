"""The results of a restore job: notices, loudness before/after, plots, A/B player, downloads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from resonate.audio.io import probe, sanitize_filename
from resonate.ui import abplayer, history, numbers
from resonate.ui.matching import show_correction
from resonate.ui.plots import (
    added_band_figure,
    file_envelope,
    file_spectrogram,
    spectrogram_figure,
    stems_figure,
    waveform_figure,
)
from resonate.ui.runner import format_seconds, notice

AB_HEIGHT_PX = 110
MIME = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".zip": "application/zip"}
LOUDNESS_ROWS = (
    ("integrated_lufs", "Integrated loudness (LUFS)", numbers.level),
    ("loudness_range_lu", "Loudness range (LU)", numbers.level),
    ("true_peak_dbtp", "True peak (dBTP)", numbers.level),
    ("sample_peak_dbfs", "Sample peak (dBFS)", numbers.level),
    ("clipped_samples", "Clipped samples", numbers.count),
)


def loudness_table(report: dict[str, Any]) -> pd.DataFrame:
    before, after = report["input_loudness"], report["output_loudness"]
    return pd.DataFrame(
        {"Original": [fmt(before.get(k)) for k, _, fmt in LOUDNESS_ROWS],
         "Restored": [fmt(after.get(k)) for k, _, fmt in LOUDNESS_ROWS]},
        index=[label for _, label, _ in LOUDNESS_ROWS],
    )


def stage_table(report: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for s in report["stages"]:
        skipped = s["skipped"]
        rows.append({"Stage": s["name"].capitalize(),
                     "Status": f"skipped: {s.get('reason', '')}" if skipped else "ran",
                     "Time": numbers.DASH if skipped else numbers.seconds(s["seconds"]),
                     "Real-time factor": numbers.DASH if skipped else numbers.ratio(s["rtf"])})
    return pd.DataFrame(rows)


def download_name(input_name: str, suffix: str, tag: str = "restored") -> str:
    """``NAME_restored.wav``: the CLI's batch naming, on every page."""
    return f"{sanitize_filename(Path(input_name).stem, 'recording')}_{tag}{suffix}"


def _reader(path: Path):
    # Deferred: the file is read only when the user clicks, not on every rerun.
    return lambda: path.read_bytes()


def _stamp(path) -> tuple[str, float]:
    return str(path), os.stat(path).st_mtime


@st.cache_data(max_entries=2, show_spinner="Preparing the A/B excerpts…")
def _player(original: tuple[str, float], restored: tuple[str, float], start_s: float, seconds: float) -> str:
    excerpt = abplayer.level_matched_excerpts(original[0], restored[0], start_s, seconds)
    return abplayer.player_html(excerpt, AB_HEIGHT_PX)


def ab_player(original: Path, restored: Path, key: str) -> None:
    duration = probe(original).seconds
    if duration > abplayer.MIN_EXCERPT_S:
        c1, c2 = st.columns(2)
        length = abplayer.MIN_EXCERPT_S
        if duration > abplayer.MIN_EXCERPT_S + 5:
            length = c1.slider("Excerpt length", abplayer.MIN_EXCERPT_S, float(min(abplayer.MAX_EXCERPT_S, duration)),
                               value=abplayer.MIN_EXCERPT_S, step=5.0, format="%.0f s",
                               key=f"{key}.ab_length")
        # Every slider number is a float: Streamlit refuses an int value between float bounds.
        latest = float(max(0.0, duration - length))
        start = 0.0
        if latest >= 1:
            start_key = f"{key}.ab_start"
            if st.session_state.get(start_key, 0.0) > latest:
                st.session_state[start_key] = latest      # a longer excerpt moved the end of the range
            start = c2.slider("Excerpt start", 0.0, latest, value=float(round(latest / 2)), step=1.0,
                              format="%.0f s", key=start_key)
    else:
        start, length = 0.0, duration
    start, length = abplayer.excerpt_bounds(duration, start, length)
    embed_html(_player(_stamp(original), _stamp(restored), start, length), AB_HEIGHT_PX + 10)


def embed_html(html: str, height: int) -> None:
    """A scripted HTML component: ``st.iframe`` where this Streamlit has it, else components.html."""
    if hasattr(st, "iframe"):
        st.iframe(html, height=height)
    else:
        import streamlit.components.v1 as components

        components.html(html, height=height)


def extend_summary(report: dict[str, Any]) -> str | None:
    """One line on what the extend stage found and did, or None when it did not run."""
    entry = next((s for s in report.get("stages", []) if s["name"] == "extend" and not s["skipped"]), None)
    if entry is None:
        return None
    cutoff = entry.get("detected_cutoff_hz")
    if not entry.get("extended"):
        found = f"Detected cutoff: {cutoff / 1000:.1f} kHz; " if cutoff else "Bandwidth: "
        return found + entry.get("note", "nothing to extend")
    lo, hi = entry["added_band_hz"]
    added = entry.get("added_db")
    level = f", {added:.1f} dB relative to the whole signal" if added is not None else ""
    return f"Detected cutoff: {cutoff / 1000:.1f} kHz. Regenerated {lo / 1000:.1f}-{hi / 1000:.1f} kHz{level}."


def show_added_band(report: dict[str, Any], original: Path, restored: Path) -> None:
    """The extend stage's cutoff and, when it added a band, that band before and after."""
    line = extend_summary(report)
    if line is None:
        return
    st.markdown(f"**Bandwidth extension.** {line}")
    entry = next(s for s in report["stages"] if s["name"] == "extend")
    if entry.get("extended"):
        st.plotly_chart(added_band_figure(file_spectrogram(original), file_spectrogram(restored),
                                          entry["detected_cutoff_hz"]), width="stretch", theme=None)


def show_result(result: dict[str, Any], key: str = "restore") -> None:
    report = result["report"]
    original, restored = Path(result["input"]), Path(result["output"])
    if not restored.exists():
        st.info("The results of the last run are gone (the session folder was cleared). Run again.")
        return
    for msg in report.get("warnings", []):
        st.warning(notice(msg))

    st.subheader("Result")
    if result.get("settings"):
        st.caption(f"{result['input_name']} · {history.preset_label(result['settings']['preset'])} preset"
                   + (f" · bypassed: {', '.join(result['settings']['skip'])}" if result["settings"].get("skip") else "")
                   + f" · {result.get('format_label', '')}")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Length", format_seconds(report["seconds"]))
    m2.metric("Processing time", numbers.seconds(report["elapsed_seconds"]))
    m3.metric("Real-time factor", numbers.ratio(report.get("rtf")),
              help="Processing time divided by the recording's length: below 1 is faster than real time")
    m4.metric("Loudness", numbers.with_unit(report["output_loudness"].get("integrated_lufs"), "LUFS"))

    st.markdown("**A/B: original vs restored, at matched loudness**")
    ab_player(original, restored, key)

    tabs = st.tabs(["Waveform", "Spectrogram", "Loudness", "Stems", "Stages"])
    with tabs[0]:
        st.plotly_chart(waveform_figure(file_envelope(original), file_envelope(restored)), width="stretch")
    with tabs[1]:
        # theme=None: Streamlit's theme would replace the dB colour scale.
        st.plotly_chart(spectrogram_figure(file_spectrogram(original), file_spectrogram(restored)), width="stretch",
                        theme=None)
        show_added_band(report, original, restored)
        show_correction(report)
    with tabs[2]:
        st.table(loudness_table(report))
        st.caption("Clipped samples: samples at or beyond full scale. True peak: the peak between samples "
                   "(4x oversampled), what a converter will really see.")
    with tabs[3]:
        stems = [Path(p) for p in result.get("stems", []) if Path(p).exists()]
        if stems:
            st.plotly_chart(stems_figure({p.stem.rsplit("-", 1)[-1]: file_envelope(p) for p in stems}),
                            width="stretch")
        else:
            st.caption("No stems: the separate stage did not run for this job.")
    with tabs[4]:
        st.table(stage_table(report).set_index("Stage"))
        if result.get("settings"):
            with st.expander("Settings of this run"):
                st.json(result["settings"], expanded=2)

    name = result["input_name"]
    c1, c2 = st.columns(2)
    c1.download_button(f"Download master ({result['format_label']})", _reader(restored),
                       file_name=download_name(name, restored.suffix), mime=MIME.get(restored.suffix),
                       on_click="ignore", type="primary", key=f"{key}.dl_master")
    if result.get("stems_zip"):
        c2.download_button("Download stems (zip)", _reader(Path(result["stems_zip"])),
                           file_name=download_name(name, ".zip", "stems"), mime=MIME[".zip"],
                           on_click="ignore", key=f"{key}.dl_stems")
    if result.get("saved_copy"):
        st.caption(f"A copy of the master was saved to {result['saved_copy']}")
    if result.get("copy_error"):
        st.error(result["copy_error"] + " Download it from this page, or fix the folder in Settings.")
