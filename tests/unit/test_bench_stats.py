"""The bench's arithmetic: percentiles, latencies, hand-off gaps and throughput from marks."""

from __future__ import annotations

import math

import pytest

from bench.stats import (
    Mark,
    duplicates,
    handoff_gaps,
    hop_breakdown,
    percentile,
    phase_figures,
    run_latencies,
    step_latencies,
    summary_ms,
    sustained_rate,
)


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 50) == 25.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 99) == pytest.approx(39.7)
    assert math.isnan(percentile([], 50))


def test_summary_is_in_milliseconds_and_empty_is_none() -> None:
    s = summary_ms([0.001, 0.003])
    assert (s["n"], s["p50"], s["max"]) == (2, 2.0, 3.0)
    assert summary_ms([])["p50"] is None


def run_marks(run: str, t0: float) -> list[Mark]:
    """A 3-step run: draft 10 ms, gap 5 ms, crm 20 ms (after a failed attempt), gap 7 ms, send 30 ms."""
    return [
        Mark(run, None, "created", t0),
        Mark(run, "draft", "step_started", t0 + 0.010),
        Mark(run, "draft", "step_committed", t0 + 0.020),
        Mark(run, "crm", "step_started", t0 + 0.025),
        Mark(run, "crm", "tool_failed", t0 + 0.030),
        Mark(run, "crm", "step_started", t0 + 0.130),  # the retry: not a hand-off
        Mark(run, "crm", "step_committed", t0 + 0.150),
        Mark(run, "send", "step_started", t0 + 0.157),
        Mark(run, "send", "step_committed", t0 + 0.187),
        Mark(run, None, "completed", t0 + 0.190),
    ]


def test_step_latency_counts_the_attempt_that_committed() -> None:
    got = sorted(round(x, 3) for x in step_latencies(run_marks("r1", 100.0)))
    assert got == [0.01, 0.02, 0.03]


def test_handoff_gap_is_commit_to_the_next_start_only() -> None:
    got = sorted(round(x, 3) for x in handoff_gaps(run_marks("r1", 100.0)))
    assert got == [0.005, 0.007]


def test_marks_out_of_order_across_runs_are_sorted_per_run() -> None:
    marks = run_marks("a", 100.0) + run_marks("b", 50.0)
    marks.reverse()
    assert len(step_latencies(marks)) == 6
    assert len(handoff_gaps(marks)) == 4


def test_run_latency_from_submit_to_the_first_completed_of_submitted_runs_only() -> None:
    marks = run_marks("a", 100.0) + [Mark("a", None, "completed", 200.0)] + run_marks("other", 100.0)
    got = run_latencies({"a": 99.99}, marks)
    assert [round(x, 3) for x in got] == [0.2]


def test_sustained_rate_leaves_out_ramp_and_tail() -> None:
    steady = [10.0 + i * 0.01 for i in range(100)]  # 100/s in the middle
    times = [0.0] * 10 + steady + [60.0] * 10  # a slow start and a straggler
    assert sustained_rate(times, trim=0.1) == pytest.approx(100.0, rel=0.02)
    assert sustained_rate([1.0, 2.0]) is None


def test_phase_figures_count_only_submitted_runs() -> None:
    marks = run_marks("a", 100.0) + run_marks("stranger", 100.0)
    figs = phase_figures({"a": 100.0}, marks)
    assert (figs["runs"], figs["completed"], figs["committed_steps"]) == (1, 1, 3)
    assert figs["step_latency_ms"]["n"] == 6  # step latencies come from all marks given


def test_duplicates_are_deliveries_beyond_the_first_per_recipient() -> None:
    assert duplicates(["a", "b", "a", "a", "c"]) == {"deliveries": 5, "distinct": 3, "duplicates": 2}
    assert duplicates([]) == {"deliveries": 0, "distinct": 0, "duplicates": 0}


def test_hop_breakdown_times_each_pair_of_consecutive_events_of_a_run() -> None:
    submitted = {f"r{i}": 100.0 for i in range(3)}
    marks = []
    for i in range(3):
        run = f"r{i}"
        marks += [
            Mark(run, None, "created", 100.010),
            Mark(run, "a", "step_started", 100.030 + i / 1000),
            Mark(run, "a", "step_committed", 100.100),
        ]
    hops = hop_breakdown(submitted, marks)
    assert list(hops) == [
        "submit -> created",
        "created -> a:step_started",
        "a:step_started -> a:step_committed",
    ]
    assert hops["submit -> created"]["p50"] == pytest.approx(10.0)
    assert hops["created -> a:step_started"]["p50"] == pytest.approx(21.0)
    assert hops["a:step_started -> a:step_committed"]["max"] == pytest.approx(70.0)
    assert hop_breakdown({"other": 1.0}, marks) == {}  # runs not submitted in the phase are left out
