"""Tenant provenance (docs/tenancy.md): a command whose key names another tenant, and a request, fact or
control command of another tenant than its run's, are refused before anything is called or decided."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from test_scheduler_core import CATALOG, T0, fact, request, started

import keel.events as ev
from keel.contracts import ControlCommand
from keel.provenance import TENANT_MISMATCH, command_problem, key_tenant, run_problem
from services.projector.core import Position, guard_tenants, project
from services.scheduler.admission import Rejected
from services.scheduler.core import decide

KEY = "acme|outbound_email|run-1|send|sha256:00"


def test_the_key_names_its_tenant_in_its_first_field():
    assert key_tenant(KEY) == "acme"
    assert command_problem("acme", KEY) is None
    assert command_problem("acme", None) is None  # an llm step's command has no key
    problem = command_problem("globex", KEY)
    assert problem and "'globex'" in problem and "'acme'" in problem


def test_a_message_of_the_runs_own_tenant_or_of_no_run_yet_passes():
    assert run_problem("acme", "acme", "RunEvent", "run-1") is None
    assert run_problem(None, "globex", "RunRequested", "run-1") is None
    assert "belongs to tenant 'acme'" in (run_problem("acme", "globex", "RunEvent", "run-1") or "")


def _as_globex(message):
    return dataclasses.replace(message, tenant_id="globex")


def test_the_scheduler_refuses_a_fact_of_another_tenant_for_a_run():
    state = started()  # its first step, draft_email, is in flight
    draft = {"subject": "Hi", "body": "Hello Ada"}
    forged = _as_globex(fact(state, ev.STEP_COMMITTED, "draft_email", 1, output_json=json.dumps(draft)))
    with pytest.raises(Rejected) as refused:
        decide(state, forged, 0, T0, CATALOG)
    assert refused.value.error_class == TENANT_MISMATCH
    # The same fact of the run's own tenant is decided as ever.
    assert decide(state, dataclasses.replace(forged, tenant_id="acme"), 0, T0, CATALOG).state is not None


def test_the_scheduler_refuses_a_control_command_or_a_request_of_another_tenant():
    state = started()
    cancel = ControlCommand(
        command_id="c-1",
        run_id=state.run_id,
        tenant_id="globex",
        action="cancel",
        reason="not mine",
        issued_by="key:globex-1",
        issued_at=datetime.now(UTC),
    )
    with pytest.raises(Rejected) as refused:
        decide(state, cancel, 0, T0, CATALOG)
    assert refused.value.error_class == TENANT_MISMATCH
    with pytest.raises(Rejected):  # a second tenant reusing the run id is not a repeat: it is refused
        decide(state, _as_globex(request()), 0, T0, CATALOG)


def test_the_projector_keeps_a_fact_of_another_tenant_as_an_error_not_a_row():
    """A forged fact (another tenant than its run's recorded one) becomes a projection error; the run's
    own facts, and a run first seen in the batch, are projected as ever."""
    state = started()
    own = fact(state, ev.STEP_COMMITTED, "draft_email", 1, output_json=json.dumps({"a": 1}))
    forged = _as_globex(own)
    fresh = dataclasses.replace(own, run_id="run-2", event_id="fresh")
    at = [Position("keel.run-events", 0, n) for n in range(4)]
    out = guard_tenants(
        [project(own, at[0]), project(forged, at[1]), project(fresh, at[2]), project(forged, at[3])],
        {"run-1": "acme"},
    )
    assert [p.changes[0].table for p in out] == ["events", "projection_errors", "events", "projection_errors"]
    assert out[1].changes[0].values["error_class"] == TENANT_MISMATCH
    # Without a stored tenant, the first fact of the batch sets it: the forgery after it is still caught.
    assert [p.changes[0].table for p in guard_tenants([project(own, at[0]), project(forged, at[1])], {})] == [
        "events",
        "projection_errors",
    ]
