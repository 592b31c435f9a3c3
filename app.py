"""Resonate's app: `make run` (or `streamlit run app.py`) serves it on http://127.0.0.1:8501.

Only this file, ``app_pages/`` and ``resonate/ui/`` import Streamlit; the engine stays UI-free. The
pages' folder is not named ``pages/``: Streamlit would take that for an old-style multipage app
and run a page on its own when a deep link is the first request; under another name every page
runs through the navigation below.
"""

from __future__ import annotations

import streamlit as st

from resonate.ui.session import keep_widget_state, load_prefs, prefs_problem, session_dir

st.set_page_config(page_title="Resonate", page_icon=":material/graphic_eq:", layout="wide")
keep_widget_state()
session_dir()           # marks this session's folder as in use, on every run
load_prefs()
if prefs_problem():
    # On every page: a settings file that cannot be used must not pass unnoticed (or break a page).
    st.warning(prefs_problem(), icon=":material/warning:")

pages = [
    st.Page("app_pages/restore.py", title="Restore", icon=":material/graphic_eq:", default=True),
    st.Page("app_pages/batch.py", title="Batch", icon=":material/library_music:"),
    st.Page("app_pages/settings.py", title="Settings", icon=":material/settings:"),
    st.Page("app_pages/about.py", title="About", icon=":material/info:"),
]
st.navigation(pages).run()
