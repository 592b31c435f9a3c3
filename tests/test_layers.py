"""Code at its level: the building blocks (audio, dsp, separation) never import the stages or the
app, and the engine never imports the app or Streamlit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "resonate"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("layer,forbidden", [
    ("audio", ("resonate.stages", "resonate.separation", "resonate.pipeline", "resonate.ui", "streamlit")),
    ("dsp", ("resonate.stages", "resonate.separation", "resonate.pipeline", "resonate.ui", "streamlit")),
    ("separation", ("resonate.stages", "resonate.pipeline", "resonate.ui", "streamlit")),
    ("stages", ("resonate.pipeline", "resonate.ui", "streamlit")),
])
def test_a_layer_imports_nothing_above_it(layer, forbidden):
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files
    bad = {f"{path.relative_to(PACKAGE.parent)}: {name}" for path in files for name in imported_modules(path)
           if name.startswith(forbidden)}
    assert not bad



def test_the_app_uses_only_streamlit_public_api():
    """No private Streamlit modules (``streamlit.runtime`` and the like change between releases and
    Streamlit is not pinned), and no ``pages/`` folder beside app.py, which would make Streamlit
    run a deep-linked page on its own instead of through app.py's navigation."""
    root = PACKAGE.parent
    files = [root / "app.py", *sorted((root / "app_pages").glob("*.py")), *sorted((PACKAGE / "ui").glob("*.py"))]
    private = {f"{path.relative_to(root)}: {name}" for path in files for name in imported_modules(path)
               if name.startswith("streamlit.") and not name.startswith(("streamlit.testing", "streamlit.components.v1"))}
    assert not private
    assert not (root / "pages").exists()
