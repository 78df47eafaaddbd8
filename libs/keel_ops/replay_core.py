"""The scheduler's decisions replayed: a recording's facts fed to today's pure core (decide() and due(),
with the recorded timestamps as the clock), and what it decides compared with what was decided then."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from keel import events as ev
from keel.contracts import RunEvent, RunRequested
from keel.idempotency import canonical_json
from keel.recording import Recording, RecordingError
from keel.tooldefs import ToolDefinition
from keel.workflows import Catalog, WorkflowSpec
from services.scheduler.budgets import BudgetPolicy
from services.scheduler.core import decide, due, next_timer
from services.scheduler.state import RunState

SCHEDULER = "scheduler"
# The scheduler's decisions that say why a step went where it went; run-level progress facts and
# budget bookkeeping are left out of the comparison (they follow from these).
DECISIONS = frozenset(
    {
        ev.RETRY_SCHEDULED,
        ev.QUARANTINED,
        ev.FAILED,
        ev.COMPLETED,
        ev.FALLBACK_CHOSEN,
        ev.TOOL_CALL_REFUSED,
        ev.ANSWER_REFUSED,
        ev.LOOP_DETECTED,
        ev.APPROVAL_REQUESTED,
    }
)


def decision_of(e: RunEvent) -> dict[str, Any]:
    """What a decision says, for comparison: its kind, where, and why."""
    found: dict[str, Any] = {"event": e.event, "step": e.step, "call": e.call, "attempt": e.attempt}
    if e.retry is not None:
        found["retry"] = {
            "failure_class": e.retry.failure_class,
            "reason": e.retry.reason,
            "delay_ms": e.retry.delay_ms,
            "next_attempt": e.retry.next_attempt,
        }
    if e.quarantine is not None:
        found["quarantine"] = {"reason": e.quarantine.reason, "failure_class": e.quarantine.failure_class}
    if e.error:
        found["error"] = e.error
    return found


@dataclass
class CoreReplay:
    recorded: list[dict[str, Any]]
    replayed: list[dict[str, Any]]
    state: RunState | None
    diff: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.diff


def _request(rec: Recording, created: RunEvent) -> RunRequested:
    run = created.run
    run_input = rec.input_of(created)
    return RunRequested(
        request_id=f"replay-{created.run_id}",
        run_id=created.run_id,
        tenant_id=created.tenant_id,
        workflow=created.workflow,
        workflow_version=created.workflow_version,
        task_id=created.task_id,
        input_json=json.dumps(run_input),
        # A large input came by reference: the ref lets the scheduler admit it past the inline limit.
        input_ref=created.input_ref if created.input_json is None else None,
        requested_at=created.ts,
        requested_by=run.requested_by if run else None,
        trace_id=created.trace_id,
    )


def _resolved(rec: Recording, e: RunEvent) -> RunEvent:
    """A fact with its payloads in place, as the scheduler's shell hands it to the core (the core reads
    payloads, never refs): from the recording, never from a blob store."""
    changes: dict[str, Any] = {}
    if e.input_json is None and e.input_ref is not None:
        changes["input_json"] = canonical_json(rec.input_of(e))
    if e.output_json is None and e.output_ref is not None:
        changes["output_json"] = canonical_json(rec.output_of(e))
    return dataclasses.replace(e, **changes) if changes else e


def _ms(e: RunEvent) -> int:
    return int(e.ts.timestamp() * 1000)


def replay_scheduler(
    rec: Recording,
    workflow: WorkflowSpec | None = None,
    tools: dict[str, ToolDefinition] | None = None,
) -> CoreReplay:
    """Feed the other services' facts, in log order, to today's scheduler core; fire its timers at the
    recorded times between them. `workflow` and `tools` default to the recorded ones."""
    spec = workflow or rec.workflow
    if spec is None:
        raise RecordingError("the recording holds no workflow version: the scheduler cannot be replayed")
    defs = tools if tools is not None else rec.tools
    catalog = Catalog({(spec.name, spec.version): spec})
    created = next((e for e in rec.events if e.event == ev.CREATED and e.source == SCHEDULER), None)
    if created is None:
        raise RecordingError("the recording has no `created` fact: it does not start at the run's start")
    policy = BudgetPolicy() if any(e.source == "budget" for e in rec.events) else None
    kwargs: dict[str, Any] = {
        "key_retention": lambda t: defs[t].idempotency.key_retention_s if t in defs else None,
        "tools": lambda t: defs[t],
        "budget_policy": policy,
    }

    def mode(tool: str) -> str | None:
        return defs[tool].idempotency.mode if tool in defs else None

    outputs: list[RunEvent] = []

    def take(decision: Any) -> RunState | None:
        outputs.extend(o for o in decision.outputs if isinstance(o, RunEvent))
        return decision.state  # type: ignore[no-any-return]

    def fire_until(state: RunState | None, now_ms: int) -> RunState | None:
        for _ in range(1000):  # a bound: a core that keeps setting due timers would loop forever
            timer = next_timer(state) if state is not None else None
            if state is None or timer is None or timer > now_ms:
                return state
            state = take(due(state, timer, catalog, mode, **kwargs))
        raise RecordingError("the scheduler core kept firing timers: replay stopped")

    state = take(decide(None, _request(rec, created), 0, _ms(created), catalog, **kwargs))
    for e in rec.events:
        if e.source == SCHEDULER:
            continue
        state = fire_until(state, _ms(e))
        state = take(decide(state, _resolved(rec, e), 0, _ms(e), catalog, **kwargs))
    if rec.events:
        state = fire_until(state, _ms(rec.events[-1]))
    recorded = [decision_of(e) for e in rec.events if e.source == SCHEDULER and e.event in DECISIONS]
    replayed = [decision_of(e) for e in outputs if e.event in DECISIONS]
    return CoreReplay(recorded, replayed, state, _diff(recorded, replayed))


def _diff(recorded: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> list[str]:
    lines = []
    for i in range(max(len(recorded), len(replayed))):
        was = recorded[i] if i < len(recorded) else None
        now = replayed[i] if i < len(replayed) else None
        if was != now:
            lines.append(
                f"decision {i + 1}: recorded {json.dumps(was)}\n            today    {json.dumps(now)}"
            )
    return lines
