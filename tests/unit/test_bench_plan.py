"""The bench's plan, pacing, API share, fault schedule, /proc parsing and reporting: pure parts."""

from __future__ import annotations

import pytest

from bench.load import schedule, via_api
from bench.plan import Phase, build_plan, lead
from bench.procstat import cpu_seconds_of_stat, peak_rss_mib_of_status
from bench.report import outcomes_of, overhead
from bench.sims import timeout_rules
from bench.stats import Mark


def test_plan_is_warmup_paced_flat_out_then_duplicates() -> None:
    plan = build_plan(2000, [5.0, 20.0], 20.0, 100)
    assert [p.name for p in plan] == ["warmup", "paced_5_per_s", "paced_20_per_s", "flat_out", "duplicates"]
    assert [p.count for p in plan] == [5, 100, 400, 2000, 100]
    assert not plan[0].report
    assert [p.measure_cpu for p in plan] == [False, False, False, True, False]
    assert plan[-1].timeout_every == 10 and plan[-1].rate is None
    assert Phase.from_dict(plan[1].to_dict()) == plan[1]
    assert "duplicates" not in [p.name for p in build_plan(200, [5.0], 8.0, 0)]


@pytest.mark.parametrize("share,count,expected", [(0.1, 100, 10), (0.25, 8, 2), (0.0, 50, 0), (1.0, 7, 7)])
def test_api_share_is_spread_evenly(share: float, count: int, expected: int) -> None:
    picks = [i for i in range(count) if via_api(i, share)]
    assert len(picks) == expected
    if expected > 1:
        gaps = {b - a for a, b in zip(picks, picks[1:], strict=False)}
        assert max(gaps) - min(gaps) <= 1


def test_schedule_paces_or_releases_everything_at_once() -> None:
    assert schedule(3, 20.0) == [0.0, 0.05, 0.1]
    assert schedule(3, None) == [0.0, 0.0, 0.0]


def test_each_run_has_its_own_recipient() -> None:
    assert lead("r-1")["lead_email"] != lead("r-2")["lead_email"]


def test_timeout_rules_fire_on_every_tenth_send() -> None:
    rules = timeout_rules(30, 10, 6500)
    assert [r["after"] for r in rules] == [9, 19, 29]
    assert all(r["times"] == 1 and r["kind"] == "accept_then_timeout" and r["ms"] == 6500 for r in rules)
    # The simulator's schedule: every rule still skipping counts each send; the first due one fires.
    to_skip = [r["after"] for r in rules]
    fired = []
    for send in range(1, 31):
        chosen = None
        for i, left in enumerate(to_skip):
            if left is None:
                continue
            if left:
                to_skip[i] = left - 1
            elif chosen is None:
                chosen = i
        if chosen is not None:
            to_skip[chosen] = None
            fired.append(send)
    assert fired == [10, 20, 30]


def test_proc_stat_and_status_parsing() -> None:
    # The command name may hold spaces and parentheses; utime/stime are fields 14 and 15.
    stat = "4242 (python (x) y) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 100 0 0"
    assert cpu_seconds_of_stat(stat, ticks=100) == pytest.approx(4.0)
    status = "Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t   102400 kB\nVmRSS:\t 51200 kB\n"
    assert peak_rss_mib_of_status(status) == 100.0
    assert peak_rss_mib_of_status("Name:\tx\n") is None


def test_outcomes_from_marks() -> None:
    marks = [
        Mark("a", None, "completed", 2.0),
        Mark("b", None, "failed", 3.0),
        Mark("x", None, "completed", 1),
    ]
    assert outcomes_of({"a": 0.0, "b": 0.0, "c": 0.0}, marks) == {
        "completed": 1,
        "failed": 1,
        "unfinished": 1,
    }


def test_overhead_is_keel_over_the_floor_at_the_same_rate() -> None:
    result = {
        "systems": {
            "keel": {
                "phases": {
                    "paced_5_per_s": {"step_latency_ms": {"p50": 40.0}, "handoff_gap_ms": {"p50": 12.0}}
                }
            }
        },
        "floor": {
            "chain": {"hops": 4, "paced_5_per_s": {"latency_ms": {"p50": 16.0}}},
            "one_hop": {"hops": 1, "paced_5_per_s": {"latency_ms": {"p50": 4.0}}},
        },
    }
    assert overhead(result) == {
        "paced_5_per_s": {"step_p50_over_chain_p50": 2.5, "gap_p50_over_hop_p50": 3.0}
    }


def test_every_run_id_the_plan_makes_is_a_valid_keel_run_id() -> None:
    from bench.plan import run_ids_prefix
    from keel.intake import run_id_problem

    for phase in build_plan(2000, [5.0, 20.0], 20.0, 100):
        run_id = f"{run_ids_prefix('bench-20261130T155101Z-keel', phase)}-{phase.count - 1}"
        assert run_id_problem(run_id) is None, run_id
