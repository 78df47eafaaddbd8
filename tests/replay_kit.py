"""Production replay tests: a recorded run (`keel record`, tests/golden/recordings) replayed through
today's scheduler core and the adapters' and executor's parsers, asserting the recorded decisions and
outputs (docs/replay.md). A real incident becomes a regression test by recording it here."""

from __future__ import annotations

from pathlib import Path

from keel.recording import Recording
from keel.replay import StepReplay, replay_model, replay_tool
from keel.tooldefs import ToolDefinition
from keel_ops.replay_core import CoreReplay, replay_scheduler

RECORDINGS = Path(__file__).parent / "golden" / "recordings"


def load(name: str) -> Recording:
    return Recording.load(str(RECORDINGS / f"{name}.json"))


def replay_step(
    rec: Recording,
    step: str,
    attempt: int | None = None,
    call: str | None = None,
    definition: ToolDefinition | None = None,
) -> StepReplay:
    """The step's attempt re-executed from the recording: a tool step parses the recorded provider
    answer with `definition` (default: the recorded one), a model step the recorded model answer."""
    spec = rec.workflow.step(step) if rec.workflow is not None else None
    if (spec is not None and spec.kind == "tool") or (call is not None and ".call-" in call):
        return replay_tool(rec, step, definition, attempt, call)
    return replay_model(rec, step, attempt, call)


def assert_decides_the_same(rec: Recording) -> CoreReplay:
    """Today's scheduler core, fed the recorded facts at their recorded times, decides what was decided."""
    core = replay_scheduler(rec)
    assert core.recorded, "the recording holds no decision of the scheduler to compare"
    assert core.same, "\n".join(core.diff)
    return core


def assert_replays(
    rec: Recording, step: str, attempt: int | None = None, call: str | None = None
) -> StepReplay:
    """The attempt's recorded outcome (output, or failure) is what today's parsing gives."""
    found = replay_step(rec, step, attempt, call)
    assert found.same, "\n".join(found.diff)
    return found
