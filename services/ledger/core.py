"""The ledger's pure core: a successful tool result commits its idempotency key at most once."""

from __future__ import annotations

from keel import events as ev
from keel.contracts import CommitDetail, LedgerRecord, RunEvent


def commit(
    result: RunEvent, already: LedgerRecord | None, now_ms: int
) -> tuple[LedgerRecord | None, list[RunEvent]]:
    """(new ledger record or None, facts to publish) for one `tool_succeeded`.

    A result for a key that is already committed commits nothing new: the step was committed by the first
    result, and a second commit would be a second claim that the effect happened.
    """
    if result.event != ev.TOOL_SUCCEEDED or not result.idempotency_key or already is not None:
        return None, []
    now = ev.at_ms(now_ms)
    external_id = result.tool.external_id if result.tool else None
    record = LedgerRecord(
        idempotency_key=result.idempotency_key,
        tenant_id=result.tenant_id,
        workflow=result.workflow,
        run_id=result.run_id,
        step=result.step or "",
        attempt=result.attempt,
        tool=result.tool.tool if result.tool else None,
        external_id=external_id,
        output_ref=result.output_ref,
        committed_at=now,
    )
    committed = ev.step_fact(
        result,
        ev.STEP_COMMITTED,
        now_ms,
        "ledger",
        agent_id=result.agent_id,
        output_json=result.output_json,
        output_ref=result.output_ref,
        commit=CommitDetail(external_id=external_id, committed_at=now),
    )
    return record, [committed]
