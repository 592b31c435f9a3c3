"""Pages must run under app.py's ``st.navigation``, also when a deep link is the first request.

Streamlit treats a ``pages/`` folder as an old-style multipage app until the entry point has
called ``st.navigation`` once in the server process. A first request for ``/batch`` (a restored
browser tab, a bookmark) would therefore run ``pages/batch.py`` on its own: no page config, no
model cache, the folder's file names as navigation. Each page calls :func:`require_entrypoint`
first; in that situation it switches Streamlit to the entry point's navigation and reruns, which
then runs app.py and, through it, the requested page.
"""

from __future__ import annotations

import streamlit as st


def require_entrypoint() -> None:
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
