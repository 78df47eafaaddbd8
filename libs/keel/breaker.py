"""Circuit breakers per provider: a pure, thread-safe core that is told the time instead of reading it."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from keel.vocab import RATE_LIMITED, TRANSIENT, UNKNOWN_OUTCOME

BreakerState = Literal["closed", "open", "half_open"]

# Validation and auth failures describe the request, not the provider, so they never trip a breaker.
# A timeout (unknown_outcome) does: a provider that stops answering is exactly what the breaker is for.
COUNTED_FAILURES = frozenset({TRANSIENT, RATE_LIMITED, UNKNOWN_OUTCOME})

EVENT_TYPES: dict[BreakerState, str] = {
    "open": "circuit_opened",
    "half_open": "circuit_half_open",
    "closed": "circuit_closed",
}


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5  # counted failures within window_ms that open the breaker
    window_ms: int = 10_000
    open_ms: int = 5_000  # cool-down before a probe is let through
    half_open_probes: int = 1  # trial calls in flight at once while half-open
    # A probe whose outcome is never recorded (a caller's bug) would wedge the breaker half-open forever;
    # after this long its slot is handed to a new probe.
    probe_lease_ms: int = 30_000

    def __post_init__(self) -> None:
        for field, value in vars(self).items():
            if value < 1:
                raise ValueError(f"BreakerPolicy.{field} must be >= 1, got {value}")


@dataclass(frozen=True)
class Transition:
    name: str
    from_state: BreakerState
    to_state: BreakerState
    at_ms: int
    reason: str

    @property
    def event_type(self) -> str:
        return EVENT_TYPES[self.to_state]


@dataclass(frozen=True)
class Permit:
    """Leave to call the provider; hand it back to `record` with the outcome."""

    name: str
    seq: int
    generation: int  # bumped on every state change, so late outcomes from an older state are ignored
    probe: bool
    issued_at_ms: int
    transition: Transition | None = None  # set on the one permit whose issue moved open -> half_open


@dataclass(frozen=True)
class Rejection:
    name: str
    state: BreakerState
    retry_after_ms: int


class CircuitBreaker:
    def __init__(self, name: str, policy: BreakerPolicy | None = None) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._generation = 0
        self._seq = 0
        self._failures: list[int] = []  # counted failure times while closed; never longer than the threshold
        self._opened_at_ms = 0
        self._probes: dict[int, int] = {}  # seq -> issued_at_ms of probes in flight
        self._opens_total = 0
        self._rejections_total = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def before_call(self, now_ms: int) -> Permit | Rejection:
        with self._lock:
            transition = None
            if self._state == "open":
                remaining = self._opened_at_ms + self.policy.open_ms - now_ms
                if remaining > 0:
                    return self._reject(remaining)
                transition = self._move("half_open", now_ms, f"cool-down of {self.policy.open_ms} ms over")
            if self._state == "half_open":
                lease_end = now_ms - self.policy.probe_lease_ms
                self._probes = {seq: at for seq, at in self._probes.items() if at > lease_end}
                if len(self._probes) >= self.policy.half_open_probes:
                    # A probe usually answers long before its lease ends; don't ask for more than a cool-down.
                    oldest = min(self._probes.values())
                    return self._reject(min(self.policy.open_ms, oldest - lease_end))
            self._seq += 1
            probe = self._state == "half_open"
            if probe:
                self._probes[self._seq] = now_ms
            return Permit(self.name, self._seq, self._generation, probe, now_ms, transition)

    def record(
        self, permit: Permit, outcome_ok: bool, failure_class: str | None, now_ms: int
    ) -> list[Transition]:
        if permit.name != self.name:
            raise ValueError(f"permit for {permit.name!r} recorded on breaker {self.name!r}")
        if outcome_ok == (failure_class is not None):
            raise ValueError("failure_class is required for a failure and forbidden for a success")
        with self._lock:
            if permit.generation != self._generation:
                return []  # the state already moved on since this call started
            counted = failure_class in COUNTED_FAILURES
            if self._state == "half_open":
                self._probes.pop(permit.seq, None)
                if outcome_ok:
                    return [self._move("closed", now_ms, "probe succeeded")]
                if counted:
                    return [self._open(now_ms, f"probe failed: {failure_class}")]
                return []  # says nothing about the provider; the freed slot lets another probe try
            if self._state == "closed" and counted:
                self._failures = [t for t in self._failures if t > now_ms - self.policy.window_ms]
                self._failures.append(now_ms)
                if len(self._failures) >= self.policy.failure_threshold:
                    n, window = len(self._failures), self.policy.window_ms
                    return [self._open(now_ms, f"{n} failures within {window} ms, last: {failure_class}")]
            return []

    def snapshot(self, now_ms: int | None = None) -> dict[str, Any]:
        """Metrics; pass now_ms to count only failures still inside the window."""
        with self._lock:
            failures = self._failures
            if now_ms is not None:
                failures = [t for t in failures if t > now_ms - self.policy.window_ms]
            return {
                "name": self.name,
                "state": self._state,
                "failures_in_window": len(failures),
                "probes_in_flight": len(self._probes),
                "opened_at_ms": self._opened_at_ms if self._state != "closed" else None,
                "opens_total": self._opens_total,
                "rejections_total": self._rejections_total,
            }

    def _reject(self, retry_after_ms: int) -> Rejection:
        self._rejections_total += 1
        return Rejection(self.name, self._state, max(1, retry_after_ms))

    def _open(self, now_ms: int, reason: str) -> Transition:
        self._opened_at_ms = now_ms
        self._opens_total += 1
        return self._move("open", now_ms, reason)

    def _move(self, to_state: BreakerState, now_ms: int, reason: str) -> Transition:
        transition = Transition(self.name, self._state, to_state, now_ms, reason)
        self._state = to_state
        self._generation += 1
        self._failures = []
        self._probes = {}
        return transition


class BreakerRegistry:
    """One breaker per provider name, created on first use."""

    def __init__(
        self, policy: BreakerPolicy | None = None, overrides: dict[str, BreakerPolicy] | None = None
    ):
        self.policy = policy or BreakerPolicy()
        self._overrides = dict(overrides or {})
        self._lock = threading.Lock()  # guards the map only; each breaker has its own lock
        self._breakers: dict[str, CircuitBreaker] = {}
        _LIVE.add(self)  # for the metrics collector (keel.metricsserver); weak: never keeps one alive

    def get(self, name: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(name, self._overrides.get(name, self.policy))
                self._breakers[name] = breaker
            return breaker

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            breakers = list(self._breakers.values())
        return {b.name: b.snapshot() for b in breakers}


_LIVE: weakref.WeakSet[BreakerRegistry] = weakref.WeakSet()


def live_breakers() -> Iterator[BreakerRegistry]:
    """Every breaker registry alive in this process (what /metrics reports)."""
    yield from list(_LIVE)
