"""What one run event adds to the dashboard's figures: pure (no broker, no database).

Buckets come from the event's own time (`ts`), never from when it was read, so a replay, a restart or a
second consumer over the same log computes the same figures. Each event counts once per event id: the
sink (services.dashboard.store) keeps the ids it has counted and skips a copy it has seen.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from keel import events as ev
from keel.contracts import RunEvent

# Run-level facts a run's status moves through. `quarantined` names a step, but it holds the whole run.
RUN_STATUSES = frozenset(
    {
        ev.CREATED,
        ev.SCHEDULED,
        ev.STARTED,
        ev.PAUSED,
        ev.RESUMED,
        ev.COMPLETED,
        ev.FAILED,
        ev.CANCELED,
        ev.QUARANTINED,
    }
)
MICROS_PER_USD = 1_000_000


@dataclass(frozen=True)
class StatusCount:
    """A run entered `status` during `minute` (UTC, truncated)."""

    minute: datetime
    status: str


@dataclass(frozen=True)
class Spend:
    """`cost_micros` integer micro-dollars spent by `tenant_id` during `hour` (UTC, truncated)."""

    tenant_id: str
    hour: datetime
    cost_micros: int


@dataclass(frozen=True)
class FailureCount:
    """One event of kind `event` reported a failure of class `failure_class`."""

    failure_class: str
    event: str


@dataclass(frozen=True)
class Tally:
    """Everything one event adds to the figures, under the id that makes it count once."""

    event_id: str
    status: StatusCount | None
    spend: Spend | None
    failures: tuple[FailureCount, ...]

    @property
    def empty(self) -> bool:
        return self.status is None and self.spend is None and not self.failures


def minute_of(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def hour_of(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def cost_micros_of(event: RunEvent) -> int | None:
    """The fact's own integer micro-dollars; for a fact written before that field existed, its USD
    estimate rounded up (as keel.pricing rounds: spend is never under-counted)."""
    if event.cost_micros is not None:
        return event.cost_micros
    usd = event.cost_usd_est
    if usd is None or not math.isfinite(usd):
        return None
    return math.ceil(round(usd * MICROS_PER_USD, 6))


def failure_classes_of(event: RunEvent) -> tuple[str, ...]:
    """The failure classes an event reports in its tool, step or retry detail, each once."""
    found = {
        d.failure_class
        for d in (event.tool, event.step_detail, event.retry)
        if d is not None and d.failure_class
    }
    return tuple(sorted(found))


def tally(event: RunEvent) -> Tally:
    status = StatusCount(minute_of(event.ts), event.event) if event.event in RUN_STATUSES else None
    micros = cost_micros_of(event)
    spend = Spend(event.tenant_id, hour_of(event.ts), micros) if micros else None
    failures = tuple(FailureCount(c, event.event) for c in failure_classes_of(event))
    return Tally(event.event_id, status, spend, failures)


@dataclass(frozen=True)
class Window:
    """The period a figure covers: from `since` (inclusive) to now."""

    since: datetime

    @staticmethod
    def last_minutes(now: datetime, minutes: int) -> Window:
        # The current, partial minute counts as one of the N.
        return Window(minute_of(now) - timedelta(minutes=minutes - 1))

    @staticmethod
    def last_hours(now: datetime, hours: int) -> Window:
        return Window(hour_of(now) - timedelta(hours=hours - 1))


@dataclass
class Increments:
    """What a batch of first-seen tallies adds, folded per bucket: one upsert per bucket, not per event."""

    runs: Counter[tuple[datetime, str]] = field(default_factory=Counter)  # (minute, status)
    spend: Counter[tuple[str, datetime]] = field(default_factory=Counter)  # (tenant, hour) -> micros
    spend_events: Counter[tuple[str, datetime]] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (failure class, event kind)


def fold(tallies: Iterable[Tally]) -> Increments:
    """Fold tallies into increments, each event id once (the first copy in the batch)."""
    out, seen = Increments(), set()
    for t in tallies:
        if t.event_id in seen:
            continue
        seen.add(t.event_id)
        if t.status is not None:
            out.runs[(t.status.minute, t.status.status)] += 1
        if t.spend is not None:
            out.spend[(t.spend.tenant_id, t.spend.hour)] += t.spend.cost_micros
            out.spend_events[(t.spend.tenant_id, t.spend.hour)] += 1
        for f in t.failures:
            out.failures[(f.failure_class, f.event)] += 1
    return out
