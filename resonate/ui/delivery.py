"""After a job, the same on every page: the report written beside the master, the stems zipped,
and a copy of the master in the default output folder (Settings), atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resonate.ui.session import Prefs, copy_atomic, optional_path, zip_files


@dataclass
class Delivery:
    report: Path | None = None
    stems: list[Path] = field(default_factory=list)
    stems_zip: Path | None = None
    saved_copy: Path | None = None
    copy_error: str | None = None       # "not copied to the default output folder …: why"

    def run_fields(self, output: Any) -> dict[str, Any]:
        """What a page keeps of this delivery in its run record: the stems, how the master was
        written (``output``: the job's OutputOptions), the copy and why it failed."""
        label = output.format.upper() + (f" {output.bit_depth}-bit" if output.format == "wav" else f" {output.mp3_bitrate} kb/s")
        return {
            "stems": [str(p) for p in self.stems], "stems_zip": str(self.stems_zip) if self.stems_zip else None,
            "format_label": label.replace("32f-bit", "32-bit float"),
            "saved_copy": str(self.saved_copy) if self.saved_copy else None,
            # Kept with the result and shown with it: a warning drawn now would vanish at the rerun.
            "copy_error": f"The master was {self.copy_error}." if self.copy_error else None,
        }


def deliver(dst: Path, report: dict[str, Any], prefs: Prefs, report_path: Path | None = None,
            stems_dir: Path | None = None) -> Delivery:
    """What follows a finished job: ``report`` as JSON at ``report_path`` (when given), the stems
    found in ``stems_dir`` zipped beside them, and ``dst`` copied to the default output folder.
    A copy that fails (a full disk, no permission) is not an error of the job: it is returned as
    ``copy_error`` for the page to show with the result."""
    done = Delivery()
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2))
        done.report = report_path
    if stems_dir is not None and stems_dir.is_dir():
        done.stems = sorted(p for p in stems_dir.iterdir() if p.is_file())
        if done.stems:
            done.stems_zip = zip_files(done.stems, stems_dir.parent / "stems.zip")
    out_dir = optional_path(prefs.output_dir)
    if out_dir is not None:
        try:
            done.saved_copy = copy_atomic(dst, out_dir)
        except OSError as exc:
            done.copy_error = f"not copied to the default output folder {out_dir}: {exc.strerror or exc}"
    return done
