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
from resonate.pipeline import ChainSettings, JobEnvironment, OutputOptions, process_file
from resonate.stages import STAGE_ORDER, TwoPassStage, load_registry
from resonate.ui.models import model_loader
from resonate.ui.session import Prefs, optional_path

REFRESH_S = 0.25        # at most four updates a second per line: the browser need not see every block


CANCEL_WAIT_S = 30.0     # how long a page waits for a cancelled job to remove its folder


def cancel_job(page: str, what: str) -> None:
    """The Cancel button's callback on a page whose state keys start with ``page``.

    The click itself stops the job: Streamlit stops the running script at its next UI update
    (and starts the next run at once, beside it); the job removes everything it had written.
    """
    st.session_state[f"{page}.running"] = False
    st.session_state[f"{page}.stopping"] = st.session_state.get(f"{page}.job")
    st.session_state[f"{page}.notice"] = f"Cancelled. Nothing of that {what} was kept."


def wait_for_cancelled_job(page: str, what: str) -> None:
    """The stopped job cleans up in its own thread: say "nothing was kept" once that is true."""
    job = st.session_state.pop(f"{page}.stopping", None)
    if not job:
        return
    deadline = time.monotonic() + CANCEL_WAIT_S
    with st.spinner(f"Stopping the {what}…"):
        while Path(job).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    if Path(job).exists():
        st.session_state[f"{page}.notice"] = ("Cancelled. The step that was running is still finishing; its "
                                              "files are removed as soon as it stops.")


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def notice(warning: str) -> str:
    """Engine warnings as notices: a skipped stage says so first, then the engine's reason."""
    stage, sep, reason = warning.partition(" skipped: ")
    if sep and " " not in stage:
        return f"**{stage.capitalize()} was skipped; the rest of the chain ran.** {reason}"
    return warning


class ProgressModel:
    """What each stage's line says, kept apart from drawing it (testable without a browser).

    A stage is waiting, running (a fraction), done (its seconds), or skipped (bypassed by the
    user, or unavailable here: the pipeline's warning says so as soon as it opens the stage, before
    any audio flows). Two-pass stages (loudness) measure during the first pass and apply in the
    second. Updates are throttled per stage, so every running stage's line moves, not only the
    one that happened to report after a pause.
    """

    def __init__(self, stages: list[str], bypassed: set[str], two_pass: set[str] = frozenset(),
                 clock: Callable[[], float] = time.perf_counter):
        self.stages, self.two_pass, self.clock = list(stages), set(two_pass), clock
        self.fractions: dict[str, float] = {s: 0.0 for s in stages}
        self.skipped: dict[str, str] = {s: "bypassed" for s in stages if s in bypassed}
        self.seconds: dict[str, float] = {}
        self.started = clock()
        self._drawn: dict[str, tuple[float, str]] = {}
        self._last_drawn: dict[str, float] = {}

    def skip(self, stage: str, reason: str) -> None:
        if stage in self.fractions:
            self.skipped[stage] = reason

    def update(self, stage: str, fraction: float) -> None:
        if stage in self.fractions and stage not in self.skipped:
            self.fractions[stage] = min(1.0, max(self.fractions[stage], fraction))

    def finish(self, report: dict[str, Any]) -> None:
        for entry in report["stages"]:
            name = entry["name"]
            if name not in self.fractions:
                continue
            if entry["skipped"]:
                self.skipped[name] = entry.get("reason") or "skipped"
            else:
                self.fractions[name] = 1.0
                self.seconds[name] = entry["seconds"]

    def _first_pass_started(self) -> bool:
        return any(f > 0 for s, f in self.fractions.items() if s not in self.two_pass and s not in self.skipped)

    def line(self, stage: str) -> tuple[float | None, str]:
        """(bar value, or None for no bar; text) of one stage."""
        name = stage.capitalize()
        if stage in self.skipped:
            reason = self.skipped[stage]
            return None, f"{name}: bypassed" if reason == "bypassed" else f"{name}: skipped ({short(reason)})"
        if stage in self.seconds:
            return 1.0, f"{name}: done in {self.seconds[stage]:.1f} s"
        fraction = self.fractions[stage]
        if fraction > 0:
            return fraction, f"{name}: {fraction:.0%}"
        if stage in self.two_pass and self._first_pass_started():
            return 0.0, f"{name}: measuring the whole recording (applied in a second pass)"
        return 0.0, f"{name}: waiting"

    def due(self, force: bool = False) -> dict[str, tuple[float | None, str]]:
        """The lines to redraw now: changed, and not redrawn in the last ``REFRESH_S`` (unless forced)."""
        now = self.clock()
        out = {}
        for stage in self.stages:
            line = self.line(stage)
            if line == self._drawn.get(stage):
                continue
            finished = line[0] is None or line[0] >= 1.0
            if force or finished or now - self._last_drawn.get(stage, -1e9) >= REFRESH_S:
                out[stage] = line
                self._drawn[stage] = line
                self._last_drawn[stage] = now
        return out

    def eta(self) -> float | None:
        running = [f for s, f in self.fractions.items() if s not in self.skipped]
        done = sum(running) / max(1, len(running))
        elapsed = self.clock() - self.started
        return elapsed * (1 - done) / done if done > 0.02 else None


