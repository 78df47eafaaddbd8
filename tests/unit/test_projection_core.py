"""The projector's pure core: event -> row upserts, merge rules, determinism; folded in memory, no Postgres.

The stories here (a run completed after a retry, a failed run, a fan-out) are reused by the
projector's and the API's integration tests.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from keel import events as ev
from keel.contracts import CommitDetail, ModelDetail, RetryDetail, RunDetail, RunEvent, StepDetail, ToolDetail
from services.projector.core import Position, Projection, error_projection, project
from services.projector.tables import TABLES, Merge, Status

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SOURCES = {
    "step_started": "executor",
    "model_called": "executor",
    "step_failed": "executor",
    "tool_called": "adapters",
    "tool_succeeded": "adapters",
    "tool_failed": "adapters",
}


class Story:
    """The events of one run, in order, with deterministic ids and timestamps."""

    def __init__(self, run_id: str, tenant: str = "acme", workflow: str = "outbound_email") -> None:
        self.run_id, self.tenant, self.workflow = run_id, tenant, workflow
        self.events: list[RunEvent] = []

    def add(
        self,
        kind: str,
        step: str | None = None,
        attempt: int = 0,
        extra: str = "",
        call: str | None = None,
        **f: Any,
    ) -> RunEvent:
        e = RunEvent(
            event_id=ev.event_id(self.run_id, kind, step, attempt, extra, call),
            run_id=self.run_id,
            task_id=f.pop("task_id", f"task-{self.run_id}"),
            tenant_id=self.tenant,
            workflow=self.workflow,
            workflow_version=1,
            step=step,
            event=kind,
            ts=T0 + timedelta(seconds=len(self.events)),
            attempt=attempt,
            source=f.pop("source", SOURCES.get(kind, "ledger" if kind == ev.STEP_COMMITTED else "scheduler")),
            call=call,
            **f,
        )
        self.events.append(e)
        return e

    def start(self, run_input: dict[str, Any]) -> Story:
        self.add(ev.CREATED, input_json=json.dumps(run_input), run=RunDetail(status="created"))
        self.add(ev.SCHEDULED)
        self.add(ev.STARTED)
        return self

    def llm(self, step: str, cost: float, output: Any, attempt: int = 1) -> Story:
        self.add(ev.STEP_STARTED, step, attempt, step_detail=StepDetail(kind="llm"), input_json="{}")
        self.called(step, cost, attempt)
        return self.commit(step, attempt, None, output)

    def called(self, step: str, cost: float, attempt: int = 1) -> Story:
        self.add(
            ev.MODEL_CALLED,
            step,
            attempt,
            model="sim-small",
            agent_id="writer_v3",
            cost_usd_est=cost,
            model_call=ModelDetail(provider="sim", prompt_tokens=120, completion_tokens=80),
        )
        return self

    def tool(self, step: str, attempt: int, external_id: str | None, failure: str | None = None) -> Story:
        key = f"{self.tenant}|{self.workflow}|{self.run_id}|{step}|sha256:{'0' * 64}"
        self.add(ev.STEP_STARTED, step, attempt, step_detail=StepDetail(kind="tool"), idempotency_key=key)
        self.add(ev.TOOL_CALLED, step, attempt, idempotency_key=key, tool=ToolDetail(tool="crm@1"))
        if failure:
            self.add(
                ev.TOOL_FAILED,
                step,
                attempt,
                idempotency_key=key,
                error=f"{failure}: 503 from provider",
                tool=ToolDetail(tool="crm@1", failure_class=failure, http_status=503),
            )
            return self
        self.add(
            ev.TOOL_SUCCEEDED,
            step,
            attempt,
            idempotency_key=key,
            output_json=json.dumps({"id": external_id}),
            tool=ToolDetail(tool="crm@1", external_id=external_id),
        )
        return self.commit(step, attempt, external_id, {"id": external_id}, key)

    def commit(
        self, step: str, attempt: int, external_id: str | None, output: Any, key: str | None = None
    ) -> Story:
        at = T0 + timedelta(seconds=len(self.events))
        self.add(
            ev.STEP_COMMITTED,
            step,
            attempt,
            idempotency_key=key,
            output_json=json.dumps(output),
            commit=CommitDetail(external_id=external_id, committed_at=at),
        )
        return self


def completed_after_retry(run_id: str, tenant: str = "acme") -> Story:
    s = Story(run_id, tenant).start({"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"})
    s.llm("draft_email", 0.0021, {"subject": "Hi", "body": "Hello Ada"})
    s.tool("log_to_crm", 1, "crm-1")
    s.tool("send_email", 1, None, failure="transient")
    s.add(
        ev.RETRY_SCHEDULED,
        "send_email",
        1,
        error="transient: 503 from provider",
        retry=RetryDetail(
            failure_class="transient", reason="retry", delay_ms=200, fire_at=T0, next_attempt=2
        ),
    )
    s.tool("send_email", 2, "msg-1")
    s.add(ev.COMPLETED, output_json=json.dumps({"sent": "msg-1"}), run=RunDetail(status="completed"))
    s.add(ev.STARTED, extra="late")  # a late non-terminal fact must not reopen the run
    return s


def failed(run_id: str, tenant: str = "globex") -> Story:
    s = Story(run_id, tenant).start({"lead_email": "bob@example.com", "lead_name": "Bob", "product": "Keel"})
    s.add(ev.STEP_STARTED, "draft_email", 1, step_detail=StepDetail(kind="llm"))
    s.add(
        ev.STEP_FAILED,
        "draft_email",
        1,
        model="sim-small",
        cost_usd_est=0.001,
        error="bad JSON",
        step_detail=StepDetail(kind="llm", failure_class="validation"),
    )
    s.add(ev.FAILED, error="step draft_email attempt 1: validation: bad JSON", run=RunDetail(status="failed"))
    return s


def fan_out(run_id: str, tenant: str = "acme") -> Story:
    s = Story(run_id, tenant, "lead_enrichment")
    s.start({"lead_email": "cy@example.com", "lead_name": "Cy", "company": "Initech"})
    for step in ("research_company", "research_person"):
        s.add(ev.STEP_STARTED, step, 1, step_detail=StepDetail(kind="llm"))
    s.called("research_person", 0.0013).called("research_company", 0.0017)
    s.commit("research_person", 1, None, {"text": "VP"}).commit("research_company", 1, None, {"text": "B2B"})
    s.add(ev.BUDGET_WARNING, "summarize", extra="80pct")  # a kind this projector does not interpret
    s.llm("summarize", 0.004, {"subject": "Cy", "body": "Buyer"})
    s.tool("log_summary", 1, "crm-9")
    s.add(ev.COMPLETED, run=RunDetail(status="completed"))
    return s


def positioned(events: list[RunEvent], topic: str = "t", partition: int = 0) -> list[Projection]:
    return [project(e, Position(topic, partition, i)) for i, e in enumerate(events)]


def fold(projections: list[Projection]) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """The merge rules applied in memory: what the store's SQL does, as a fake for these tests."""
    tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {name: {} for name in TABLES}
    seen: set[str] = set()
    for p in projections:
        if p.event_id is not None and p.event_id in seen:
            continue
        seen.add(p.event_id or "")
        for change in p.changes:
            table = TABLES[change.table]
            key = tuple(change.values[k] for k in table.key)
            old = tables[change.table].get(key)
            if old is None:
                tables[change.table][key] = dict(change.values)
                continue
            for col, new in change.values.items():
                if col in table.merge:
                    old[col] = _merge(table.merge[col], old.get(col), new)
    return tables


