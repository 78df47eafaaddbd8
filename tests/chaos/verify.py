"""Ground truth after chaos: the providers' delivery counts, the ledger topic and the event log."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from keel.contracts import LedgerRecord, RunEvent
from keel.lifecycle import ENDINGS, lifecycle_problems
from keel.reader import read_topic
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import LEDGER, RUN_EVENTS


@dataclass
class Verdict:
    by_status: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    duplicate_deliveries: dict[str, int] = field(default_factory=dict)
    ledger_duplicates: dict[str, int] = field(default_factory=dict)
    committed_without_ledger: list[str] = field(default_factory=list)
    ledger_id_mismatch: list[str] = field(default_factory=list)
    lifecycle: dict[str, list[str]] = field(default_factory=dict)


def run_logs(settings: Settings) -> dict[str, list[RunEvent]]:
    serde = Serde(registry_client(settings.schema_registry_url))
    logs: dict[str, list[RunEvent]] = defaultdict(list)
    for msg in read_topic(settings, RUN_EVENTS, timeout=120):
        event = serde.decode(RUN_EVENTS, msg.value())
        logs[event.run_id].append(event)
    return logs


def ledger(settings: Settings) -> list[LedgerRecord]:
    serde = Serde(registry_client(settings.schema_registry_url))
    return [serde.decode(LEDGER, m.value()) for m in read_topic(settings, LEDGER, timeout=120)]


def status_of(events: list[RunEvent]) -> str:
    for e in events:
        if e.event in ENDINGS:
            return e.event
    return "quarantined" if any(e.event == "quarantined" for e in events) else "stuck"


def verify(
    settings: Settings,
    run_ids: list[str],
    deliveries_by_key: dict[str, int],
    side_effects: dict[str, set[str]],
) -> Verdict:
    """`deliveries_by_key`: every provider's by_key counts merged; `side_effects`: workflow -> steps."""
    verdict = Verdict()
    logs = run_logs(settings)
    records = ledger(settings)
    per_key = Counter(r.idempotency_key for r in records)
    by_key = {r.idempotency_key: r for r in records}
    verdict.duplicate_deliveries = {k: n for k, n in deliveries_by_key.items() if n > 1}
    verdict.ledger_duplicates = {k: n for k, n in per_key.items() if n > 1}
    for run_id in run_ids:
        events = logs.get(run_id, [])
        status = status_of(events)
        verdict.by_status[status] += 1
        if status == "stuck":
            verdict.stuck.append(run_id)
        steps = side_effects.get(events[0].workflow, set()) if events else set()
        problems = lifecycle_problems(events, steps)
        if problems:
            verdict.lifecycle[run_id] = problems
        for e in events:
            if e.event == "step_committed" and e.step in steps:
                record = by_key.get(e.idempotency_key or "")
                if record is None:
                    verdict.committed_without_ledger.append(f"{run_id}/{e.step}")
                elif e.commit is None or record.external_id != e.commit.external_id:
                    verdict.ledger_id_mismatch.append(f"{run_id}/{e.step}")
    return verdict
