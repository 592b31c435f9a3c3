"""About: what each stage does, credits, the restoration model's card."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from resonate.stages import STAGE_ORDER, load_registry
from resonate.ui.entry import require_entrypoint

require_entrypoint()

ROOT = Path(__file__).resolve().parent.parent
MODEL_CARD = ROOT / "resonate" / "models" / "weights" / "MODEL_CARD.md"
DEMO_CREDITS = ROOT / "assets" / "demo" / "CREDITS.md"

STAGES = {
    "separate": "Splits the recording into stems with Demucs (drums, bass, vocals, other; six stems with "
                "htdemucs_6s), treats each stem on its own (gain, gating: the crowd mostly lands in *other*) "
                "and mixes them back. Stems are cached on disk, so changing later settings does not re-run Demucs.",
    "denoise": "Spectral gating (noisereduce): learns the noise floor from the quietest stretch, or from a "
               "region you pick, and turns down what sits below it. Gentle by default, because over-gated "
               "music sounds thin and watery.",
    "restore": "A learned model (a small U-Net on the spectrum, trained by us on simulated degradations) "
               "that brings back bandwidth and clarity a phone or a distant mic lost. Strength blends "
               "restored and original (wet/dry).",
    "master": "High-pass, low and high shelves, peaking EQ bands, a gentle compressor and a limiter "
              "(pedalboard).",
    "loudness": "Measures the whole file's integrated loudness (ITU-R BS.1770) and sets it to the target, "
                "with a true-peak limiter so the master never exceeds its ceiling.",
}

CREDITS = """
- **Demucs** (Hybrid Transformer Demucs) by Alexandre Défossez et al., Meta AI, MIT licence:
  source separation. Weights are downloaded by demucs or read from your models folder.
- **noisereduce** (Tim Sainburg, MIT), **pedalboard** (Spotify, GPL-3.0), **soxr** (LGPL),
  **lameenc** (LGPL) for MP3, **libsndfile** via soundfile, **PyTorch**, **Streamlit**, **Plotly**.
- The restoration model is trained on audio we synthesise ourselves; see its model card below.
"""


def main() -> None:
    st.title("About Resonate")
    st.markdown("Resonate turns audience and phone recordings of concerts into clean, studio-like masters, "
                "locally on your computer: nothing is uploaded anywhere.")
    st.header("The chain")
    offered = load_registry()
    for name in STAGE_ORDER:
        status = "" if name in offered else " *(not installed)*"
        st.markdown(f"**{name.capitalize()}**{status}: {STAGES.get(name, '')}")
    st.header("Credits")
    st.markdown(CREDITS)
    if DEMO_CREDITS.is_file():
        with st.expander("The demo clip"):
            st.markdown(DEMO_CREDITS.read_text())
    st.header("Restoration model card")
    if MODEL_CARD.is_file():
        st.markdown(MODEL_CARD.read_text())
    else:
        st.info("No model card installed: the restoration model's weights and card are not present.")


main()
