"""The cases projection against the real broker and database: a case opens with its evidence, closes
once with its decision, a replayed or late fact never reopens or re-decides it, paused and resumed move
the run's status, and a rebuild from the topic equals the live tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from helpers import unique, wait_for
from test_projector import Running, setup  # noqa: F401  (the fixture)
from unit import case_stories as cs

from keel import events as ev
from keel.contracts import QuarantineDetail

pytestmark = pytest.mark.integration


def test_a_case_opens_closes_once_survives_replays_and_a_rebuild_equals_it(setup):  # noqa: F811
    held, waiting = cs.quarantined_send(unique("run")), cs.awaiting_approval(unique("run"), tenant="globex")
    case, approval = f"{held.run_id}:send_email:1", f"{waiting.run_id}:refund:approval-1"
    setup.produce(held.events + waiting.events)
    with Running(setup):
        wait_for(setup.caught_up, timeout=60, what="the projector to reach the end of the topic")
        rows = setup.rows(
            "SELECT case_id, tenant_id, kind, status, step, attempt, failure_class, reason, opened_by, "
            "input_json, idempotency_key, error FROM S.cases ORDER BY case_id"
        )
        by_id = {r[0]: r for r in rows}
        assert by_id[case][1:] == (
            "acme", "quarantine", "open", "send_email", 1, "unknown_outcome",
            "unknown outcome on a none tool", "scheduler", cs.SEND_INPUT, cs.key_of(held, "send_email"),
            "timeout after send",
        )  # fmt: skip
        [(kind, status, deadline, output)] = setup.rows(
            f"SELECT kind, status, deadline, output_json FROM S.cases WHERE case_id = '{approval}'"
        )
        assert (kind, status, output["on_timeout"]) == ("approval", "open", "deny")
        assert deadline == datetime.fromtimestamp(cs.DEADLINE_MS / 1000, UTC)

        # Decided once by an edit (a new key), then: an at-least-once copy of the decision, a second
        # decision (another command) and a late `quarantined` of the same case with other evidence.
        edited = {"to": "ada@example.org", "subject": "Hi", "body": "Hello Ada"}
        cs.resolve(held, case, "edit", "cmd-1", key="new-key", input=edited, reason="typo in the address")
        copy = held.events[-1]
        cs.resolve(held, case, "fail", "cmd-2", by="operator:other")
        late = held.add(
            ev.QUARANTINED,
            "send_email",
            1,
            extra="late",
            error="another story",
            quarantine=QuarantineDetail(case_id=case, reason="replayed", failure_class="auth"),
        )
        cs.pause(held)
        setup.produce([copy, held.events[-3], late, copy, held.events[-1]])
        wait_for(setup.caught_up, timeout=60, what="the projector to take the decision")
        [row] = setup.rows(
            "SELECT status, decision, decided_by, decision_reason, decision_command_id, decision_key, "
            f"decision_json, reason, failure_class, error FROM S.cases WHERE case_id = '{case}'"
        )
        assert row[:6] == ("decided", "edit", "operator:abc", "typo in the address", "cmd-1", "new-key")
        assert row[6]["input"] == edited and row[6]["previous_key"] == cs.key_of(held, "send_email")
        assert row[7:] == ("unknown outcome on a none tool", "unknown_outcome", "timeout after send")
        assert setup.rows(f"SELECT status FROM S.runs WHERE run_id = '{held.run_id}'") == [("paused",)]

        cs.resume(held)
        cs.refuse(waiting, approval, "approve", "cmd-3", "bound_to does not match the rendered payload")
        setup.produce([held.events[-1], waiting.events[-1]])
        wait_for(setup.caught_up, timeout=60, what="the projector to take the resume")
        assert setup.rows(f"SELECT status FROM S.runs WHERE run_id = '{held.run_id}'") == [("running",)]
        [(body,)] = setup.rows(
            f"SELECT body FROM S.events WHERE run_id = '{waiting.run_id}' AND event = 'decision_refused'"
        )
        assert json.loads(body["output_json"])["command_id"] == "cmd-3"
        assert setup.rows(f"SELECT status FROM S.cases WHERE case_id = '{approval}'") == [("open",)]

    assert setup.shadow_differences() == {}
