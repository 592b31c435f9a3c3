"""Print the model card's credit list from ../shared/data/MANIFEST.md (work or space, licence).

Usage: python scripts/manifest_credits.py [../shared/data/MANIFEST.md]
Every table row of the manifest names a file, what it is and its licence; the credits list
them grouped by folder (music, rirs, crowd), as the licences ask (attribution for CC BY/BY-SA
and MIT, and credit anyway for CC0 and public domain).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def rows(text: str):
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set(cells[0]) <= set("-: "):
            continue
        yield dict(zip(header, cells))


def main(path: str = "../shared/data/MANIFEST.md") -> None:
    groups: dict[str, list[str]] = {"music": [], "rirs": [], "crowd": []}
    text = Path(path).read_text()
    section = "music"
    for block in re.split(r"\n(?=#+ )", text):
        m = re.match(r"#+ +(?:[^\n]*?)(music|rirs|crowd)/", block)
        if m:
            section = m.group(1)
        for row in rows(block):
            what = row.get("work") or row.get("space") or row.get("content") or ""
            licence = row.get("licence", "")
            if what:
                groups[section].append(f"- {what} — {licence}")
    for name, title in (("music", "Music"), ("rirs", "Venue responses"), ("crowd", "Crowd")):
        print(f"**{title}** (`../shared/data/{name}/`):\n")
        print("\n".join(groups[name]) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
