"""Community models in the app: how each is described, and the one button that downloads one.

The Settings page lists them all; the Restore and Batch pages' model picker offers them beside the
Demucs models and, for the one picked, shows its licence and the same Download button. Nothing is
downloaded except by that button. An entry without a published SHA-256 needs a tick first, as the
command line needs ``--trust-unpinned``; the hash of what was downloaded is then recorded and
every later load is checked against it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from resonate.errors import ResonateError
from resonate.separation import community
from resonate.ui.models import clear_model_cache

OUTCOME = "community.outcome"       # (kind, message) of the last download, shown on the next run


def summary(model: community.CommunityModel, models_dir: Path | None) -> str:
    """One line: purpose, size, on this machine or not."""
    here = "on this machine" if community.on_this_machine(model, models_dir) else "not on this machine"
    return f"{model.name} ({model.purpose} removal, {model.size_text()}, {here})"


def fetch(name: str, models_dir: Path | None) -> None:
    try:
        folder = community.fetch(name, models_dir, trust_unpinned=True)
    except ResonateError as exc:
        st.session_state[OUTCOME] = ("error", f"{name} not downloaded: {exc}")
        return
    clear_model_cache()
    st.session_state[OUTCOME] = ("success", f"{name} downloaded and verified into {folder}.")


def download_button(model: community.CommunityModel, models_dir: Path | None, scope: str,
                    disabled: bool = False) -> None:
    """The Download button for ``model`` (only when it is not on this machine)."""
    if community.on_this_machine(model, models_dir):
        return
    key = f"{scope}.community.{model.name}"
    trusted = model.pinned or st.checkbox("Download it without a published SHA-256 (its hash is recorded "
                                          "and checked from then on)", key=f"{key}.trust", disabled=disabled)
    st.button(f"Download {model.name} ({model.size_text()})", key=f"{key}.fetch", disabled=disabled or not trusted,
              on_click=fetch, args=(model.name, models_dir))


def show_outcome() -> None:
    outcome = st.session_state.pop(OUTCOME, None)
    if outcome:
        (st.success if outcome[0] == "success" else st.error)(outcome[1])