def _merge(policy: Merge | Status, old: Any, new: Any) -> Any:
    if isinstance(policy, Status):
        if old in policy.final or policy.rank.get(new, 0) < policy.rank.get(old, 0):
            return old
        return new
    if policy is Merge.ADD:
        return old + new
    if old is None or new is None:
        return old if new is None else new
    if policy is Merge.NEW or policy is Merge.FIRST:  # JSON values have no order: never compare them
        return new if policy is Merge.NEW else old
    return max(old, new) if policy is Merge.MAX else min(old, new)


def test_a_completed_run_with_a_retry_projects_statuses_attempts_and_commit_ids():
    story = completed_after_retry("run-a")
    t = fold(positioned(story.events))
    run = t["runs"][("run-a",)]
    assert run["status"] == "completed"  # the late `started` did not reopen it
    assert run["input_json"] == {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}
    assert run["output_json"] == {"sent": "msg-1"}
    assert (run["created_at"], run["ended_at"]) == (T0, story.events[-2].ts)
    assert run["cost_usd"] == Decimal("0.0021")
    send = t["steps"][("run-a", "send_email")]
    assert (send["status"], send["attempts"], send["external_id"], send["kind"]) == (
        "committed",
        2,
        "msg-1",
        "tool",
    )
    assert send["idempotency_key"].startswith("acme|outbound_email|run-a|send_email|sha256:")
    first, second = (t["attempts"][("run-a", "send_email", "", n)] for n in (1, 2))
    assert (first["status"], first["failure_class"], first["error"]) == (
        "failed",
        "transient",
        "transient: 503 from provider",
    )
    assert (second["status"], second.get("failure_class")) == ("committed", None)
    assert t["steps"][("run-a", "draft_email")]["output_json"] == {"subject": "Hi", "body": "Hello Ada"}
    assert len(t["events"]) == len(story.events)


