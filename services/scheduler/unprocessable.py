"""A run whose timer or message cannot be processed is held in quarantine, with the reason (pure).

A workflow version retired, or a step removed, while runs of it are in flight makes every decision
about those runs raise. Letting that escape would end the process, and its partitions would take the
next instance down with them: instead the one run is quarantined, for a human to resolve.
"""

from __future__ import annotations

from dataclasses import replace

from keel import events as ev
from keel.contracts import QuarantineDetail, RunDetail, RunEvent
from services.scheduler.core import Decision
from services.scheduler.state import QUARANTINED, TERMINAL, RunState

# At most this much of an error's text goes into the event; the rest is in the scheduler's log.
MAX_REASON = 1000


def case_id(run_id: str) -> str:
    return f"{run_id}:unprocessable"


def hold(state: RunState, what: str, error: BaseException, now_ms: int) -> Decision:
    """Quarantine `state` because processing `what` (a timer, a message) raised `error`.

    A run already held or ended is left as it is: the same failure on every later message of it must
    not open a case each time.
    """
    if state.status == QUARANTINED or state.status in TERMINAL:
        return Decision(state, [])
    reason = f"cannot process {what}: {type(error).__name__}: {error}"[:MAX_REASON]
    held = replace(state, status=QUARANTINED)
    event = RunEvent(
        event_id=ev.event_id(state.run_id, ev.QUARANTINED, extra="unprocessable"),
        run_id=state.run_id,
        task_id=state.task_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        event=ev.QUARANTINED,
        ts=ev.at_ms(now_ms),
        error=reason,
        source="scheduler",
        trace_id=state.trace_id,
        run=RunDetail(status=QUARANTINED, reason=reason),
        quarantine=QuarantineDetail(case_id=case_id(state.run_id), reason=reason),
    )
    return Decision(held, [event])
