"""`keel quarantine|approvals|cancel|pause|resume`: their --help and argument rules; the timeline's lines
for cases, decisions and control; the cases projection's merge rules, folded in memory."""

from __future__ import annotations

from dataclasses import replace

import pytest
from unit import case_stories as cs
from unit.test_projection_core import fold, positioned
from unit.test_timeline import as_api

from keel_ops.cli import main
from keel_ops.cli_runs import format_timeline


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["quarantine", "--help"], ["list", "show", "decide"]),
        (
            ["quarantine", "decide", "--help"],
            ["--retry", "--edit FILE", "--skip-with FILE", "--fail", "--reason"],
        ),
        (["quarantine", "list", "--help"], ["--status", "--kind", "--run", "--tenant"]),
        (["approvals", "--help"], ["list", "approve", "deny"]),
        (["approvals", "approve", "--help"], ["--reason", "case"]),
        (["cancel", "--help"], ["--reason", "run_id", "call in flight settles"]),
        (["pause", "--help"], ["--reason"]),
        (["resume", "--help"], ["--reason"]),
    ],
)
def test_each_command_explains_itself(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(w in out for w in words), out


@pytest.mark.parametrize(
    "argv",
    [
        ["quarantine", "decide", "c1", "--reason", "x"],  # no decision
        ["quarantine", "decide", "c1", "--retry", "--fail", "--reason", "x"],  # two
        ["quarantine", "decide", "c1", "--retry"],  # no reason
        ["cancel", "run-1"],
        ["approvals", "deny", "c1"],
    ],
)
def test_a_decision_needs_exactly_one_choice_and_a_reason(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "error" in capsys.readouterr().err


def test_the_timeline_shows_the_case_who_decided_what_and_why_and_pauses():
    s = cs.quarantined_send("run-t")
    cs.resolve(s, "run-t:send_email:1", "edit", "cmd-1", by="operator:abc", key="new", reason="typo")
    cs.pause(s, "tenant:acme")
    cs.refuse(s, "run-t:send_email:1", "retry", "cmd-2", "case run-t:send_email:1 is decided already")
    lines = format_timeline(as_api(s.events)).splitlines()
    held = next(x for x in lines if " quarantined " in x)
    assert "case run-t:send_email:1" in held and "held: unknown outcome on a none tool" in held
    decided = next(x for x in lines if "quarantine_resolved" in x)
    assert "edit by operator:abc: typo" in decided and "new key" in decided
    assert "tenant:acme: maintenance" in next(x for x in lines if " paused " in x)
    assert "refused retry on run-t:send_email:1" in next(x for x in lines if "decision_refused" in x)
    w = cs.awaiting_approval("run-a")
    [asked] = [x for x in format_timeline(as_api(w.events)).splitlines() if "approval_requested" in x]
    assert "asks: Refund 25 to c-1?" in asked and "then deny" in asked


def test_a_case_is_decided_once_whatever_comes_after():
    s = cs.quarantined_send("run-f")
    case = "run-f:send_email:1"
    cs.resolve(s, case, "skip", "cmd-1", output={"message_id": "m-1"})
    cs.resolve(s, case, "fail", "cmd-2")  # the scheduler would refuse it; the projection keeps the first
    held = next(e for e in s.events if e.event == "quarantined")
    s.events.append(replace(held, event_id="late-copy", error="other"))  # a late fact opening it again
    row = fold(positioned(s.events))["cases"][(case,)]
    assert (row["status"], row["decision"], row["decision_command_id"]) == ("decided", "skip", "cmd-1")
    assert (row["kind"], row["opened_by"], row["error"]) == ("quarantine", "scheduler", "timeout after send")
