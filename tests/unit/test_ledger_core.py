"""The ledger's pure core: one record per key, and the commit fact re-issued for a key it holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keel import events as ev
from keel.contracts import LedgerRecord, RunEvent, ToolDetail
from services.ledger.core import commit, expired

KEY = "acme|outbound_email|run-1|send_email|sha256:ab"
T0 = 1_800_000_000_000


def succeeded(attempt: int, already: bool = False, external_id: str = "msg_1", **over: str) -> RunEvent:
    fields = {"run_id": "run-1", "tenant_id": "acme", "step": "send_email", "workflow": "outbound_email"}
    fields.update(over)
    return RunEvent(
        event_id=f"e{attempt}",
        workflow_version=1,
        event=ev.TOOL_SUCCEEDED,
        ts=ev.at_ms(T0),
        attempt=attempt,
        idempotency_key=KEY,
        source="adapters",
        output_json=None if already else '{"message_id":"msg_1"}',
        output_ref=None if already else ev.content_ref_of_json('{"message_id":"msg_1"}'),
        tool=ToolDetail(tool="email@1", external_id=external_id, already_committed=already),
        **fields,  # type: ignore[arg-type]
    )


def test_the_first_success_commits_the_key() -> None:
    record, facts = commit(succeeded(1), None, T0)
    assert record is not None and record.external_id == "msg_1" and record.attempt == 1
    [fact] = facts
    assert fact.event == ev.STEP_COMMITTED and fact.commit is not None
    assert fact.commit.external_id == "msg_1" and not fact.commit.duplicate


def test_a_success_for_a_committed_key_reissues_the_commit_fact_and_records_nothing() -> None:
    held, _ = commit(succeeded(1), None, T0)
    # The first step_committed never reached the scheduler; the retry finds the key committed.
    record, facts = commit(succeeded(2, already=True, external_id="msg_1"), held, T0 + 5000)
    assert record is None  # never a second ledger record
    [fact] = facts
    assert fact.event == ev.STEP_COMMITTED and fact.attempt == 2 and fact.run_id == "run-1"
    assert fact.commit is not None and fact.commit.duplicate
    assert fact.commit.external_id == "msg_1" and fact.commit.committed_at == ev.at_ms(T0)
    assert fact.output_ref == held.output_ref  # type: ignore[union-attr]
    # The retry brought no output (the provider was not called); the commit hands on the committed one,
    # so steps downstream render from it.
    assert held is not None and fact.output_json == held.output_json == '{"message_id":"msg_1"}'

    # Even for the attempt that committed, the re-issued fact has an id of its own (readers drop copies).
    _, [again] = commit(succeeded(1, already=True), held, T0 + 5000)
    assert again.event_id != commit(succeeded(1), None, T0)[1][0].event_id and again.commit.duplicate


def test_the_reissued_fact_names_the_committed_id_not_the_retrys() -> None:
    held, _ = commit(succeeded(1), None, T0)
    _, [fact] = commit(succeeded(2, external_id="msg_other"), held, T0 + 5000)
    assert fact.commit is not None and fact.commit.external_id == "msg_1" and fact.commit.duplicate


def test_a_key_the_adapters_found_committed_is_never_recorded_again_even_if_forgotten() -> None:
    # Past the retention horizon (or before a restore caught up) memory lacks a key the topic holds.
    record, [fact] = commit(succeeded(3, already=True, external_id="msg_1"), None, T0)
    assert record is None
    assert fact.commit is not None and fact.commit.duplicate and fact.commit.external_id == "msg_1"


def test_a_key_held_for_another_tenant_workflow_or_step_is_not_answered() -> None:
    held, _ = commit(succeeded(1), None, T0)
    for other in ({"tenant_id": "globex"}, {"workflow": "support_triage"}, {"step": "log_to_crm"}):
        assert commit(succeeded(2, already=True, **other), held, T0) == (None, [])


def test_a_rerun_carrying_its_origins_key_is_answered_with_the_origins_commit() -> None:
    held, _ = commit(succeeded(1), None, T0)
    record, [fact] = commit(succeeded(1, already=True, run_id="run-2"), held, T0 + 5000)
    assert record is None  # the origin's effect, never a second record
    assert fact.run_id == "run-2" and fact.event == ev.STEP_COMMITTED and fact.idempotency_key == KEY
    assert fact.commit is not None and fact.commit.duplicate and fact.commit.external_id == "msg_1"
    assert held is not None and fact.output_json == held.output_json


def test_keys_leave_memory_after_the_retention_horizon() -> None:
    day = 24 * 3600 * 1000
    record = LedgerRecord(
        idempotency_key=KEY,
        tenant_id="acme",
        workflow="outbound_email",
        run_id="run-1",
        step="send_email",
        attempt=1,
        committed_at=datetime.fromtimestamp(T0 / 1000, UTC),
    )
    horizon = timedelta(days=7).total_seconds()
    assert not expired(record, T0 + 7 * day - 1, horizon)
    assert expired(record, T0 + 7 * day, horizon)
