"""The README stays true: its command lines name only flags the CLI has, its make targets exist,
its tables list the real presets and stages, its links point at files, and it stays short."""

from __future__ import annotations

import re
from pathlib import Path

from resonate import cli
from resonate.presets import preset_names
from resonate.stages import STAGE_ORDER

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", text, re.S | re.M)


def commands(text: str) -> dict[str, set[str]]:
    """Each ``python -m resonate CMD`` line of the code blocks (with its continuation lines) -> its flags."""
    found: dict[str, set[str]] = {}
    for block in code_blocks(text):
        for entry in re.split(r"\n(?=\S)", block):
            m = re.match(r"(?:\.venv/bin/)?python -m resonate (\w+)", entry)
            if m:
                found.setdefault(m.group(1), set()).update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", entry))
    return found


def parser_flags() -> dict[str, set[str]]:
    subparsers = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in subparsers.choices.items()}


def table_column(heading: str) -> list[str]:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [re.match(r"\| `(\w+)`", row).group(1) for row in section.splitlines() if re.match(r"\| `\w+`", row)]


def test_the_readme_is_short_with_quick_start_up_front():
    lines = README.splitlines()
    assert len(lines) <= 200
    assert "## Quick start" in lines[:40]


def test_every_flag_in_the_readme_command_lines_exists():
    documented, real = commands(README), parser_flags()
    assert {"restore", "fuse"} <= set(documented)
    for command, flags in documented.items():
        assert command in real, command
        assert flags and flags <= real[command], (command, sorted(flags - real[command]))


def test_every_restore_flag_is_in_the_synopsis():
    real = parser_flags()["restore"] - {"-h", "--help", "-o", "--output"}
    assert real <= commands(README)["restore"], sorted(real - commands(README)["restore"])


def test_the_make_targets_named_exist():
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = {m for block in code_blocks(README) for m in re.findall(r"^make ([a-z-]+)", block, re.M)}
    assert named and named <= targets


def test_the_preset_and_stage_tables_list_what_the_engine_has():
    assert sorted(table_column("Presets")) == sorted(preset_names())
    assert table_column("The stages") == list(STAGE_ORDER)


def test_local_links_point_at_files():
    links = [t for t in re.findall(r"\]\(([^)#]+)\)", README) if "://" not in t]
    assert links
    assert [t for t in links if not (ROOT / t).exists()] == []


def test_the_example_preset_loads(tmp_path):
    from resonate.pipeline import ChainSettings, stage_configs

    example = next(b for b in code_blocks(README) if b.startswith("description ="))
    path = tmp_path / "example.toml"
    path.write_text(example)
    settings = ChainSettings(str(path))
    assert settings.skip == ("separate",) and stage_configs(settings)["loudness"].target_lufs == -12.0
