"""The lifecycle validator: accepts real logs, names what is wrong with broken ones."""

from __future__ import annotations

from datetime import UTC, datetime

from keel.contracts import RunEvent
from keel.lifecycle import lifecycle_problems


def e(kind: str, step: str | None = None, attempt: int = 0, source: str = "scheduler") -> RunEvent:
    return RunEvent(
        event_id=f"{kind}{step}{attempt}",
        run_id="r",
        tenant_id="t",
        workflow="w",
        step=step,
        event=kind,
        ts=datetime.now(UTC),
        attempt=attempt,
        source=source,
    )


GOOD = [
    e("created"),
    e("scheduled"),
    e("started"),
    e("step_started", "a", 1, "executor"),
    e("tool_called", "a", 1, "adapters"),
    e("tool_succeeded", "a", 1, "adapters"),
    e("step_committed", "a", 1, "ledger"),
    e("completed"),
]


def test_a_valid_log_has_no_problems_even_with_late_worker_facts():
    assert lifecycle_problems([*GOOD, e("tool_failed", "a", 2, "adapters")], {"a"}) == []


def test_broken_logs_are_named():
    assert "does not start with created" in lifecycle_problems(GOOD[1:], {"a"})[0]
    twice = [*GOOD[:-1], e("step_committed", "a", 2, "ledger"), GOOD[-1]]
    assert lifecycle_problems(twice, {"a"}) == ["side-effect step a committed 2 times"]
    early = [*GOOD[:3], e("completed"), *GOOD[3:-1]]
    assert any("completed before steps committed" in p for p in lifecycle_problems(early, {"a"}))
    assert any(
        "after the run ended" in p for p in lifecycle_problems([*GOOD, e("retry_scheduled", "a", 1)], {"a"})
    )
    assert any("ended more than once" in p for p in lifecycle_problems([*GOOD, e("failed")], {"a"}))


def test_a_commit_reissued_by_the_ledger_is_not_a_second_commit():
    reissued = e("step_committed", "a", 2, "ledger")
    reissued = RunEvent.from_dict(
        {**reissued.to_dict(), "commit": {"committed_at": datetime.now(UTC), "duplicate": True}}
    )
    assert lifecycle_problems([*GOOD, reissued], {"a"}) == []
