"""Builders for the scheduler shell tests: a one-step workflow, requests, facts, run ids by partition."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from keel import events as ev
from keel.contracts import CommitDetail, RunEvent, RunRequested
from keel.partitioner import partition_for
from keel.workflows import Catalog, WorkflowSpec, parse_workflow

STEP = "draft"


def one_step(name: str = "one_step", version: int = 1, timeout_ms: int = 1000) -> WorkflowSpec:
    """One llm step with a short deadline, so a test can put it past due quickly."""
    return parse_workflow(
        {
            "name": name,
            "version": version,
            "input": {"topic": "string"},
            "steps": [
                {
                    "name": STEP,
                    "kind": "llm",
                    "model": "sim-small",
                    "prompt": "Write about {{ input.topic }}.",
                    "timeout_ms": timeout_ms,
                    "retry": {"max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 200},
                }
            ],
        }
    )


def catalog(*specs: WorkflowSpec) -> Catalog:
    return Catalog({(s.name, s.version): s for s in specs})


def request(
    run_id: str, workflow: str = "one_step", version: int | None = None, at: datetime | None = None
) -> RunRequested:
    return RunRequested(
        request_id=f"req-{run_id}",
        run_id=run_id,
        tenant_id="acme",
        workflow=workflow,
        workflow_version=version,
        input_json=json.dumps({"topic": "keel"}),
        requested_at=at or datetime.now(UTC),
    )


def fact(run_id: str, kind: str, attempt: int = 1, workflow: str = "one_step", step: str = STEP) -> RunEvent:
    """A fact from the executor about the step's attempt (step_started, step_committed, ...)."""
    committed = kind == ev.STEP_COMMITTED
    return RunEvent(
        event_id=f"{run_id}:{step}:{attempt}:{kind}",
        run_id=run_id,
        tenant_id="acme",
        workflow=workflow,
        workflow_version=1,
        step=step,
        event=kind,
        ts=datetime.now(UTC),
        attempt=attempt,
        source="executor",
        output_json=json.dumps({"text": "hello"}) if committed else None,
        commit=CommitDetail(committed_at=datetime.now(UTC)) if committed else None,
    )


def run_id_on(partition: int, partitions: int, prefix: str = "run") -> str:
    """A run id whose own partition (Kafka's default partitioner) is `partition`."""
    for i in range(10_000):
        candidate = f"{prefix}-{i}"
        if partition_for(candidate, partitions) == partition:
            return candidate
    raise AssertionError("no run id found")  # pragma: no cover - murmur2 spreads keys evenly


def key_on(partition: int, partitions: int, not_key: str) -> str:
    """A message key other than `not_key` that Kafka's default partitioner puts on `partition`."""
    return run_id_on(partition, partitions, prefix=f"other-than-{not_key}")
