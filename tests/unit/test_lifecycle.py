"""The lifecycle validator: accepts real logs, names what is wrong with broken ones."""

from __future__ import annotations

from datetime import UTC, datetime

from keel.contracts import RunEvent, ToolDetail
from keel.lifecycle import lifecycle_problems


def e(
    kind: str,
    step: str | None = None,
    attempt: int = 0,
    source: str = "scheduler",
    tool: ToolDetail | None = None,
) -> RunEvent:
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
        tool=tool,
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
    late = [e("tool_called", "a", 2, "adapters"), e("tool_failed", "a", 2, "adapters")]
    assert lifecycle_problems([*GOOD, *late], {"a"}) == []


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


def blocked(reason: str, external_id: str | None = None) -> ToolDetail:
    return ToolDetail(
        tool="email@1", failure_class="transient", blocked_reason=reason, external_id=external_id
    )


def test_a_result_without_its_call_is_valid_only_when_the_provider_was_not_called():
    before = GOOD[:4]
    deadline = e("tool_failed", "a", 1, "adapters", blocked("deadline passed"))
    committed = e("tool_succeeded", "a", 1, "adapters", ToolDetail(tool="email@1", already_committed=True))
    assert lifecycle_problems([*before, deadline], {"a"}) == []
    assert lifecycle_problems([*before, committed], {"a"}) == []
    assert lifecycle_problems([*before, e("tool_succeeded", "a", 1, "adapters")], {"a"}) == [
        "a attempt 1: tool_succeeded without tool_called"
    ]


def test_one_result_per_attempt_and_blocked_results_name_no_provider_id():
    twice = [*GOOD[:6], e("tool_failed", "a", 1, "adapters")]
    assert lifecycle_problems(twice, {"a"}) == ["a attempt 1: 2 tool results"]
    lying = [*GOOD[:5], e("tool_failed", "a", 1, "adapters", blocked("circuit open", "msg_1"))]
    assert lifecycle_problems(lying, {"a"}) == ["a attempt 1: blocked, yet names provider id"]


def test_a_commit_reissued_by_the_ledger_is_not_a_second_commit():
    reissued = e("step_committed", "a", 2, "ledger")
    reissued = RunEvent.from_dict(
        {**reissued.to_dict(), "commit": {"committed_at": datetime.now(UTC), "duplicate": True}}
    )
    assert lifecycle_problems([*GOOD, reissued], {"a"}) == []
