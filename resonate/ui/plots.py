"""Plotly figures for the results: waveform overview, spectrograms, stems.

The figures are built from the bounded summaries in :mod:`resonate.ui.analysis`; the summaries
are cached per (file, modification time) with ``st.cache_data`` (a few thousand numbers each,
never the audio itself).
"""

from __future__ import annotations

import os

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from resonate.ui.analysis import Envelope, Spectrogram, envelope, spectrogram

BEFORE_COLOUR = "rgba(128, 132, 149, 0.55)"
AFTER_COLOUR = "rgba(255, 75, 75, 0.55)"
FREQ_TICKS = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
ADDED_BAND_TICKS = (2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000, 18000, 20000, 22000)
LOWEST_SHOWN_HZ = 1000.0


def _stamp(path: str | os.PathLike) -> tuple[str, float, int]:
    st_ = os.stat(path)
    return str(path), st_.st_mtime, st_.st_size


@st.cache_data(max_entries=32, show_spinner=False)
def _cached_envelope(stamp: tuple[str, float, int]) -> Envelope:
    return envelope(stamp[0])


@st.cache_data(max_entries=16, show_spinner=False)
def _cached_spectrogram(stamp: tuple[str, float, int]) -> Spectrogram:
    return spectrogram(stamp[0])


def file_envelope(path) -> Envelope:
    return _cached_envelope(_stamp(path))


def file_spectrogram(path) -> Spectrogram:
    return _cached_spectrogram(_stamp(path))


def _band(env: Envelope, name: str, colour: str) -> go.Scatter:
    """The min/max envelope as one filled polygon: 2 x points vertices."""
    x = np.concatenate([env.times, env.times[::-1]])
    y = np.concatenate([env.highs, env.lows[::-1]])
    return go.Scatter(x=x, y=y, name=name, fill="toself", fillcolor=colour, mode="lines",
                      line=dict(width=0.5, color=colour), hoverinfo="skip")


def _freq_label(f: int) -> str:
    return f"{f // 1000}k" if f >= 1000 else str(f)


def waveform_figure(before: Envelope, after: Envelope) -> go.Figure:
    fig = go.Figure([_band(before, "Original", BEFORE_COLOUR), _band(after, "Restored", AFTER_COLOUR)])
    fig.update_layout(height=280, margin=dict(l=70, r=20, t=40, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, xanchor="left"))
    fig.update_xaxes(title_text="time (s)", automargin=True)
    fig.update_yaxes(range=[-1.05, 1.05], title_text="amplitude", automargin=True)
    return fig


def spectrogram_figure(before: Spectrogram, after: Spectrogram) -> go.Figure:
    """Original above restored on one colour scale; axes and labels kept inside the figure."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("Original", "Restored"))
    top = max(float(before.db.max(initial=-120)), float(after.db.max(initial=-120)))
    nyquist = max(float(before.freqs.max(initial=1)), float(after.freqs.max(initial=1)))
    ticks = [f for f in FREQ_TICKS if f <= nyquist]
    for row, spec in ((1, before), (2, after)):
        fig.add_trace(go.Heatmap(x=spec.times, y=spec.freqs, z=spec.db, zmin=top - 90, zmax=top,
                                 colorscale="Magma", showscale=row == 1,
                                 colorbar=dict(title=dict(text="dB", side="top"), len=1.0, y=0.5, yanchor="middle",
                                               thickness=14, x=1.01, xpad=6),
                                 hovertemplate="%{x:.1f} s · %{y:.0f} Hz · %{z:.0f} dB<extra></extra>"),
                      row=row, col=1)
        fig.update_yaxes(type="log", title_text="frequency (Hz)", tickvals=ticks,
                         ticktext=[_freq_label(f) for f in ticks], automargin=True, row=row, col=1)
    fig.update_xaxes(showticklabels=True, automargin=True, row=1, col=1)
    fig.update_xaxes(title_text="time (s)", automargin=True, row=2, col=1)
    fig.update_layout(height=560, margin=dict(l=80, r=30, t=40, b=60), font=dict(size=12),
                      paper_bgcolor="white", plot_bgcolor="white")
    return fig


def added_band_figure(before: Spectrogram, after: Spectrogram, cutoff_hz: float) -> go.Figure:
    """The spectrograms zoomed on the band the extend stage regenerated, the cutoff marked."""
    fig = spectrogram_figure(before, after)
    nyquist = max(float(before.freqs.max(initial=1)), float(after.freqs.max(initial=1)))
    low = max(LOWEST_SHOWN_HZ, cutoff_hz / 2)
    ticks = [f for f in ADDED_BAND_TICKS if low <= f <= nyquist]
    fig.update_yaxes(range=[np.log10(low), np.log10(nyquist)], tickvals=ticks, ticktext=[_freq_label(f) for f in ticks])
    for row in (1, 2):
        fig.add_hline(y=cutoff_hz, line=dict(color="white", dash="dash", width=1), row=row, col=1)
    fig.update_layout(height=460)
    return fig


def stems_figure(envelopes: dict[str, Envelope]) -> go.Figure:
    fig = make_subplots(rows=len(envelopes), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=list(envelopes))
    for row, (name, env) in enumerate(envelopes.items(), start=1):
        fig.add_trace(_band(env, name, AFTER_COLOUR), row=row, col=1)
        fig.update_yaxes(range=[-1.05, 1.05], showticklabels=False, row=row, col=1)
    fig.update_xaxes(title_text="time (s)", automargin=True, row=len(envelopes), col=1)
    fig.update_layout(height=120 * len(envelopes) + 80, margin=dict(l=30, r=20, t=40, b=50), showlegend=False)
    return fig
