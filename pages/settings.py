"""Settings: compute device, offline models folder, stem cache, default output folder."""

from __future__ import annotations

import streamlit as st

from resonate.device import DEVICE_CHOICES, available_devices
from resonate.ui.entry import require_entrypoint
from resonate.ui.models import clear_model_cache
from resonate.ui.session import Prefs, human_bytes, load_prefs, optional_path, prefs_path, save_prefs

require_entrypoint()


def cache_section(cache_dir: str) -> None:
    try:
        from resonate.separation import cache_size_bytes, clear_cache, default_cache_dir
    except ImportError:
        st.caption("The stem cache comes with the separate stage, which is not installed.")
        return
    folder = optional_path(cache_dir) or default_cache_dir()
    st.markdown(f"Stem cache: `{folder}` · **{human_bytes(cache_size_bytes(folder))}**")
    if st.button("Clear the stem cache", key="settings.clear_cache"):
        freed = clear_cache(folder)
        st.success(f"Freed {human_bytes(freed)}.")


def models_note(models_dir: str) -> None:
    folder = optional_path(models_dir)
    if folder is None:
        st.caption("No models folder: Demucs downloads its weights on first use (needs internet). "
                   "Offline, put the weights in a folder and enter it here.")
    elif not folder.is_dir():
        st.warning(f"{folder} is not a folder.")
    else:
        found = sorted(p.stem for p in folder.glob("*.yaml"))
        st.caption(f"Models found there: {', '.join(found)}" if found else
                   "No Demucs model (.yaml) found in that folder.")


def main() -> None:
    st.title("Settings")
    prefs = load_prefs()
    here = available_devices()
    with st.form("settings.form"):
        device = st.radio("Compute device", DEVICE_CHOICES, index=list(DEVICE_CHOICES).index(prefs.device)
                          if prefs.device in DEVICE_CHOICES else 0, horizontal=True,
                          format_func=lambda d: d if d == "auto" or d in here else f"{d} (not available)",
                          help="auto picks CUDA, then Apple's MPS, then the CPU")
        st.caption(f"Available on this machine: {', '.join(here)}")
        models_dir = st.text_input("Models folder (offline Demucs weights)", prefs.models_dir,
                                   placeholder="~/resonate-models")
        cache_dir = st.text_input("Stem cache folder", prefs.cache_dir, placeholder="default: ~/.cache/resonate/stems")
        output_dir = st.text_input("Default output folder", prefs.output_dir,
                                   placeholder="empty: masters stay in the session folder, download them from the page",
                                   help="Each restored master is also copied here")
        if st.form_submit_button("Save settings", type="primary"):
            if device not in ("auto", *here):
                st.error(f"{device} is not available here; choose one of auto, {', '.join(here)}.")
            else:
                path = save_prefs(Prefs(device, models_dir.strip(), cache_dir.strip(), output_dir.strip()))
                clear_model_cache()
                prefs = load_prefs()
                st.success(f"Saved to {path}")
    models_note(prefs.models_dir)
    cache_section(prefs.cache_dir)
    if st.button("Reload models", key="settings.reload_models",
                 help="Forget loaded models (and failed loads), e.g. after copying weights into the folder"):
        clear_model_cache()
        st.success("Models will be loaded again on the next run.")
    st.caption(f"Preferences file: {prefs_path()}")


main()
