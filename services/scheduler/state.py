"""The scheduler's state of one run, and its JSON form in the scheduler's changelog topic."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Step statuses
PENDING, DISPATCHED, WAITING_RETRY, COMMITTED, FAILED = (
    "pending",
    "dispatched",
    "waiting_retry",
    "committed",
    "failed",
)
# Run statuses
RUNNING, QUARANTINED = "running", "quarantined"
COMPLETED, RUN_FAILED, CANCELED = "completed", "failed", "canceled"
TERMINAL = frozenset({COMPLETED, RUN_FAILED, CANCELED})


@dataclass
class StepState:
    status: str = PENDING
    attempt: int = 0
    fire_at: int | None = None  # ms since epoch: when the next attempt is due (a durable retry timer)
    deadline: int | None = None  # ms since epoch: when the current attempt counts as lost
    output: Any = None
    external_id: str | None = None


@dataclass
class RunState:
    run_id: str
    tenant_id: str
    workflow: str
    workflow_version: int
    partition: int
    input: dict[str, Any]
    task_id: str | None = None
    trace_id: str | None = None
    requested_by: str | None = None
    status: str = RUNNING
    steps: dict[str, StepState] = field(default_factory=dict)
    ended_at: int | None = None  # ms since epoch: when the run became terminal (retention counts from it)

    def committed(self) -> set[str]:
        return {n for n, s in self.steps.items() if s.status == COMMITTED}

    def started(self) -> set[str]:
        return {n for n, s in self.steps.items() if s.status != PENDING}

    def outputs(self) -> dict[str, Any]:
        return {n: s.output for n, s in self.steps.items() if s.status == COMMITTED}

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunState:
        raw = json.loads(data)
        raw["steps"] = {name: StepState(**s) for name, s in raw["steps"].items()}
        return cls(**raw)
