"""The progress lines tell the truth: every running stage moves, a skipped stage says so at once."""

from __future__ import annotations

from resonate.ui.runner import REFRESH_S, ProgressModel

STAGES = ["separate", "denoise", "restore", "master", "loudness"]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_every_running_stage_moves_not_only_the_slow_one():
    clock = Clock()
    model = ProgressModel(STAGES, bypassed={"separate"}, two_pass={"loudness"}, clock=clock)
    model.due(force=True)
    drawn: dict[str, list[str]] = {s: [] for s in STAGES}
    for block in range(1, 21):
        # The chain reports per block in order; the slow restore stage takes the time between.
        for stage in ("denoise", "restore", "master"):
            if stage == "restore":
                clock.now += 0.2
            model.update(stage, block / 20)
            for name, (_, text) in model.due().items():
                drawn[name].append(text)
    for stage in ("denoise", "restore", "master"):
        moving = [t for t in drawn[stage] if t.endswith("%") and not t.endswith(" 0%")]
        assert len(moving) >= 5, (stage, drawn[stage])
    assert drawn["loudness"] == ["Loudness: measuring the whole recording (applied in a second pass)"]
    assert model.line("separate") == (None, "Separate: bypassed")


def test_a_stage_skipped_by_the_engine_shows_as_skipped_before_any_audio_flows():
    clock = Clock()
    model = ProgressModel(STAGES, bypassed=set(), two_pass={"loudness"}, clock=clock)
    assert model.due(force=True)["separate"] == (0.0, "Separate: waiting")
    model.skip("separate", "Demucs model 'htdemucs' is not on this machine and there is no internet connection")
    value, text = model.due()["separate"]
    assert value is None and text.startswith("Separate: skipped (Demucs model 'htdemucs' is not on this machine")
    clock.now += REFRESH_S
    model.update("separate", 0.5)                          # no bar comes back for a skipped stage
    assert "separate" not in model.due()


def test_finish_shows_each_stage_done_with_its_time():
    model = ProgressModel(STAGES[1:], bypassed=set(), two_pass={"loudness"}, clock=Clock())
    model.finish({"stages": [{"name": "denoise", "skipped": False, "seconds": 1.23},
                             {"name": "restore", "skipped": True, "reason": "no weights"},
                             {"name": "master", "skipped": False, "seconds": 0.4},
                             {"name": "loudness", "skipped": False, "seconds": 2.0}]})
    lines = model.due(force=True)
    assert lines["denoise"] == (1.0, "Denoise: done in 1.2 s")
    assert lines["restore"] == (None, "Restore: skipped (no weights)")
