"""This session's runs, kept on disk beside their results, so they survive a browser reload.

Each finished job folder holds ``run.json``: what went in, what came out, the settings it ran
with and a fingerprint of them (to tell when the controls have moved on since). A job that did
not finish (an error, Cancel, a closed tab) is deleted and never listed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from resonate.pipeline import ChainSettings, OutputOptions

RUN_FILE = "run.json"


def settings_record(settings: ChainSettings, output: OutputOptions) -> dict[str, Any]:
    return {"preset": settings.preset, "overrides": settings.overrides, "skip": list(settings.skip),
            "output": dataclasses.asdict(output)}


def fingerprint(input_path: str | os.PathLike, settings: ChainSettings, output: OutputOptions) -> str:
    record = {"input": str(input_path), **settings_record(settings, output)}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_run(job: Path, record: dict[str, Any]) -> None:
    record = dict(record, created=time.time(), job_dir=str(job))
    tmp = job / (RUN_FILE + ".part")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, job / RUN_FILE)


def read_run(job: str | os.PathLike) -> dict[str, Any] | None:
    try:
        record = json.loads((Path(job) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "output" in record else None


def runs(session: Path, kind: str) -> list[dict[str, Any]]:
    """This session's finished runs of ``kind``, newest first."""
    base = session / "jobs"
    found = [read_run(p) for p in sorted(base.glob(f"{kind}-*"), reverse=True)] if base.is_dir() else []
    return [r for r in found if r is not None]


def preset_label(preset: str) -> str:
    name = Path(preset).stem if preset.endswith(".toml") else preset
    return name.replace("_", " ").capitalize()


def describe(record: dict[str, Any]) -> str:
    """One line for a run: number, file, preset, bypassed stages, format, time of day."""
    number = Path(record["job_dir"]).name.rsplit("-", 1)[-1].lstrip("0") or "0"
    settings = record.get("settings", {})
    parts = [f"#{number}", record.get("input_name", "?"), f"{preset_label(settings.get('preset', '?'))} preset"]
    if settings.get("skip"):
        parts.append("without " + ", ".join(settings["skip"]))
    parts.append(record.get("format_label", ""))
    parts.append(time.strftime("%H:%M", time.localtime(record.get("created", 0))))
    return " · ".join(p for p in parts if p)
