"""The console's pure parts: the cost chart's geometry and the timeline's link from a retry to its reason."""

from __future__ import annotations

from services.api.console.chart import OTHERS, stacked
from services.api.console.timeline import rows

DAYS = ["2025-03-01", "2025-03-02", "2025-03-03"]


def test_each_day_stacks_its_groups_and_the_tallest_day_fills_the_plot() -> None:
    chart = stacked(DAYS, {"acme": {DAYS[0]: 2_000_000, DAYS[2]: 1_000_000}, "globex": {DAYS[0]: 2_000_000}})
    first = [b for b in chart.bars if b.title.startswith(DAYS[0])]
    assert len(first) == 2 and first[1].y + first[1].height == first[0].y  # stacked, no gap
    top = min(b.y for b in first)
    assert top == 10  # 4 USD on day one is the peak: it reaches the top of the plot
    assert [b.title for b in chart.bars if b.title.startswith(DAYS[1])] == []  # nothing spent: no bar
    assert chart.y_ticks[-1][1] == "$4.000000"
    assert [g for _, g in chart.legend] == ["acme", "globex"]


def test_groups_beyond_the_top_ones_are_summed_as_others() -> None:
    spend = {f"t{i}": {DAYS[0]: 1000 * (i + 1)} for i in range(8)}
    chart = stacked(DAYS, spend, top_n=3)
    assert [g for _, g in chart.legend] == ["t7", "t6", "t5", OTHERS]
    [others] = [b for b in chart.bars if OTHERS in b.title]
    assert others.title.endswith("$0.015000")  # 1+2+3+4+5 thousand micro-dollars


def _event(kind: str, step: str | None = None, failure: str | None = None) -> dict:
    return {"kind": kind, "step": step, "call": None, "failure_class": failure, "body": {}}


def test_a_retry_points_at_the_last_failure_of_its_own_step() -> None:
    found = rows(
        [
            _event("created"),
            _event("tool_failed", "log_to_crm", "transient"),
            _event("tool_failed", "send_email", "unknown_outcome"),
            _event("retry_scheduled", "send_email", "unknown_outcome"),
            _event("tool_succeeded", "send_email"),
        ]
    )
    assert found[3].because == found[2].anchor == "ev-2"
    assert [r.because for r in found if r.event["kind"] != "retry_scheduled"] == [None] * 4
