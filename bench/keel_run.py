"""Keel under the plan: runs offered on the topic and the API, measured from keel.run-events."""

from __future__ import annotations

import time
from typing import Any

from bench import procstat
from bench.events import EventCollector
from bench.load import Submitter
from bench.plan import Phase, run_ids_prefix
from bench.sims import Simulators
from keel.settings import Settings


def say(msg: str) -> None:
    print(f"bench:   keel {msg}", flush=True)


def run_keel(
    settings: Settings,
    phases: list[Phase],
    pids: dict[str, int],
    sims: Simulators,
    run_prefix: str,
    api_share: float,
    hang_ms: int,
    timeout_s: float,
) -> dict[str, Any]:
    """Each phase in turn; returns raw marks per phase in the same shape the peers' drivers write."""
    collector = EventCollector(settings, run_prefix)
    submitter = Submitter(settings, api_share)
    out: dict[str, Any] = {"phases": {}}
    try:
        for phase in phases:
            prefix = run_ids_prefix(run_prefix, phase)
            if phase.timeout_every:
                sims.reset()
                sims.timeouts_on_email(phase.count, phase.timeout_every, hang_ms)
            cpu0 = {k: procstat.tree_cpu_seconds(p) for k, p in pids.items()}
            pace = f" at {phase.rate:g}/s" if phase.rate else " flat out"
            say(f"{phase.name}: offering {phase.count} runs{pace}")
            t0 = time.monotonic()
            submitted = submitter.offer(prefix, phase.count, phase.rate)
            say(f"{phase.name}: offered in {time.monotonic() - t0:.1f}s")
            collector.wait_ended(submitted, timeout_s + phase.count / 10, f"{phase.name}")
            cpu = {k: round(procstat.tree_cpu_seconds(p) - cpu0[k], 3) for k, p in pids.items()}
            marks = [[m.run_id, m.step, m.kind, m.t] for m in collector.snapshot(submitted)]
            record: dict[str, Any] = {
                "submitted": submitted,
                "marks": marks,
                "cpu_s": cpu,
                "outcomes": collector.outcomes(submitted),
            }
            if phase.timeout_every:
                record["duplicates"] = sims.email_duplicates(prefix)
            out["phases"][phase.name] = record
        out["peak_rss_mib"] = {k: round(procstat.tree_peak_rss_mib(p), 1) for k, p in pids.items()}
        lags = sorted(collector.kafka_lag_s)
        out["kafka_ts_minus_event_ts_ms_p50"] = round(lags[len(lags) // 2] * 1000, 2) if lags else None
        out["api_errors"] = submitter.api_errors[:20]
    finally:
        submitter.close()
        collector.close()
    return out
