"""The scale curves' pure decisions: where the knee is, and how long a kill stalled the commits."""

from __future__ import annotations

from typing import Any

from bench.scale import knee_reached, stall


def figs(completed: int, runs: int, steps_per_s: float | None, p99_ms: float) -> dict[str, Any]:
    return {
        "completed": completed,
        "runs": runs,
        "steps_per_s_sustained": steps_per_s,
        "run_latency_ms": {"p99": p99_ms},
    }


def test_below_the_knee_every_run_ends_at_the_offered_rate() -> None:
    assert not knee_reached(figs(200, 200, 59.0, 800.0), offered_runs_per_s=20)


def test_knee_when_runs_are_left_over_or_steps_lag_or_latency_explodes() -> None:
    assert knee_reached(figs(190, 200, 60.0, 800.0), 20)
    assert knee_reached(figs(200, 200, 50.0, 800.0), 20)  # under 90% of 3 steps x 20 runs/s
    assert knee_reached(figs(200, 200, 60.0, 12_000.0), 20)
    assert knee_reached(figs(200, 200, None, 800.0), 20)


def test_stall_splits_gaps_at_the_kill() -> None:
    commits = [0.0, 0.1, 0.2, 0.5, 0.6, 3.6, 3.7]  # killed at 1.0: the 0.6 -> 3.6 gap is the stall
    assert stall(commits, at=1.0) == {"longest_gap_before_s": 0.3, "longest_gap_after_s": 3.0}
    assert stall([], at=1.0) == {"longest_gap_before_s": None, "longest_gap_after_s": None}
