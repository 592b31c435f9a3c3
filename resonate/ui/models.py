"""Models load once per server process: one :class:`~resonate.modelcache.ModelLoader` for the app.

Every job the app runs gets it through its job environment (``JobEnvironment.models``), so a
model loaded for one file or one session is there for the next. Cached models are shared by
every session and never changed: the stages only run them in eval mode on the device they were
loaded for. A model that cannot be loaded (no weights offline) is kept as the failure too, so
that each run does not wait for the download retries again; Settings has a button that clears it.
"""

from __future__ import annotations

import streamlit as st

from resonate.modelcache import ModelLoader


@st.cache_resource(show_spinner=False)
def model_loader() -> ModelLoader:
    return ModelLoader()


def clear_model_cache() -> None:
    model_loader().clear()