def short(text: str, limit: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class StageProgress:
    """One line per stage inside an ``st.status`` box, fed by the pipeline's progress callback."""

    def __init__(self, stages: list[str], bypassed: set[str], two_pass: set[str]):
        self.model = ProgressModel(stages, bypassed, two_pass)
        self.timing = st.empty()
        self.slots = {s: st.empty() for s in stages}
        self._timing_drawn = 0.0
        self.draw(force=True)

    def draw(self, force: bool = False) -> None:
        for stage, (value, text) in self.model.due(force).items():
            if value is None:
                self.slots[stage].caption(f":material/redo: {text}")
            else:
                self.slots[stage].progress(value, text=text)
        now = self.model.clock()
        if force or now - self._timing_drawn >= REFRESH_S:
            self._timing_drawn = now
            left = self.model.eta()
            self.timing.markdown(f"Elapsed **{format_seconds(now - self.model.started)}**"
                                 + (f" · about **{format_seconds(left)}** left" if left is not None else ""))

    def update(self, stage: str, fraction: float) -> None:
        self.model.update(stage, fraction)
        self.draw()

    def skipped(self, stage: str, reason: str) -> None:
        self.model.skip(stage, reason)
        self.draw()

    def finish(self, report: dict[str, Any]) -> None:
        self.model.finish(report)
        self.draw(force=True)
        self.timing.markdown(f"Done in **{format_seconds(report['elapsed_seconds'])}**")


def run_job(src: Path, dst: Path, settings: ChainSettings, output: OutputOptions, prefs: Prefs,
            stems_dir: Path | None = None, on_warning: Callable[[str], None] | None = None,
            label: str = "Restoring") -> tuple[dict[str, Any] | None, str | None]:
    """Process one file inside ``st.status``: (report, None), or (None, the error shown to the user)."""
    registry = load_registry()
    stages = [s for s in STAGE_ORDER if s in registry]
    two_pass = {s for s in stages if issubclass(registry[s], TwoPassStage)}
    with st.status(f"{label} {src.name}…", expanded=True) as status:
        progress = StageProgress(stages, set(settings.skip), two_pass)

        def warn(msg: str) -> None:
            stage, sep, reason = msg.partition(" skipped: ")
            if sep and stage in stages:
                progress.skipped(stage, reason)
            st.warning(notice(msg))
            if on_warning:
                on_warning(msg)

        try:
            env = JobEnvironment(device=prefs.device, models_dir=optional_path(prefs.models_dir),
                                 cache_dir=optional_path(prefs.cache_dir), work_dir=dst.parent, models=model_loader())
            report = process_file(src, dst, settings, output, stems_dir=stems_dir, progress=progress.update,
                                  warn=warn, env=env)
        except ResonateError as exc:
            status.update(label=f"Could not restore {src.name}", state="error", expanded=True)
            st.error(str(exc))
            return None, str(exc)
        progress.finish(report)
        status.update(label=f"Restored {src.name} in {report['elapsed_seconds']:.1f} s", state="complete",
                      expanded=False)
    return report, None
