"""The scheduler around large payloads: keys from the whole payload, state and changelog by reference."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keel import events as ev
from keel.blobs import BlobMissing, BlobStore
from keel.claimcheck import offload, ref_of_marker, ref_of_marker_text, resolved_command
from keel.contracts import CommitDetail, ControlCommand, RunEvent, RunRequested, StepCommand
from keel.idempotency import idempotency_key
from keel.workflows import Catalog
from services.scheduler import payloads
from services.scheduler.core import decide

CATALOG = Catalog.load(Path(__file__).parents[1] / "workflows")
T0 = 1_773_059_696_000
LIMIT = 64 * 1024
KIND, NOTE = "k" * 200_000, "n" * 200_000
INPUT = {"contact": "ada@example.com", "kind": KIND, "note": NOTE}


@pytest.fixture
def store(tmp_path) -> BlobStore:
    return BlobStore(str(tmp_path))


def request(run_id: str) -> RunRequested:
    text, ref = ev.inline(INPUT)
    return RunRequested(
        request_id=f"req-{run_id}", run_id=run_id, tenant_id="acme", workflow="big_payloads",
        input_json=text, input_ref=ref, requested_at=datetime.fromtimestamp(T0 / 1000, UTC),
    )  # fmt: skip


def shell(store: BlobStore, state, message, now: int = T0):  # as SchedulerProcessor.handle does it
    message = payloads.resolve_message(store, message)
    if state is not None:
        payloads.hydrate(store, state)
    decision = decide(state, message, 0, now, CATALOG)
    payloads.dehydrate(store, decision.state, LIMIT)
    return decision


def commands(decision) -> list[StepCommand]:
    return [o for o in decision.outputs if isinstance(o, StepCommand)]


def test_the_key_is_the_whole_payloads_whether_the_input_came_inline_or_by_reference(store):
    inline = decide(None, request("run-1"), 0, T0, CATALOG)
    [first] = commands(inline)
    by_ref = shell(store, None, offload(request("run-1"), store, LIMIT))
    [second] = commands(by_ref)
    payload = {"contact_email": "ada@example.com", "kind": KIND, "note": NOTE}
    golden = idempotency_key("acme", "big_payloads", "run-1", "log", payload)
    assert first.idempotency_key == second.idempotency_key == golden
    # The state the changelog holds is small: the input and the rendered command input by claim check.
    state = by_ref.state
    assert len(state.to_json()) < 4096
    assert json.loads(store.get("acme", ref_of_marker(state.input) or "")) == INPUT
    assert ref_of_marker_text(state.steps["log"].input_json) is not None
    assert resolved_command(store, offload(second, store, LIMIT)) == second  # the executor's reading


def test_a_step_renders_from_a_committed_output_that_came_by_reference(store):
    state = shell(store, None, request("run-2")).state
    out_text, out_ref = ev.inline({"activity_id": "act_1", "kind": KIND})
    committed = RunEvent(
        event_id="c", run_id="run-2", tenant_id="acme", workflow="big_payloads", workflow_version=1,
        step="log", event=ev.STEP_COMMITTED, ts=datetime.now(UTC), attempt=1, source="ledger",
        output_json=out_text, output_ref=out_ref, commit=CommitDetail(committed_at=datetime.now(UTC)),
    )  # fmt: skip
    decision = shell(store, state, offload(committed, store, LIMIT))
    [send] = commands(decision)
    payload = {"to": "ada@example.com", "subject": "act_1", "body": KIND}
    assert send.idempotency_key == idempotency_key("acme", "big_payloads", "run-2", "send", payload)
    assert len(decision.state.to_json()) < 4096  # the output is kept by its claim check too
    assert ref_of_marker(decision.state.steps["log"].output) == out_ref


def test_a_request_whose_input_blob_is_gone_cannot_start_a_run(store):
    sent = offload(request("run-3"), store, LIMIT)
    store.delete("acme", sent.input_ref)
    with pytest.raises(BlobMissing, match=sent.input_ref):
        payloads.resolve_message(store, sent)


def test_a_value_shaped_like_a_claim_check_is_data_and_comes_back_as_it_was(store):
    # A model answering with exactly a claim-check object must not make the scheduler read that blob.
    foreign = {"$keel_blob": "sha256:" + "f" * 64}
    state = shell(store, None, request("run-4")).state
    committed = RunEvent(
        event_id="c", run_id="run-4", tenant_id="acme", workflow="big_payloads", workflow_version=1,
        step="log", event=ev.STEP_COMMITTED, ts=datetime.now(UTC), attempt=1, source="ledger",
        output_json=json.dumps({"activity_id": "act_1", "kind": foreign}),
        commit=CommitDetail(committed_at=datetime.now(UTC)),
    )  # fmt: skip
    state = shell(store, state, committed).state
    payloads.hydrate(store, state)
    assert state.steps["log"].output == {"activity_id": "act_1", "kind": foreign}
    whole = {"$keel_blob": "sha256:" + "e" * 64}
    payloads.dehydrate(store, state, LIMIT)
    state.steps["log"].output = whole  # exactly a claim check, as data
    payloads.dehydrate(store, state, LIMIT)
    payloads.hydrate(store, state)
    assert state.steps["log"].output == whole


@pytest.mark.parametrize(("action", "hydrated"), [("decide", True), ("resume", True), ("pause", False)])
def test_a_decision_or_a_resume_sees_the_values_they_may_render_steps_from(action, hydrated):
    command = ControlCommand(
        command_id="c", run_id="run-5", tenant_id="acme", action=action, issued_at=datetime.now(UTC)
    )
    assert payloads.renders(command) is hydrated
