"""The circuit breaker core: thresholds in a sliding window, cool-down, probes, transitions, threads."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from keel.breaker import BreakerPolicy, BreakerRegistry, CircuitBreaker, Permit, Rejection, Transition

pytestmark = pytest.mark.timeout(30)

POLICY = BreakerPolicy(failure_threshold=3, window_ms=1_000, open_ms=500, half_open_probes=1)


def permit(breaker: CircuitBreaker, now_ms: int) -> Permit:
    result = breaker.before_call(now_ms)
    assert isinstance(result, Permit), result
    return result


def fail(breaker: CircuitBreaker, now_ms: int, failure_class: str = "transient") -> list[Transition]:
    return breaker.record(permit(breaker, now_ms), False, failure_class, now_ms)


def open_at(now_ms: int, policy: BreakerPolicy = POLICY) -> CircuitBreaker:
    breaker = CircuitBreaker("email", policy)
    for i in range(policy.failure_threshold):
        fail(breaker, now_ms - policy.failure_threshold + 1 + i)
    assert breaker.state == "open"
    return breaker


def test_opens_at_the_threshold_within_the_window() -> None:
    breaker = CircuitBreaker("email", POLICY)
    assert fail(breaker, 0) == []
    assert fail(breaker, 400, "rate_limited") == []
    [opened] = fail(breaker, 999, "unknown_outcome")
    assert breaker.state == "open"
    assert (opened.name, opened.from_state, opened.to_state, opened.at_ms) == ("email", "closed", "open", 999)
    assert opened.event_type == "circuit_opened"
    assert "unknown_outcome" in opened.reason


def test_failures_spread_beyond_the_window_are_forgotten() -> None:
    breaker = CircuitBreaker("email", POLICY)
    for now in (0, 600, 1_000, 1_600, 2_000, 2_600):  # never three within 1000 ms
        assert fail(breaker, now) == []
    assert breaker.state == "closed"
    assert breaker.snapshot(now_ms=2_600)["failures_in_window"] == 2
    assert breaker.snapshot(now_ms=10_000)["failures_in_window"] == 0


def test_successes_neither_open_nor_clear_the_window() -> None:
    breaker = CircuitBreaker("email", POLICY)
    fail(breaker, 0)
    fail(breaker, 10)
    assert breaker.record(permit(breaker, 20), True, None, 20) == []
    assert [t.to_state for t in fail(breaker, 30)] == ["open"]


@pytest.mark.parametrize("failure_class", ["validation", "auth", "permission", "budget"])
def test_failures_about_the_request_do_not_count(failure_class: str) -> None:
    breaker = CircuitBreaker("email", POLICY)
    for now in range(20):
        assert fail(breaker, now, failure_class) == []
    assert breaker.state == "closed"
    assert breaker.snapshot()["failures_in_window"] == 0


def test_rejects_while_open_with_the_remaining_cool_down() -> None:
    breaker = open_at(1_000)
    for now, remaining in ((1_000, 500), (1_200, 300), (1_499, 1)):
        rejection = breaker.before_call(now)
        assert rejection == Rejection("email", "open", remaining)
    assert breaker.state == "open"
    assert breaker.snapshot()["rejections_total"] == 3


def test_half_open_after_the_cool_down_allows_exactly_the_probe_count() -> None:
    breaker = open_at(
        1_000, BreakerPolicy(failure_threshold=2, window_ms=1_000, open_ms=500, half_open_probes=3)
    )
    first = permit(breaker, 1_500)
    assert first.probe and first.transition is not None
    assert (first.transition.from_state, first.transition.to_state) == ("open", "half_open")
    assert first.transition.event_type == "circuit_half_open"
    others = [permit(breaker, 1_510), permit(breaker, 1_520)]
    assert all(p.probe and p.transition is None for p in others)
    rejection = breaker.before_call(1_530)
    assert isinstance(rejection, Rejection) and rejection.state == "half_open"
    assert 0 < rejection.retry_after_ms <= 500
    assert breaker.snapshot()["probes_in_flight"] == 3


def test_a_probe_success_closes_it() -> None:
    breaker = open_at(1_000)
    probe = permit(breaker, 1_500)
    [closed] = breaker.record(probe, True, None, 1_600)
    assert (closed.from_state, closed.to_state, closed.at_ms) == ("half_open", "closed", 1_600)
    assert closed.event_type == "circuit_closed"
    assert breaker.state == "closed"
    assert breaker.snapshot()["failures_in_window"] == 0
    assert not permit(breaker, 1_601).probe


def test_a_probe_failure_reopens_with_a_fresh_cool_down() -> None:
    breaker = open_at(1_000)
    probe = permit(breaker, 1_500)
    [reopened] = breaker.record(probe, False, "rate_limited", 1_700)
    assert (reopened.from_state, reopened.to_state, reopened.at_ms) == ("half_open", "open", 1_700)
    assert breaker.before_call(1_700) == Rejection("email", "open", 500)
    assert breaker.before_call(2_199) == Rejection("email", "open", 1)
    assert permit(breaker, 2_200).probe


def test_an_uncounted_probe_failure_frees_the_slot_but_keeps_it_half_open() -> None:
    breaker = open_at(1_000)
    probe = permit(breaker, 1_500)
    assert isinstance(breaker.before_call(1_501), Rejection)
    assert breaker.record(probe, False, "validation", 1_510) == []
    assert breaker.state == "half_open"
    assert permit(breaker, 1_520).probe


def test_a_lost_probe_frees_its_slot_after_the_lease() -> None:
    policy = BreakerPolicy(failure_threshold=1, window_ms=1_000, open_ms=500, probe_lease_ms=2_000)
    breaker = open_at(1_000, policy)
    permit(breaker, 1_500)  # never recorded
    rejection = breaker.before_call(3_000)
    assert rejection == Rejection("email", "half_open", 500)  # capped at a cool-down
    assert breaker.before_call(3_499) == Rejection("email", "half_open", 1)
    assert permit(breaker, 3_500).probe


def test_late_outcomes_from_an_earlier_state_are_ignored() -> None:
    breaker = CircuitBreaker("email", POLICY)
    stale = permit(breaker, 0)  # issued while closed, answers after the breaker has opened
    for now in (1, 2, 3):
        fail(breaker, now)
    probe = permit(breaker, 503)
    assert breaker.record(stale, True, None, 504) == []
    assert breaker.state == "half_open"
    breaker.record(probe, True, None, 505)
    assert breaker.record(stale, False, "transient", 506) == []
    assert breaker.record(probe, False, "transient", 507) == []
    assert breaker.snapshot()["failures_in_window"] == 0


def test_each_transition_is_reported_exactly_once() -> None:
    breaker = CircuitBreaker("model:openai", POLICY)
    seen: list[Transition] = []
    for now in range(0, 3_000, 10):
        result = breaker.before_call(now)
        if isinstance(result, Rejection):
            continue
        if result.transition:
            seen.append(result.transition)
        healthy = now >= 2_000
        seen += breaker.record(result, healthy, None if healthy else "transient", now)
    assert [(t.from_state, t.to_state) for t in seen] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert breaker.snapshot()["opens_total"] == 4


def test_records_must_be_consistent() -> None:
    breaker = CircuitBreaker("email", POLICY)
    with pytest.raises(ValueError):
        breaker.record(permit(breaker, 0), False, None, 0)
    with pytest.raises(ValueError):
        breaker.record(permit(breaker, 0), True, "transient", 0)
    with pytest.raises(ValueError):
        CircuitBreaker("crm", POLICY).record(permit(breaker, 0), True, None, 0)
    with pytest.raises(ValueError):
        BreakerPolicy(half_open_probes=0)


def run_threads(count: int, target: Callable[[], object]) -> None:
    start = threading.Barrier(count)

    def body() -> None:
        start.wait()
        target()

    threads = [threading.Thread(target=body) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)


def test_concurrent_records_keep_counts_consistent() -> None:
    breaker = CircuitBreaker("email", BreakerPolicy(failure_threshold=1_000, window_ms=60_000))

    def hammer() -> None:
        for i in range(100):
            fail(breaker, i)

    run_threads(8, hammer)
    assert breaker.state == "closed"
    assert breaker.snapshot()["failures_in_window"] == 800


def test_concurrent_failures_open_once_and_admit_one_probe() -> None:
    breaker = CircuitBreaker("email", BreakerPolicy(failure_threshold=50, open_ms=500))
    transitions: list[Transition] = []
    probes: list[Permit] = []
    lock = threading.Lock()

    def fail_then_probe() -> None:
        for i in range(100):
            result = breaker.before_call(i)
            if isinstance(result, Permit):
                got = breaker.record(result, False, "transient", i)
                with lock:
                    transitions.extend(got)
        result = breaker.before_call(1_000)
        if isinstance(result, Permit):
            with lock:
                probes.append(result)

    run_threads(8, fail_then_probe)
    assert [(t.from_state, t.to_state) for t in transitions] == [("closed", "open")]
    assert len(probes) == 1 and probes[0].transition is not None
    assert breaker.snapshot()["probes_in_flight"] == 1


def test_registry_makes_one_breaker_per_name() -> None:
    email_policy = BreakerPolicy(failure_threshold=1)
    registry = BreakerRegistry(POLICY, overrides={"email": email_policy})
    got: list[CircuitBreaker] = []
    run_threads(8, lambda: got.append(registry.get("crm")))
    assert len({id(b) for b in got}) == 1 and got[0].policy == POLICY
    assert registry.get("email").policy == email_policy
    fail(registry.get("email"), 0)
    assert registry.snapshot()["email"]["state"] == "open"
    assert registry.snapshot()["crm"]["state"] == "closed"
