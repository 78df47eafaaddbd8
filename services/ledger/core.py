"""The ledger's pure core: a successful tool result commits its idempotency key at most once."""

from __future__ import annotations

from keel import events as ev
from keel.contracts import CommitDetail, LedgerRecord, RunEvent


def commit(
    result: RunEvent, already: LedgerRecord | None, now_ms: int
) -> tuple[LedgerRecord | None, list[RunEvent]]:
    """(new ledger record or None, facts to publish) for one `tool_succeeded`.

    A result for a key that is already committed records nothing new (a second record would be a second
    claim that the effect happened), but the commit fact is issued again for the result's attempt, with
    the committed id and `duplicate=true`: the first `step_committed` may never have reached the
    scheduler (dead-lettered, say), and without it the retry that found the key committed would wait
    for nothing and the run would fail.
    """
    if result.event != ev.TOOL_SUCCEEDED or not result.idempotency_key:
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
        output_json=result.output_json,
        committed_at=now,
    )
    if already is None and result.tool is not None and result.tool.already_committed:
        # The adapters found the key in the ledger topic, but this ledger's memory does not hold it (past
        # the retention horizon, or not restored yet): the topic already has its record; add none.
        already = record
    if already is not None:
        return None, _reissued(result, already, now_ms)
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


def _reissued(result: RunEvent, held: LedgerRecord, now_ms: int) -> list[RunEvent]:
    # The key names its tenant, workflow and step, so a match on the key alone should imply these; a
    # result that disagrees is not answered, so one tenant's commit never shows up in another's run. The
    # run may differ: a re-run keeps its origin's key for a step whose input is unchanged (the scheduler
    # admits only keys of its own tenant, workflow and step; docs/rerun.md), and is answered with the
    # origin's commit, the effect the origin made.
    if (held.tenant_id, held.workflow, held.step) != (result.tenant_id, result.workflow, result.step or ""):
        return []
    # The output is the committed one: the record's copy, else the result's when it is the same content.
    same = result.output_json is not None and ev.content_ref_of_json(result.output_json) == held.output_ref
    output_json = held.output_json or (result.output_json if same else None)
    return [
        ev.step_fact(
            result,
            ev.STEP_COMMITTED,
            now_ms,
            "ledger",
            "reissued",  # its own event id, even for the attempt that committed: readers must not drop it
            agent_id=result.agent_id,
            output_json=output_json,
            output_ref=held.output_ref,
            commit=CommitDetail(external_id=held.external_id, committed_at=held.committed_at, duplicate=True),
        )
    ]


def expired(record: LedgerRecord, now_ms: int, horizon_s: float) -> bool:
    """Whether a commit is past the retention horizon: it leaves the ledger's memory (the compacted
    ledger topic keeps it)."""
    return record.committed_at.timestamp() * 1000 + horizon_s * 1000 <= now_ms
