"""Pure figures from timestamped marks: percentiles, run and step latencies, hand-off gaps, throughput.

Every system under test (Keel from its run events, the floor and the peers from their own records) is
reduced to the same `Mark`s, so one piece of arithmetic measures them all.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STEP_STARTED, STEP_COMMITTED, COMPLETED = "step_started", "step_committed", "completed"


@dataclass(frozen=True)
class Mark:
    """One fact with its time: `kind` is an event kind, `t` seconds since the epoch."""

    run_id: str
    step: str | None
    kind: str
    t: float


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); `q` in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    """Count, p50, p90, p99 and max of durations given in seconds, reported in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    out: dict[str, Any] = {"n": len(ms)}
    for name, q in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)):
        out[name] = round(percentile(ms, q), 2) if ms else None
    return out


def _by_run(marks: Iterable[Mark]) -> dict[str, list[Mark]]:
    runs: dict[str, list[Mark]] = defaultdict(list)
    for m in marks:
        runs[m.run_id].append(m)
    for ms in runs.values():
        ms.sort(key=lambda m: m.t)
    return runs


def run_latencies(submitted: Mapping[str, float], marks: Iterable[Mark]) -> list[float]:
    """Submit -> completed, for every submitted run that completed (first `completed` counts)."""
    done: dict[str, float] = {}
    for m in marks:
        if m.kind == COMPLETED and m.run_id in submitted:
            done[m.run_id] = min(m.t, done.get(m.run_id, math.inf))
    return [t - submitted[run] for run, t in done.items()]


def step_latencies(marks: Iterable[Mark]) -> list[float]:
    """step_started -> step_committed of each step; with retries, from the attempt that committed
    (the last start before the commit), so backoffs between attempts are not counted as step work."""
    out = []
    for ms in _by_run(marks).values():
        started: dict[str | None, float] = {}
        for m in ms:
            if m.kind == STEP_STARTED:
                started[m.step] = m.t
            elif m.kind == STEP_COMMITTED and m.step in started:
                out.append(m.t - started.pop(m.step))
    return out


def handoff_gaps(marks: Iterable[Mark]) -> list[float]:
    """step_committed -> the next step_started of the same run: the time the orchestrator takes to move
    on. Only the first start after each commit counts (a retry's start is not a hand-off)."""
    out = []
    for ms in _by_run(marks).values():
        last_commit: float | None = None
        for m in ms:
            if m.kind == STEP_COMMITTED:
                last_commit = m.t
            elif m.kind == STEP_STARTED and last_commit is not None:
                out.append(m.t - last_commit)
                last_commit = None
    return out


def sustained_rate(times: list[float], trim: float = 0.1) -> float | None:
    """Events per second over the central part of a burst: the first and last `trim` share of the
    events are left out, so ramp-up and the tail do not dilute the steady rate."""
    if len(times) < 10:
        return None
    ordered = sorted(times)
    lo = int(len(ordered) * trim)
    hi = len(ordered) - 1 - lo
    span = ordered[hi] - ordered[lo]
    return (hi - lo) / span if span > 0 else None


def phase_figures(submitted: Mapping[str, float], marks: list[Mark]) -> dict[str, Any]:
    """Everything one phase of a system reports: latencies, gaps, committed steps and their rate."""
    commits = [m.t for m in marks if m.kind == STEP_COMMITTED and m.run_id in submitted]
    completed = {m.run_id for m in marks if m.kind == COMPLETED and m.run_id in submitted}
    rate = sustained_rate(commits)
    span = (max(commits) - min(submitted.values())) if commits and submitted else None
    return {
        "runs": len(submitted),
        "completed": len(completed),
        "committed_steps": len(commits),
        "steps_per_s_sustained": round(rate, 1) if rate else None,
        "steps_per_s_overall": round(len(commits) / span, 1) if span else None,
        "run_latency_ms": summary_ms(run_latencies(submitted, marks)),
        "step_latency_ms": summary_ms(step_latencies(marks)),
        "handoff_gap_ms": summary_ms(handoff_gaps(marks)),
        "hops_ms": hop_breakdown(submitted, marks),
    }


def hop_breakdown(submitted: Mapping[str, float], marks: Iterable[Mark]) -> dict[str, dict[str, Any]]:
    """Where a run's time goes: every pair of consecutive events of a run (`submit` first), keyed
    `step:kind -> step:kind`, with p50/p99 of the time between them. Each event's `ts` is taken by the
    service that wrote it, so a pair spans the hops (commit, fetch, handling) between two services."""
    spans: dict[str, list[float]] = defaultdict(list)
    for run, ms in _by_run(m for m in marks if m.run_id in submitted).items():
        before, t0 = "submit", submitted[run]
        for m in ms:
            here = f"{m.step}:{m.kind}" if m.step else m.kind
            spans[f"{before} -> {here}"].append(m.t - t0)
            before, t0 = here, m.t
    return {k: {**summary_ms(v), "n": len(v)} for k, v in spans.items() if len(v) >= 3}


def duplicates(recipients: Iterable[str]) -> dict[str, int]:
    """From the provider's delivered records (one recipient per run): deliveries, distinct recipients,
    and deliveries beyond the first per recipient (the duplicates)."""
    counts: dict[str, int] = defaultdict(int)
    for r in recipients:
        counts[r] += 1
    total = sum(counts.values())
    return {"deliveries": total, "distinct": len(counts), "duplicates": total - len(counts)}
