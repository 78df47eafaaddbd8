"""An agent step in the projections: its sub-steps (turns and tool calls) kept apart, one step row."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from unit.agent_stories import (
    AGENT,
    ANSWER,
    FAILED_TURN_COST,
    STEP,
    TOOL_CALL_REFUSED,
    TURN_COST,
    looping,
    support_triage,
)
from unit.test_projection_core import fold, positioned

from keel import events as ev


def test_every_sub_step_attempt_is_its_own_row():
    t = fold(positioned(support_triage("run-a").events))
    rows = t["attempts"].items()
    attempts = {k[2:]: (r["status"], r.get("failure_class")) for k, r in rows if k[1] == STEP}
    assert attempts == {
        ("turn-1", 1): ("committed", None),  # model_called is the turn's commit point
        ("turn-1.call-0", 1): ("committed", None),
        ("turn-2", 1): ("failed", "transient"),
        ("turn-2", 2): ("committed", None),
        ("turn-2.call-0", 1): ("failed", "unknown_outcome"),
        ("turn-2.call-0", 2): ("committed", None),
        ("turn-3", 1): ("committed", None),
        ("turn-3.call-0", 1): ("committed", None),
        ("turn-3.call-1", 1): ("committed", None),
        ("turn-4", 1): ("committed", None),
    }


def test_the_agent_step_is_one_row_committed_only_by_the_final_answer():
    events = support_triage("run-b").events
    final = next(i for i, e in enumerate(events) if e.event == ev.STEP_COMMITTED and e.call is None)
    before = fold(positioned(events[:final]))["steps"][("run-b", STEP)]
    # Sub-steps committed before it (a lookup, a refund, an email) leave the agent step running.
    assert before["status"] == "running"
    assert before.get("output_json") is None and before.get("idempotency_key") is None
    after = fold(positioned(events))
    steps = {k: r for k, r in after["steps"].items() if k[0] == "run-b"}
    assert list(steps) == [("run-b", STEP)]
    row = steps[("run-b", STEP)]
    assert (row["status"], row["kind"], row["agent_id"], row["turns"]) == ("committed", "agent", AGENT, 4)
    assert row["output_json"] == ANSWER
    assert (row.get("idempotency_key"), row.get("external_id")) == (None, None)
    spent = sum(map(Decimal, map(repr, TURN_COST.values()))) + Decimal(repr(FAILED_TURN_COST))
    assert row["cost_usd"] == spent == after["runs"][("run-b",)]["cost_usd"]


def test_every_billed_model_call_is_a_cost_row_with_its_agent_and_turn():
    t = fold(positioned(support_triage("run-c").events))
    costs = sorted((c["call"], c["agent_id"], c["cost_usd"]) for c in t["costs"].values())
    assert costs == sorted(
        [(f"turn-{n}", AGENT, Decimal(repr(c))) for n, c in TURN_COST.items()]
        + [("turn-2", AGENT, Decimal(repr(FAILED_TURN_COST)))]
    )


def test_events_carry_their_sub_step_and_refusals_touch_nothing_else():
    story = support_triage("run-d")
    t = fold(positioned(story.events))
    calls = [t["events"][(e.event_id,)]["call"] for e in story.events]
    assert calls == [e.call for e in story.events]
    refused = [r for r in t["events"].values() if r["event"] == TOOL_CALL_REFUSED]
    assert [r["call"] for r in refused] == ["turn-2.call-1"]
    assert not [k for k in t["attempts"] if k[2] == "turn-2.call-1"]


def test_a_plain_step_keeps_an_empty_sub_step_in_its_attempt_key():
    from unit.test_projection_core import completed_after_retry

    t = fold(positioned(completed_after_retry("run-e").events))
    assert {k[2] for k in t["attempts"]} == {""}
    assert all(r["call"] is None for r in t["events"].values())
    assert t["steps"][("run-e", "send_email")].get("turns") is None


def test_a_run_stopped_at_max_turns_fails_its_agent_step():
    t = fold(positioned(looping("run-f").events))
    row = t["steps"][("run-f", STEP)]
    assert (row["status"], row["turns"]) == ("failed", 2)
    assert t["runs"][("run-f",)]["status"] == "failed"


def test_a_late_copy_of_a_sub_step_commit_reopens_nothing():
    events = looping("run-g").events
    late = next(e for e in events if e.event == ev.STEP_COMMITTED and e.call == "turn-2.call-0")
    copy = dataclasses.replace(late, event_id=f"{late.event_id}:dup", ts=events[-1].ts)
    t = fold(positioned([*events, copy]))
    assert t["steps"][("run-g", STEP)]["status"] == "failed"


def test_the_final_answer_is_no_attempt_whatever_its_attempt_number():
    events = support_triage("run-h").events
    final = next(i for i, e in enumerate(events) if e.event == ev.STEP_COMMITTED and e.call is None)
    events[final] = dataclasses.replace(events[final], attempt=1)
    t = fold(positioned(events))
    assert not [k for k in t["attempts"] if k[2] == ""]
    assert t["steps"][("run-h", STEP)]["status"] == "committed"
