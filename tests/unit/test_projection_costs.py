"""The projector's cost rows: every fact with a cost, its own integer micro-dollars, its task and UTC day;
a fact older than cost_micros counted from its USD, rounded up."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from keel.contracts import RunEvent, ToolDetail
from services.projector.core import Position, project

AT = Position("keel.run-events", 0, 1)


def fact(kind: str, micros: int | None, usd: float | None, ts: datetime, **f: object) -> RunEvent:
    return RunEvent(
        event_id=f"r:{kind}:{micros}",
        run_id="r",
        task_id="ticket-7",
        agent_id="triage_v1",
        tenant_id="acme",
        workflow="support",
        step="triage",
        event=kind,
        ts=ts,
        attempt=1,
        cost_usd_est=usd,
        cost_micros=micros,
        **f,  # type: ignore[arg-type]
    )


def costs(e: RunEvent) -> list[dict[str, object]]:
    return [c.values for c in project(e, AT).changes if c.table == "costs"]


def test_a_cost_row_carries_the_facts_own_micros_task_and_utc_day() -> None:
    # 0.1 + 0.2 as floats: its own micros say 300000; the float would round up to 300001.
    late = datetime(2026, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))  # 1 March 22:30 UTC
    [row] = costs(fact("model_called", 300_000, 0.1 + 0.2, late, model="sim-small"))
    assert row["cost_micros"] == 300_000 and row["day"] == date(2026, 3, 1)
    assert (row["task_id"], row["agent_id"], row["model"], row["step"]) == (
        "ticket-7",
        "triage_v1",
        "sim-small",
        "triage",
    )


def test_a_paid_tool_called_and_a_paid_failure_are_costs() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    [tool] = costs(fact("tool_called", 12_500, 0.0125, now, tool=ToolDetail(tool="sms@1")))
    assert tool["cost_micros"] == 12_500 and tool["cost_usd"] == Decimal("0.0125")
    [failed] = costs(fact("step_failed", 7, None, now))  # micros alone: its USD from them, exactly
    assert failed["cost_micros"] == 7 and failed["cost_usd"] == Decimal("0.000007")


def test_a_fact_older_than_cost_micros_is_counted_from_its_usd_rounded_up() -> None:
    [row] = costs(fact("model_called", None, 0.0000012, datetime(2026, 3, 1, tzinfo=UTC), model="m"))
    assert row["cost_micros"] == 2


def test_a_fact_without_a_cost_is_no_cost_row() -> None:
    assert costs(fact("tool_succeeded", None, None, datetime(2026, 3, 1, tzinfo=UTC))) == []
