"""Fair dispatch, the run's side (docs/tenancy.md section 6): what one run holds of its tenant's slots,
holding the attempts a decision issued beyond them, and releasing a held attempt. Pure: the tenants'
counts and queues are `services/scheduler/ledger.py`'s, the wiring the shell's.

An attempt counts against its tenant while it is in flight on a running or canceling run: from its
reservation (a paid attempt reserves its worst case first, RESERVING) or, unpaid, its command
(DISPATCHED) until its outcome. The gate stands before the reservation, so a held paid attempt holds no
budget and puts nothing on the enforcer's queue ahead of another tenant's.
A paused run gives its slots back (its calls settle, and no new attempt starts until the resume); a
quarantined or ended one has none. A held attempt is a unit WAITING_RETRY with no timer and a
`queued_at`: every rule of the core already reads that as "not in flight, nothing sent" (a cancel
cancels it, a pause leaves it, no deadline fires), and its `attempt` is the one its command will carry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from keel import events as ev
from keel.contracts import BudgetCommand, StepCommand
from keel.workflows import WorkflowSpec
from services.scheduler import budgets
from services.scheduler.budgets import BudgetPolicy
from services.scheduler.state import (
    CANCELING,
    DISPATCHED,
    RESERVING,
    RUNNING,
    WAITING_RETRY,
    RunState,
    StepState,
)
from services.scheduler.units import command, units_of
from services.scheduler.verdicts import Decision, Emitted, event

# Held attempts: (queued_at, step, call) — the queue order, and the unit it names.
Held = tuple[int, str, str]

IN_FLIGHT = (DISPATCHED, RESERVING)


@dataclass(frozen=True)
class TenantLimit:
    max_inflight: int | None = None  # None: the default limit times the weight
    weight: int = 1


@dataclass(frozen=True)
class FairPolicy:
    """Per-tenant limits on attempts in flight, per scheduler instance. `default_max_inflight` 0: no limit
    (then nothing is ever held)."""

    default_max_inflight: int = 0
    tenants: Mapping[str, TenantLimit] = field(default_factory=dict)

    @property
    def on(self) -> bool:
        return self.default_max_inflight > 0 or any(t.max_inflight for t in self.tenants.values())

    def limit(self, tenant: str) -> int | None:
        """The tenant's ceiling on this instance; None: unlimited. A weight scales the default share."""
        own = self.tenants.get(tenant)
        if own is not None and own.max_inflight is not None:
            return own.max_inflight or None
        if self.default_max_inflight <= 0:
            return None
        return self.default_max_inflight * self.weight(tenant)

    def weight(self, tenant: str) -> int:
        own = self.tenants.get(tenant)
        return own.weight if own is not None else 1


def parse_limits(default_max_inflight: int, raw: str) -> FairPolicy:
    """KEEL_TENANT_LIMITS: `{"<tenant>": {"max_inflight": int >= 0, "weight": int >= 1}, ...}`. Anything
    else is refused with the reason (the scheduler does not start on a limit it cannot read)."""
    if default_max_inflight < 0:
        raise ValueError(f"KEEL_TENANT_MAX_INFLIGHT must be 0 (no limit) or more, not {default_max_inflight}")
    if not raw.strip():
        return FairPolicy(default_max_inflight)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"KEEL_TENANT_LIMITS is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError('KEEL_TENANT_LIMITS must be a JSON object {"<tenant>": {"max_inflight", "weight"}}')
    tenants = {}
    for tenant, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - {"max_inflight", "weight"}:
            raise ValueError(
                f"KEEL_TENANT_LIMITS[{tenant!r}] must be an object with max_inflight and/or weight, "
                f"not {entry!r}"
            )
        limit, weight = entry.get("max_inflight"), entry.get("weight", 1)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"KEEL_TENANT_LIMITS[{tenant!r}].max_inflight must be an integer >= 0 (0: none)")
        if type(weight) is not int or weight < 1:
            raise ValueError(f"KEEL_TENANT_LIMITS[{tenant!r}].weight must be an integer >= 1")
        tenants[tenant] = TenantLimit(limit, weight)
    return FairPolicy(default_max_inflight, tenants)


@dataclass(frozen=True)
class Footprint:
    """What one run holds of its tenant's slots, and its attempts waiting for one."""

    tenant: str
    inflight: int = 0
    held: tuple[Held, ...] = ()


