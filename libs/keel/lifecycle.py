"""Checks that a run's events, in log order, form a valid lifecycle (used by the chaos proof and tests)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from keel import events as ev
from keel.contracts import RunEvent

ENDINGS = frozenset({ev.COMPLETED, ev.FAILED, ev.CANCELED})
TOOL_RESULTS = frozenset({ev.TOOL_SUCCEEDED, ev.TOOL_FAILED})


def _result_without_call(e: RunEvent) -> bool:
    """A tool result the adapters may publish with no tool_called before it: one that says the provider
    was not called (blocked_reason: deadline passed, key in flight, ...) or was not needed (the ledger
    already held the commit)."""
    return e.tool is not None and (e.tool.blocked_reason is not None or e.tool.already_committed)


def tool_problems(events: Sequence[RunEvent]) -> list[str]:
    """Each attempt's tool facts: a result follows its tool_called (unless the provider was not called),
    at most one result per attempt, and a blocked result names no provider id."""
    problems: list[str] = []
    called: set[tuple[str | None, int]] = set()
    results: Counter[tuple[str | None, int]] = Counter()
    for e in events:
        at = (e.step, e.attempt)
        if e.event == ev.TOOL_CALLED:
            called.add(at)
        elif e.event in TOOL_RESULTS:
            results[at] += 1
            if at not in called and not _result_without_call(e):
                problems.append(f"{e.step} attempt {e.attempt}: {e.event} without tool_called")
            if e.tool is not None and e.tool.blocked_reason is not None and e.tool.external_id:
                problems.append(f"{e.step} attempt {e.attempt}: blocked, yet names provider id")
    problems += [f"{s} attempt {a}: {n} tool results" for (s, a), n in results.items() if n > 1]
    return problems


def lifecycle_problems(events: Sequence[RunEvent], side_effect_steps: set[str]) -> list[str]:
    """What is wrong with one run's log; empty when it is a valid lifecycle.

    Facts from workers may arrive after the run ended (a stale attempt finishing late); the scheduler's
    own decisions may not.
    """
    problems: list[str] = []
    kinds = [e.event for e in events]
    if not kinds or kinds[0] != ev.CREATED:
        problems.append(f"does not start with created: {kinds[:3]}")
    if kinds.count(ev.CREATED) > 1:
        problems.append("created more than once")
    endings = [i for i, k in enumerate(kinds) if k in ENDINGS]
    if len(endings) > 1:
        problems.append(f"ended more than once: {[kinds[i] for i in endings]}")
    end = endings[0] if endings else None
    if end is not None:
        late = [e.event for e in events[end + 1 :] if e.source == "scheduler"]
        if late:
            problems.append(f"scheduler decisions after the run ended: {late}")
    # A commit re-issued by the ledger for a key it already holds (duplicate) is not a second commit.
    commits = Counter(
        e.step for e in events if e.event == ev.STEP_COMMITTED and not (e.commit and e.commit.duplicate)
    )
    for step in side_effect_steps:
        if commits[step] > 1:
            problems.append(f"side-effect step {step} committed {commits[step]} times")
    if end is not None and kinds[end] == ev.COMPLETED:
        before = {e.step for e in events[:end] if e.event == ev.STEP_COMMITTED}
        steps = {e.step for e in events if e.step}
        missing = sorted(s for s in steps if s not in before)
        if missing:
            problems.append(f"completed before steps committed: {missing}")
    for e in events:
        if e.event == ev.RETRY_SCHEDULED and e.retry and e.retry.next_attempt != e.attempt + 1:
            problems.append(f"{e.step}: retry after attempt {e.attempt} names attempt {e.retry.next_attempt}")
    return problems + tool_problems(events)
