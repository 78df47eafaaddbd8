"""A seeded stream of run events for the dashboard's tests, and its figures computed directly from it."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import datetime, timedelta

from keel import events as ev
from keel.contracts import ModelDetail, RetryDetail, RunEvent, StepDetail, ToolDetail

CLASSES = ("transient", "rate_limited", "unknown_outcome", "validation", "auth")
ENDINGS = (ev.COMPLETED, ev.COMPLETED, ev.FAILED, ev.CANCELED, ev.QUARANTINED)


class _Run:
    """One run's facts, in order, each a few seconds after the last."""

    def __init__(self, run: str, tenant: str, at: datetime, rnd: random.Random) -> None:
        self.run, self.tenant, self.at, self.rnd = run, tenant, at, rnd

    def fact(self, kind: str, step: str | None = None, attempt: int = 0, **fields: object) -> RunEvent:
        self.at += timedelta(seconds=self.rnd.randrange(1, 50))
        return RunEvent(
            event_id=ev.event_id(self.run, kind, step, attempt),
            run_id=self.run,
            tenant_id=self.tenant,
            workflow="wf",
            step=step,
            event=kind,
            ts=self.at,
            attempt=attempt,
            source="test",
            **fields,  # type: ignore[arg-type]
        )


def stream(prefix: str, runs: int, start: datetime, seed: int = 7) -> list[RunEvent]:
    """`runs` runs of a few tenants, their facts spread over the 90 minutes after `start`, each run's
    facts in order: created, started, model calls with costs, failures with classes, an ending."""
    rnd = random.Random(seed)
    out: list[RunEvent] = []
    for r in range(runs):
        run = _Run(
            f"{prefix}-run-{r}",
            f"{prefix}-tenant-{r % 3}",
            start + timedelta(seconds=rnd.randrange(0, 80 * 60)),
            rnd,
        )
        fact = run.fact
        out += [fact(ev.CREATED), fact(ev.STARTED)]
        for attempt in (1, 2):
            micros = rnd.randrange(1, 5000)
            out.append(fact(ev.MODEL_CALLED, "draft", attempt, cost_micros=micros, model_call=ModelDetail()))
            cls = rnd.choice(CLASSES)
            if rnd.random() < 0.5:
                out.append(
                    fact(ev.TOOL_FAILED, "send", attempt, tool=ToolDetail(tool="email", failure_class=cls))
                )
                retry = RetryDetail(failure_class=cls, reason="r", delay_ms=1, fire_at=run.at, next_attempt=2)
                out.append(fact(ev.RETRY_SCHEDULED, "send", attempt, retry=retry))
            elif rnd.random() < 0.5:
                out.append(fact(ev.STEP_FAILED, "draft", attempt, step_detail=StepDetail(failure_class=cls)))
            else:
                out.append(fact(ev.TOOL_SUCCEEDED, "send", attempt, tool=ToolDetail(tool="email")))
        # An old fact with only its USD estimate: counted by its rounded-up micros.
        out.append(fact(ev.MODEL_CALLED, "review", 1, cost_usd_est=0.0012345))
        out.append(fact(rnd.choice(ENDINGS)))
    return out


def figures(events: list[RunEvent]) -> dict[str, Counter[tuple[object, ...]]]:
    """The figures straight from the events, each event id once: the ground truth."""
    runs: Counter[tuple[object, ...]] = Counter()
    spend: Counter[tuple[object, ...]] = Counter()
    failures: Counter[tuple[object, ...]] = Counter()
    statuses = {"created", "scheduled", "started", "paused", "resumed", "completed", "failed", "canceled"}
    seen: set[str] = set()
    for e in events:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        if e.event in statuses | {"quarantined"}:
            runs[(e.ts.replace(second=0, microsecond=0), e.event)] += 1
        micros = e.cost_micros if e.cost_micros is not None else None
        if micros is None and e.cost_usd_est is not None:
            micros = math.ceil(round(e.cost_usd_est * 1_000_000, 6))  # rounded up, never under-counted
        if micros:
            spend[(e.tenant_id, e.ts.replace(minute=0, second=0, microsecond=0))] += micros
        for c in {
            d.failure_class for d in (e.tool, e.step_detail, e.retry) if d is not None and d.failure_class
        }:
            failures[(c, e.event)] += 1
    return {"runs": runs, "spend": spend, "failures": failures}
