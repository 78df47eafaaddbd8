"""Re-runs from a step in the scheduler's core: reused steps are never issued, an unchanged input keeps
the origin's key, a changed one gets a key of the new run, and a request that breaks the rules is refused."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from keel import events as ev
from keel.contracts import RunRequested, StepCommand
from keel.idempotency import canonical_json, content_ref
from keel.workflows import Catalog
from services.scheduler.core import Rejected, decide, start_run
from services.scheduler.state import RunState

CATALOG = Catalog.load()
T0 = 1_773_059_696_000
LEAD = {"lead_email": "lead@example.com", "lead_name": "Ada", "product": "Keel"}
DRAFT = {"subject": "Hi Ada", "body": "Keel keeps your effects once."}
CRM = {"id": "crm-1"}


def request(run_id: str, data: object = LEAD, **fields: object) -> RunRequested:
    return RunRequested(
        request_id=f"req-{run_id}",
        run_id=run_id,
        tenant_id="acme",
        workflow="outbound_email",
        input_json=json.dumps(data),
        requested_at=datetime.fromtimestamp(T0 / 1000, UTC),
        **fields,  # type: ignore[arg-type]
    )


def origin_step(step: str, data: dict[str, object] = LEAD) -> tuple[str, str]:
    """(key, rendered input ref) the origin run run-1 gave `step`, by running the core up to it."""
    state = start_run(request("run-1", data), 0, T0, CATALOG).state
    assert state is not None
    for name, output in (("draft_email", DRAFT), ("log_to_crm", CRM)):
        if name == step:
            break
        commit = ev.step_fact(
            _coords(state, name), ev.STEP_COMMITTED, T0, "ledger", output_json=canonical_json(output)
        )
        state = decide(state, commit, 0, T0, CATALOG).state
        assert state is not None
    held = state.steps[step]
    assert held.input_json is not None and held.idempotency_key is not None
    return held.idempotency_key, ev.content_ref_of_json(held.input_json)


def _coords(state: RunState, step: str) -> StepCommand:
    return StepCommand(
        command_id="c", run_id=state.run_id, tenant_id="acme", workflow="outbound_email", workflow_version=1,
        step=step, attempt=1, kind="tool", input_json="{}", issued_at=datetime.now(UTC),
    )  # fmt: skip


def rerun(from_step: str, reused: dict[str, object], data: dict[str, object] = LEAD) -> RunRequested:
    keys = {}
    for step in ("log_to_crm", "send_email"):
        if step not in reused:
            key, ref = origin_step(step)
            keys[step] = {"key": key, "input_ref": ref}
    return request(
        "run-2",
        data,
        rerun_of="run-1",
        from_step=from_step,
        reused_json=canonical_json(reused),
        origin_keys_json=canonical_json(keys),
    )


def issued(decision_outputs: list[object]) -> list[StepCommand]:
    return [o for o in decision_outputs if isinstance(o, StepCommand)]


def test_reused_steps_are_committed_at_the_start_and_never_issued() -> None:
    decision = start_run(rerun("send_email", {"draft_email": DRAFT, "log_to_crm": CRM}), 0, T0, CATALOG)
    commands = issued(decision.outputs)
    assert [c.step for c in commands] == ["send_email"]
    reused = [o for o in decision.outputs if getattr(o, "event", None) == ev.STEP_COMMITTED]
    assert {(e.step, e.source, e.commit.reused_from, e.attempt) for e in reused} == {  # type: ignore[union-attr]
        ("draft_email", "scheduler", "run-1", 0),
        ("log_to_crm", "scheduler", "run-1", 0),
    }
    created = decision.outputs[0]
    assert created.event == ev.CREATED and created.run.rerun_of == "run-1"  # type: ignore[union-attr]
    # The rendered input uses the reused outputs.
    payload = json.loads(commands[0].input_json)["payload"]
    assert payload["subject"] == DRAFT["subject"] and payload["to"] == LEAD["lead_email"]


def test_a_step_whose_input_is_unchanged_keeps_the_origin_key() -> None:
    decision = start_run(rerun("log_to_crm", {"draft_email": DRAFT}), 0, T0, CATALOG)
    [command] = issued(decision.outputs)
    origin_key, _ = origin_step("log_to_crm")
    assert command.step == "log_to_crm" and command.idempotency_key == origin_key
    assert origin_key.split("|")[2] == "run-1"  # the key's run field names the origin
    state = decision.state
    assert state is not None
    commit = ev.step_fact(command, ev.STEP_COMMITTED, T0, "ledger", output_json=canonical_json(CRM))
    [send] = issued(decide(state, commit, 0, T0, CATALOG).outputs)
    assert send.step == "send_email" and send.idempotency_key == origin_step("send_email")[0]


def test_a_step_whose_input_changed_gets_a_key_of_the_new_run() -> None:
    patched = {**LEAD, "lead_email": "other@example.com"}
    req = rerun("send_email", {"draft_email": DRAFT, "log_to_crm": CRM}, patched)
    decision = start_run(req, 0, T0, CATALOG)
    [command] = issued(decision.outputs)
    origin_key, _ = origin_step("send_email")
    assert command.idempotency_key != origin_key
    assert command.idempotency_key is not None and command.idempotency_key.split("|")[2] == "run-2"
    payload = json.loads(command.input_json)["payload"]
    assert payload["to"] == "other@example.com"
    assert command.idempotency_key.endswith(content_ref(payload))


def held(step: str, key: str) -> str:
    return canonical_json({step: {"key": key, "input_ref": "sha256:00"}})


@pytest.mark.parametrize(
    "change",
    [
        {"from_step": None},  # a re-run without its step
        {"rerun_of": "run-2"},  # itself
        {"from_step": "no_such_step"},
        {"reused_json": canonical_json({"draft_email": DRAFT, "send_email": {"id": "x"}})},  # reuses N
        {"origin_keys_json": held("send_email", "other|outbound_email|run-1|send_email|sha256:00")},  # tenant
        {"origin_keys_json": held("draft_email", "acme|outbound_email|run-1|draft_email|sha256:00")},  # N-1
        {"origin_keys_json": held("send_email", "acme|outbound_email|run-1|log_to_crm|sha256:00")},  # step
        {"reused_json": "[1]"},
        {"origin_keys_json": "{not json"},
    ],
)
def test_a_rerun_request_that_breaks_the_rules_is_refused_before_anything_is_issued(
    change: dict[str, object],
) -> None:
    req = dataclasses.replace(rerun("send_email", {"draft_email": DRAFT, "log_to_crm": CRM}), **change)  # type: ignore[arg-type]
    with pytest.raises(Rejected) as caught:
        start_run(req, 0, T0, CATALOG)
    assert caught.value.error_class == "invalid_request"


def test_the_rerun_state_survives_the_changelog() -> None:
    state = start_run(rerun("log_to_crm", {"draft_email": DRAFT}), 0, T0, CATALOG).state
    assert state is not None
    back = RunState.from_json(state.to_json())
    assert back.rerun_of == "run-1" and back.origin_keys == state.origin_keys
    assert back.steps["draft_email"].status == "committed" and back.steps["draft_email"].output == DRAFT
