"""The dashboard's pure core: what each run event adds to the figures, and the time windows."""

from __future__ import annotations

from datetime import UTC, datetime

from dashboard_stream import figures, stream

from keel import events as ev
from keel.contracts import RetryDetail, RunEvent, StepDetail, ToolDetail
from services.dashboard.core import Window, cost_micros_of, fold, tally

T0 = datetime(2026, 3, 1, 10, 17, 42, 123000, tzinfo=UTC)


def event(kind: str, **fields: object) -> RunEvent:
    return RunEvent(
        event_id=f"e-{kind}", run_id="r", tenant_id="acme", workflow="wf", event=kind, ts=T0, **fields
    )  # type: ignore[arg-type]


def test_a_run_level_fact_counts_its_status_in_its_own_minute() -> None:
    t = tally(event(ev.COMPLETED))
    assert t.status is not None
    assert (t.status.minute, t.status.status) == (datetime(2026, 3, 1, 10, 17, tzinfo=UTC), "completed")
    assert t.spend is None and t.failures == ()


def test_quarantined_counts_as_a_run_status_even_though_it_names_a_step() -> None:
    t = tally(event(ev.QUARANTINED, step="send"))
    assert t.status is not None and t.status.status == "quarantined"


def test_spend_is_the_facts_micros_in_its_tenants_hour() -> None:
    t = tally(event(ev.MODEL_CALLED, step="draft", cost_micros=1234, cost_usd_est=99.0))
    assert t.spend is not None
    assert (t.spend.tenant_id, t.spend.hour, t.spend.cost_micros) == (
        "acme",
        datetime(2026, 3, 1, 10, tzinfo=UTC),
        1234,
    )


def test_an_old_fact_without_micros_counts_its_usd_rounded_up() -> None:
    assert cost_micros_of(event(ev.MODEL_CALLED, cost_usd_est=0.0012345)) == 1235
    assert cost_micros_of(event(ev.MODEL_CALLED, cost_usd_est=float("nan"))) is None
    assert tally(event(ev.MODEL_CALLED, cost_micros=0)).spend is None


def test_failure_classes_from_tool_step_and_retry_each_once_per_event() -> None:
    retry = RetryDetail(failure_class="transient", reason="x", delay_ms=1, fire_at=T0, next_attempt=2)
    both = event(
        ev.TOOL_FAILED,
        tool=ToolDetail(tool="email", failure_class="transient"),
        step_detail=StepDetail(failure_class="transient"),
    )
    assert [(f.failure_class, f.event) for f in tally(both).failures] == [("transient", "tool_failed")]
    assert [f.failure_class for f in tally(event(ev.RETRY_SCHEDULED, retry=retry)).failures] == ["transient"]
    assert tally(event(ev.TOOL_SUCCEEDED, tool=ToolDetail(tool="email"))).empty


def test_windows_include_the_current_partial_bucket() -> None:
    assert Window.last_minutes(T0, 1).since == datetime(2026, 3, 1, 10, 17, tzinfo=UTC)
    assert Window.last_minutes(T0, 60).since == datetime(2026, 3, 1, 9, 18, tzinfo=UTC)
    assert Window.last_hours(T0, 2).since == datetime(2026, 3, 1, 9, tzinfo=UTC)


def test_folding_the_tallies_gives_the_figures_computed_directly_from_the_events() -> None:
    events = stream("u", 30, T0)
    events += events[:10]  # copies of the same event ids count once
    add = fold(map(tally, events))
    truth = figures(events)
    assert (add.runs, add.spend, add.failures) == (truth["runs"], truth["spend"], truth["failures"])
    assert sum(add.failures.values()) > 10 and len(add.spend) > 3 and add.runs  # every figure exercised
    assert sum(add.spend_events.values()) == sum(
        1 for e in {e.event_id: e for e in events}.values() if e.event == "model_called"
    )