def footprint(state: RunState | None) -> Footprint | None:
    if state is None:
        return None
    inflight = 0
    if state.status in (RUNNING, CANCELING):
        inflight = sum(1 for s in state.all_units() if s.status in IN_FLIGHT)
    held: list[Held] = []
    if state.status == RUNNING:  # a paused run's held attempts wait for the resume, not for a slot
        for name, step in state.steps.items():
            units = step.agent.units().items() if step.agent is not None else [("", step)]
            held += [(s.queued_at or 0, name, call) for call, s in units if _is_held(s)]
    return Footprint(state.tenant_id, inflight, tuple(sorted(held)))


def _is_held(sub: StepState) -> bool:
    return sub.status == WAITING_RETRY and sub.queued_at is not None and sub.fire_at is None


def starts(before: RunState | None, decision: Decision) -> int:
    """How many of the decision's outputs put a unit in flight that was not: see `_starts`."""
    return sum(1 for out in decision.outputs if _starts(before, out))


def _starts(before: RunState | None, out: Emitted) -> bool:
    """A step command, or the first reserve of a paid attempt; not the command that follows its
    reservation's grant, nor a reserve asked again (that unit is in flight already)."""
    if isinstance(out, BudgetCommand):
        if out.action != "reserve" or out.step is None:
            return False
    elif not isinstance(out, StepCommand):
        return False
    if before is None or out.step not in before.steps:
        return True
    try:
        was = _sub(before, out.step, out.call or "")
    except ValueError:  # a sub-step of a turn that had not begun
        return True
    return not (was.status == RESERVING and was.attempt == out.attempt)


def hold(decision: Decision, room: int | None, now_ms: int, before: RunState | None = None) -> Decision:
    """Let the first `room` attempts a running run's decision starts go (None: all) and hold the rest:
    each becomes a `step_queued` fact in place of its command (or, paid, its reserve), its unit waiting
    for a slot. `before`: the run's state before the decision, which tells a start from a continuation."""
    state = decision.state
    if room is None or state is None or state.status != RUNNING:
        return decision
    outputs: list[Emitted] = []
    for out in decision.outputs:
        if not _starts(before, out):
            outputs.append(out)
        elif room > 0:
            room -= 1
            outputs.append(out)
        else:
            assert isinstance(out, StepCommand | BudgetCommand)
            outputs.append(_hold(state, out, now_ms))
    return Decision(state, outputs)


def _hold(state: RunState, out: StepCommand | BudgetCommand, now_ms: int) -> Emitted:
    step = out.step or ""
    sub = _sub(state, step, out.call or "")
    sub.status, sub.deadline, sub.fire_at, sub.queued_at = WAITING_RETRY, None, None, now_ms
    if isinstance(out, BudgetCommand):  # nothing reserved yet: its release reserves
        sub.reserve_since, sub.reserve_tries = None, 0
    return event(state, ev.STEP_QUEUED, now_ms, step, out.attempt, call=out.call)


def _sub(state: RunState, step: str, call: str) -> StepState:
    found = state.steps[step]
    if not call:
        return found
    if found.agent is None or call not in found.agent.units():
        raise ValueError(f"step {step} has no sub-step {call} in its current turn")
    return found.agent.units()[call]


def release(
    state: RunState, spec: WorkflowSpec, held: Held, now_ms: int, policy: BudgetPolicy | None = None
) -> Decision:
    """A slot of the run's tenant is free: the held attempt goes out after a `step_released` fact — its
    reserve when it costs money and reserved nothing yet, else its command. Nothing, if the attempt is no
    longer held (canceled, paused, already released)."""
    queued_at, step, call = held
    if state.status != RUNNING or step not in state.steps:
        return Decision(state, [])
    for unit, sub in units_of(state, spec.step(step)):
        if (unit.call or "") == call and _is_held(sub) and sub.queued_at == queued_at:
            sub.queued_at = None
            waited = event(state, ev.STEP_RELEASED, now_ms, step, sub.attempt, call=unit.call)
            if sub.reserve_since is None:  # held before its reservation (or unpaid): begin it
                return Decision(state, [waited, *budgets.begin(state, unit, sub.attempt, now_ms, policy)])
            return Decision(state, [waited, command(state, unit, sub.attempt, now_ms)])
    return Decision(state, [])
