"""Settings: compute device, offline models folder, community models, stem cache, default output folder.

The buttons act in their callbacks and leave their outcome in session state, so what they say
is drawn on the next run, whatever reruns happen in between.
"""

from __future__ import annotations

import streamlit as st

from resonate.device import DEVICE_CHOICES, available_devices
from resonate.ui.models import clear_model_cache
from resonate.ui.session import (
    Prefs,
    human_bytes,
    load_prefs,
    optional_path,
    prefs_path,
    prefs_problems,
    save_prefs,
)

OUTCOME = "settings.outcome"        # (kind, message) of the last button pressed


def _say(kind: str, message: str) -> None:
    st.session_state[OUTCOME] = (kind, message)


def save() -> None:
    """Validate what the form holds; save only what can be used."""
    here = available_devices()
    state = st.session_state
    chosen = Prefs(state["settings.device"], state["settings.models_dir"].strip(),
                   state["settings.cache_dir"].strip(), state["settings.output_dir"].strip())
    problems = prefs_problems(chosen)
    if chosen.device not in ("auto", *here):
        problems.insert(0, f"Compute device: {chosen.device} is not available here; choose one of auto, "
                           f"{', '.join(here)}.")
    if problems:
        _say("error", "Not saved. " + " ".join(problems))
        return
    try:
        path = save_prefs(chosen)
    except OSError as exc:
        _say("error", f"Not saved: cannot write {prefs_path()} ({exc.strerror or exc}).")
        return
    clear_model_cache()
    _say("success", f"Saved to {path}")


def clear_stem_cache(folder) -> None:
    from resonate.separation import clear_cache

    _say("success", f"Stem cache cleared: freed {human_bytes(clear_cache(folder))}.")


def reload_models() -> None:
    clear_model_cache()
    _say("success", "Models will be loaded again on the next run.")


def cache_section(cache_dir: str) -> None:
    try:
        from resonate.separation import cache_size_bytes, default_cache_dir
    except ImportError:
        st.caption("The stem cache comes with the separate stage, which is not installed.")
        return
    folder = optional_path(cache_dir) or default_cache_dir()
    st.markdown(f"Stem cache: `{folder}` · **{human_bytes(cache_size_bytes(folder))}**")
    st.button("Clear the stem cache", key="settings.clear_cache", on_click=clear_stem_cache, args=(folder,),
              help="Deletes only the stems Resonate stored there")


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


def community_section(models_dir: str) -> None:
    """Each catalogued community model: what it does, size, licence, on this machine or not, and a
    Download button (the button is the user's explicit choice; entries without a published SHA-256
    say so, and the hash of the file downloaded is recorded and checked on every later load)."""
    try:
        from resonate.errors import ResonateError
        from resonate.separation import community
        models = community.catalogue()
    except (ImportError, ResonateError) as exc:
        st.caption(f"Community models are not available: {exc}")
        return
    st.subheader("Community models")
    st.caption("Crowd-removal and de-reverb models trained by the community around Ultimate Vocal Remover "
               "and Music-Source-Separation-Training. Optional: choose one as the separation model on the "
               "Restore page. Downloaded only when you press its button; their licences are their authors'.")
    from resonate.ui import community as community_ui

    community_ui.show_outcome()
    folder = optional_path(models_dir)
    for model in models.values():
        here = community.on_this_machine(model, folder)
        state = "on this machine" if here else "not on this machine"
        check = ("SHA-256 pinned" if model.pinned else
                 "no published SHA-256: the hash of your download is recorded and checked from then on")
        st.markdown(f"**{model.name}** · {state} · {community.PURPOSES[model.purpose]} · {model.size_text()} · "
                    f"licence: {model.licence}")
        st.caption(f"{model.title}, by {model.authors}. {check}. Folder: `{community.model_folder(model, folder)}`")
        community_ui.download_button(model, folder, "settings")


def main() -> None:
    st.title("Settings")
    prefs = load_prefs()
    here = available_devices()
    with st.form("settings.form"):
        st.radio("Compute device", DEVICE_CHOICES, index=list(DEVICE_CHOICES).index(prefs.device)
                 if prefs.device in DEVICE_CHOICES else 0, horizontal=True, key="settings.device",
                 format_func=lambda d: d if d == "auto" or d in here else f"{d} (not available)",
                 help="auto picks CUDA, then Apple's MPS, then the CPU")
        st.caption(f"Available on this machine: {', '.join(here)}")
        st.text_input("Models folder (offline Demucs weights)", prefs.models_dir,
                      placeholder="~/resonate-models", key="settings.models_dir")
        st.text_input("Stem cache folder", prefs.cache_dir, placeholder="default: ~/.cache/resonate/stems",
                      key="settings.cache_dir")
        st.text_input("Default output folder", prefs.output_dir,
                      placeholder="empty: masters stay in the session folder, download them from the page",
                      help="Each restored master is also copied here", key="settings.output_dir")
        st.form_submit_button("Save settings", type="primary", on_click=save)
    outcome = st.session_state.pop(OUTCOME, None)
    if outcome:
        (st.success if outcome[0] == "success" else st.error)(outcome[1])
    models_note(prefs.models_dir)
    community_section(prefs.models_dir)
    cache_section(prefs.cache_dir)
    st.button("Reload models", key="settings.reload_models", on_click=reload_models,
              help="Forget loaded models (and failed loads), e.g. after copying weights into the folder")
    st.caption(f"Preferences file: {prefs_path()}")


main()
