"""About: what Resonate does to a recording, what it is built on, and what the restoration model
can and cannot do. Written for people who use the app; development figures live in the README."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from resonate.stages import STAGE_INFO, STAGE_ORDER, load_registry

ROOT = Path(__file__).resolve().parent.parent
MODEL_CARD = ROOT / "resonate" / "models" / "weights" / "MODEL_CARD.md"
DEMO_CREDITS = ROOT / "assets" / "demo" / "CREDITS.md"

CREDITS = ROOT / "assets" / "demo" / "CREDITS.md"

STAGES = {
    "separate": ("Separate", "Splits the recording into stems (drums, bass, vocals and the rest; six with the "
                 "htdemucs_6s model, adding guitar and piano), treats each on its own and mixes them back: the "
                 "crowd mostly lands in the *other* stem, which can be turned down or gated. The stems can be "
                 "downloaded. They are kept on disk, so changing later settings does not separate again."),
    "denoise": ("Denoise", "Learns the steady noise floor (hiss, hum, room rumble) from the quietest stretch, or "
                "from a stretch you pick, and turns down what stays below it. Gentle by default: music gated "
                "too hard sounds thin and watery."),
    "restore": ("Restore", "Resonate's own learned model removes what the room and the crowd added: hall "
                "echo, audience chatter and applause, the colouring of the PA and of a phone's microphone. "
                "Strength blends restored and original."),
    "master": ("Master", "Tone and dynamics like a mastering desk: a high-pass against rumble, low and high "
               "shelves, up to four EQ bands, a gentle compressor and a limiter."),
    "loudness": ("Loudness", "Measures the loudness of the whole recording (as streaming services do, in LUFS) "
                 "and brings it to your target, with a true-peak limiter so the master never goes over its "
                 "ceiling. −14 LUFS suits streaming, −16 podcasts, −23 broadcast."),
}

CREDITS = """
- **Demucs** (Hybrid Transformer Demucs) by Alexandre Défossez et al., Meta AI, MIT licence: source separation.
- **noisereduce** (Tim Sainburg, MIT): spectral gating.
- **pedalboard** (Spotify, GPL-3.0): EQ, compressor and limiter.
- **soxr** (LGPL): sample-rate conversion; **libsndfile** via soundfile, **FFmpeg** via PyAV and **LAME** via
  lameenc (LGPL): reading and writing audio.
- **PyTorch**, **Streamlit** and **Plotly** run the models and this app.
"""

PRIVACY = ("Everything runs on this computer: recordings are never uploaded anywhere. Uploads and results "
           "stay in a temporary folder for this browser tab and are removed a day after the tab was last used; "
           "download what you want to keep, or set a default output folder in Settings.")


def _sources(card: str) -> str | None:
    """The card's credits for the material the model learned from, without file locations."""
    m = re.search(r"^## Sources credited.*?\n(.+)", card, re.S | re.M)
    if not m:
        return None
    text = re.sub(r"\s*\(`[^`]*`(?:, )?", " (", m.group(1))         # "(`../shared/...`, OpenAIR…" -> "(OpenAIR…"
    text = re.sub(r" \(\):", ":", text)                              # "Music (`...`):" -> "Music:"
    text = re.sub(r"`[^`]*\.(?:py|yaml|md|wav|safetensors)`", "", text)
    text = re.sub(r"\s*(?:\(validation only\)|— validation only)", "", text)     # how it was tested: not for users
    return text.strip()


def model_section() -> None:
    st.header("The restoration model")
    st.markdown(
        "The **Restore** stage is a small neural network made for Resonate. It looks at the spectrum of the "
        "recording and learns, for each moment and frequency, how much to keep, turn down or put back: "
        "above all it turns down crowd noise (chatter, applause, cheering) under the music and between "
        "songs, and it works the same however loud or quiet the recording is. It runs on your computer, on "
        "the CPU if there is no GPU, at many times real time.")
    st.markdown("**What it learned from.** About a hundred freely licensed tracks, played through simulated "
                "PAs into measured and simulated halls, churches, arenas, clubs and outdoor stages, mixed with "
                "synthetic crowds, and degraded the way phones and codecs degrade sound. No one's concert "
                "recordings were used.")
    st.markdown("**What to expect.** It learned from simulated recordings only, and real halls, crowds and "
                "phones differ: most recordings come out clearer, some barely change, and a few can sound more "
                "processed. It takes away echo and the PA's colouring only a little, it was not taught what belongs "
                "in the very top octave (above about 16 kHz), and it knows instruments better than voices. If a result sounds processed, lower the restoration "
                "strength or bypass the stage: the rest of the chain still helps. Always compare with the A/B "
                "player before you keep a master.")
    st.markdown("**The Extend stage's model** is smaller still and learned from the same music, cut the way "
                "phones and low-bit-rate MP3 and AAC files cut it: it predicts how loud the missing highs were "
                "from what remains below the cut. It brings back air and shimmer, not the exact cymbal that was "
                "lost, and it leaves recordings that still have their highs alone.")
    card = MODEL_CARD.read_text() if MODEL_CARD.is_file() else ""
    sources = _sources(card)
    if sources:
        with st.expander("Music, rooms and sounds the model learned from (credits)"):
            st.markdown(sources)


def main() -> None:
    st.title("About Resonate")
    st.markdown("Resonate turns audience and phone recordings of concerts into clean, studio-like masters.")
    st.info(PRIVACY, icon=":material/lock:")
    st.header("What happens to your recording")
    st.caption("The stages, in this order; each can be adjusted or bypassed in its panel on the Restore page.")
    offered = load_registry()
    for name in STAGE_ORDER:
        info = STAGE_INFO[name]
        status = "" if name in offered else " *(not installed here)*"
        st.markdown(f"**{info.title}**{status}: {info.summary}")
    model_section()
    st.header("Credits")
    st.markdown(CREDITS)
    if DEMO_CREDITS.is_file():
        with st.expander("The demo clip"):
            demo = DEMO_CREDITS.read_text()
            demo = re.sub(r"^# .*\n", "", demo)
            demo = re.sub(r" by `scripts/[^`]+`", "", demo)
            st.markdown(demo)


main()