def test_a_failed_run_keeps_its_error_and_the_attempt_its_failure_class():
    t = fold(positioned(failed("run-b").events))
    run = t["runs"][("run-b",)]
    assert (run["status"], run["tenant_id"]) == ("failed", "globex")
    assert run["error"] == "step draft_email attempt 1: validation: bad JSON"
    assert t["attempts"][("run-b", "draft_email", "", 1)]["failure_class"] == "validation"
    assert t["steps"][("run-b", "draft_email")]["status"] == "failed"
    assert [c["cost_usd"] for c in t["costs"].values()] == [Decimal("0.001")]


def test_a_fan_out_sums_costs_per_step_and_run_and_ignores_unknown_kinds():
    story = fan_out("run-c")
    t = fold(positioned(story.events))
    assert t["runs"][("run-c",)]["cost_usd"] == Decimal("0.0013") + Decimal("0.0017") + Decimal("0.004")
    assert t["steps"][("run-c", "research_company")]["cost_usd"] == Decimal("0.0017")
    assert {k[1] for k in t["steps"] if k[0] == "run-c"} == {
        "research_company",
        "research_person",
        "summarize",
        "log_summary",
    }
    budget = next(r for r in t["events"].values() if r["event"] == ev.BUDGET_WARNING)
    assert budget["step"] == "summarize" and ("run-c", "summarize", "", 0) not in t["attempts"]
    assert sum(1 for c in t["costs"].values() if c["run_id"] == "run-c") == 3


def test_unknown_kinds_only_reach_the_events_table():
    p = project(Story("r").add("some_future_kind", "s", 1, cost_usd_est=1.0), Position("t", 0, 7))
    assert [c.table for c in p.changes] == ["events"]


def test_projection_is_deterministic_and_uses_only_event_values():
    events = completed_after_retry("run-d").events
    assert positioned(events) == positioned(events)
    body = project(events[0], Position("t", 2, 9)).changes[0].values
    assert (body["partition"], body["offset"], body["topic"]) == (2, 9, "t")
    assert body["body"]["ts"] == T0.isoformat() and body["body"]["run"]["status"] == "created"


def test_a_repeated_event_id_is_applied_once():
    events = failed("run-e").events
    t = fold(positioned(events + events[-2:]))
    assert t["runs"][("run-e",)]["cost_usd"] == Decimal("0.001")
    assert len(t["costs"]) == 1


def test_values_postgres_would_refuse_are_made_storable():
    e = Story("r").add(ev.CREATED, input_json="not json\x00", cost_usd_est=float("nan"), error="a\x00b")
    rows = {c.table: c.values for c in project(e, Position("t", 0, 0)).changes}
    assert rows["runs"]["input_json"] == "not json\ufffd"
    assert rows["runs"]["cost_usd"] == 0 and "costs" not in rows
    assert rows["events"]["error"] == "a\ufffdb" and rows["events"]["body"]["cost_usd_est"] is None


def test_an_unreadable_message_becomes_an_error_row():
    p = error_projection(Position("t", 1, 5), "cannot decode: bad magic", "undecodable", b"k", b"\x00x")
    assert p.event_id is None
    assert p.changes[0].table == "projection_errors"
    assert p.changes[0].values == {
        "topic": "t",
        "partition": 1,
        "offset": 5,
        "error_class": "undecodable",
        "reason": "cannot decode: bad magic",
        "key": "k",
        "value": b"\x00x",
    }
