"""Running one restore job in the script thread, with a progress bar per stage and an ETA.

The pipeline reports (stage, fraction) as blocks stream through; first-pass stages advance
together (they are one chain of generators) and loudness follows in a second pass over the
spooled audio. Elapsed time and the estimate of what is left are shown above the bars.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from resonate.errors import ResonateError
from resonate.pipeline import ChainSettings, OutputOptions, process_file
from resonate.stages import STAGE_ORDER, load_registry
from resonate.ui.session import Prefs, optional_path

REFRESH_S = 0.25        # at most four widget updates a second: the browser need not see every block


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def notice(warning: str) -> str:
    """Engine warnings as notices: a skipped stage says so first, then the engine's reason."""
    stage, sep, reason = warning.partition(" skipped: ")
    if sep and " " not in stage:
        return f"**{stage.capitalize()} was skipped; the rest of the chain ran.** {reason}"
    return warning


class StageProgress:
    """The bars inside an ``st.status`` box, fed by the pipeline's progress callback."""

    def __init__(self, stages: list[str], skipped: set[str]):
        self.started = time.perf_counter()
        self.timing = st.empty()
        self.fractions = {s: 0.0 for s in stages if s not in skipped}
        self.bars = {}
        for s in stages:
            if s in skipped:
                st.caption(f"{s}: bypassed")
            else:
                self.bars[s] = st.progress(0.0, text=f"{s}: waiting")
        self._last = 0.0

    def eta(self) -> float | None:
        done = sum(self.fractions.values()) / max(1, len(self.fractions))
        elapsed = time.perf_counter() - self.started
        return elapsed * (1 - done) / done if done > 0.02 else None

    def update(self, stage: str, fraction: float) -> None:
        if stage not in self.bars:
            return
        self.fractions[stage] = fraction
        now = time.perf_counter()
        if fraction < 1.0 and now - self._last < REFRESH_S:
            return
        self._last = now
        self.bars[stage].progress(min(1.0, fraction), text=f"{stage}: {fraction:.0%}")
        left = self.eta()
        self.timing.markdown(f"Elapsed **{format_seconds(now - self.started)}**"
                             + (f" · about **{format_seconds(left)}** left" if left is not None else ""))

    def finish(self, report: dict[str, Any]) -> None:
        for entry in report["stages"]:
            bar = self.bars.get(entry["name"])
            if bar is None:
                continue
            if entry["skipped"]:
                bar.progress(1.0, text=f"{entry['name']}: skipped ({entry.get('reason', '')[:120]})")
            else:
                bar.progress(1.0, text=f"{entry['name']}: {entry['seconds']:.1f} s")
        self.timing.markdown(f"Done in **{format_seconds(report['elapsed_seconds'])}**")


def run_job(src: Path, dst: Path, settings: ChainSettings, output: OutputOptions, prefs: Prefs,
            stems_dir: Path | None = None, on_warning: Callable[[str], None] | None = None,
            label: str = "Restoring") -> tuple[dict[str, Any] | None, str | None]:
    """Process one file inside ``st.status``: (report, None), or (None, the error shown to the user)."""
    stages = [s for s in STAGE_ORDER if s in load_registry()]
    with st.status(f"{label} {src.name}…", expanded=True) as status:
        progress = StageProgress(stages, set(settings.skip))

        def warn(msg: str) -> None:
            st.warning(notice(msg))
            if on_warning:
                on_warning(msg)

        try:
            report = process_file(
                src, dst, settings, output, device=prefs.device, models_dir=optional_path(prefs.models_dir),
                stems_dir=stems_dir, cache_dir=optional_path(prefs.cache_dir), progress=progress.update, warn=warn,
                work_dir=dst.parent,
            )
        except ResonateError as exc:
            status.update(label=f"Could not restore {src.name}", state="error", expanded=True)
            st.error(str(exc))
            return None, str(exc)
        progress.finish(report)
        status.update(label=f"Restored {src.name} in {report['elapsed_seconds']:.1f} s", state="complete",
                      expanded=False)
    return report, None
