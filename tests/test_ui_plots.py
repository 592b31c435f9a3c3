"""The figures keep their axes readable: room for tick labels and titles, nothing drawn over another."""

from __future__ import annotations

from conftest import tone_mix

from resonate.ui.analysis import envelope, spectrogram
from resonate.ui.plots import spectrogram_figure, waveform_figure


def test_spectrogram_axes_have_room_and_ticks_within_the_band(write_wav):
    path = write_wav(tone_mix(3.0, sr=16000), sr=16000)
    spec = spectrogram(path)
    fig = spectrogram_figure(spec, spec)
    layout = fig.layout
    assert layout.margin.l >= 60 and layout.margin.b >= 40          # tick labels and axis titles fit
    assert not layout.title.text                                    # no figure title over "Original"
    assert [a.text for a in layout.annotations] == ["Original", "Restored"]
    for axis in (layout.yaxis, layout.yaxis2):
        assert axis.automargin and axis.title.text == "frequency (Hz)"
        assert max(axis.tickvals) <= 8000                           # no tick above Nyquist (8 kHz here)
    assert layout.xaxis.showticklabels and layout.xaxis2.title.text == "time (s)"
    bar = [t for t in fig.data if t.showscale][0].colorbar
    assert bar.title.text == "dB" and bar.x > 1.0                   # the colour bar sits right of the plots


def test_waveform_legend_does_not_cover_the_plot(write_wav):
    env = envelope(write_wav(tone_mix(2.0)))
    layout = waveform_figure(env, env).layout
    assert layout.legend.y >= 1.0 and layout.legend.yanchor == "bottom"
    assert layout.margin.l >= 60 and layout.xaxis.title.text == "time (s)"
