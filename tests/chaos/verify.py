"""Ground truth after chaos: the providers' deliveries per logical effect, the ledger topic, the event log.

`judge` is pure: it takes what was read (logs, ledger records, the providers' stats) and returns the
verdict, so each of its checks can be fed a broken input in a unit test (tests/unit/test_verify.py).
`verify` reads the topics and calls it.

The providers count every delivery under the logical effect it names (tenant|run|step, from the tags the
adapters put on each write), whatever idempotency key it came with. So the effect-level promise is checked
directly: every committed side-effect step delivered exactly once, every other side-effect step at most
once, and nothing delivered that Keel neither committed nor holds in quarantine.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.simulators.dedup import effect_id
from keel import events as ev
from keel.contracts import LedgerRecord, RunEvent
from keel.lifecycle import ENDINGS, lifecycle_problems
from keel.reader import read_topic
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import LEDGER, RUN_EVENTS


@dataclass(frozen=True)
class Evidence:
    """Everything the verdict is judged from."""

    run_ids: Sequence[str]  # the accepted runs
    logs: Mapping[str, Sequence[RunEvent]]  # run id -> its events in log order
    ledger: Sequence[LedgerRecord]  # every ledger record read (before compaction could merge copies)
    provider_stats: Mapping[str, Mapping[str, Any]]  # provider -> its GET /_stats (side-effect providers)
    side_effects: Mapping[str, set[str]]  # workflow -> its side-effect steps


@dataclass
class Verdict:
    by_status: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    # per logical effect
    deliveries: int = 0  # every delivery the providers counted
    committed_effects: int = 0  # side-effect steps with a step_committed
    held_deliveries: int = 0  # deliveries of side-effect steps held in quarantine, not committed
    duplicates: dict[str, int] = field(default_factory=dict)  # effect -> deliveries, where more than one
    lost: list[str] = field(default_factory=list)  # committed effects the provider never delivered
    uncommitted_deliveries: dict[str, int] = field(
        default_factory=dict
    )  # delivered, neither committed nor held
    without_effect: int = 0  # deliveries that named no logical effect
    # ledger and log
    ledger_duplicates: dict[str, int] = field(default_factory=dict)
    committed_without_ledger: list[str] = field(default_factory=list)
    ledger_id_mismatch: list[str] = field(default_factory=list)
    lifecycle: dict[str, list[str]] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        """Total deliveries == committed side-effect steps + deliveries of steps held in quarantine."""
        return self.deliveries == self.committed_effects + self.held_deliveries

    def failures(self) -> dict[str, Any]:
        """Every check that is red, by name; empty when the verdict is green."""
        checks: dict[str, Any] = {
            "stuck": self.stuck,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "uncommitted_deliveries": self.uncommitted_deliveries,
            "without_effect": self.without_effect,
            "ledger_duplicates": self.ledger_duplicates,
            "committed_without_ledger": self.committed_without_ledger,
            "ledger_id_mismatch": self.ledger_id_mismatch,
            "lifecycle": self.lifecycle,
        }
        red = {name: value for name, value in checks.items() if value}
        if not self.balanced:
            red["unbalanced"] = (
                f"{self.deliveries} deliveries != {self.committed_effects} committed side-effect steps "
                f"+ {self.held_deliveries} deliveries held in quarantine"
            )
        return red

    def figures(self) -> str:
        return (
            f"runs {dict(self.by_status)}; deliveries {self.deliveries} = committed side-effect steps "
            f"{self.committed_effects} + held in quarantine {self.held_deliveries}"
            f"{'' if self.balanced else '  (UNBALANCED)'}; duplicates {len(self.duplicates)}, "
            f"lost {len(self.lost)}, uncommitted deliveries {sum(self.uncommitted_deliveries.values())}, "
            f"without effect {self.without_effect}, stuck {len(self.stuck)}; ledger duplicates "
            f"{len(self.ledger_duplicates)}, commits without ledger {len(self.committed_without_ledger)}, "
            f"id mismatches {len(self.ledger_id_mismatch)}, invalid lifecycles {len(self.lifecycle)}"
        )


def status_of(events: Sequence[RunEvent]) -> str:
    for e in events:
        if e.event in ENDINGS:
            return e.event
    return "quarantined" if any(e.event == ev.QUARANTINED for e in events) else "stuck"


def _effect(e: RunEvent) -> str:
    return effect_id(e.tenant_id, e.run_id, e.step or "")


def judge(evidence: Evidence) -> Verdict:
    """The chaos verdict from what was read. Pure."""
    verdict = Verdict()
    ledger_by_key = {r.idempotency_key: r for r in evidence.ledger}
    per_key = Counter(r.idempotency_key for r in evidence.ledger)
    verdict.ledger_duplicates = {k: n for k, n in per_key.items() if n > 1}
    delivered: Counter[str] = Counter()
    for stats in evidence.provider_stats.values():
        verdict.deliveries += int(stats["deliveries"])
        verdict.without_effect += int(stats.get("without_effect", 0))
        delivered.update({k: int(n) for k, n in stats["by_effect"].items()})

    committed: set[str] = set()
    held: set[str] = set()
    for run_id in evidence.run_ids:
        events = evidence.logs.get(run_id, [])
        status = status_of(events)
        verdict.by_status[status] += 1
        if status == "stuck":
            verdict.stuck.append(run_id)
        steps = evidence.side_effects.get(events[0].workflow, set()) if events else set()
        problems = lifecycle_problems(events, steps)
        if problems:
            verdict.lifecycle[run_id] = problems
        for e in events:
            if e.step not in steps:
                continue
            if e.event == ev.QUARANTINED:
                held.add(_effect(e))
            if e.event != ev.STEP_COMMITTED:
                continue
            committed.add(_effect(e))
            record = ledger_by_key.get(e.idempotency_key or "")
            if record is None:
                verdict.committed_without_ledger.append(f"{run_id}/{e.step}")
            elif e.commit is None or record.external_id != e.commit.external_id:
                verdict.ledger_id_mismatch.append(f"{run_id}/{e.step}")

    held -= committed
    verdict.committed_effects = len(committed)
    verdict.held_deliveries = sum(delivered[effect] for effect in held)
    verdict.duplicates = {effect: n for effect, n in delivered.items() if n > 1}
    verdict.lost = sorted(effect for effect in committed if delivered[effect] == 0)
    verdict.uncommitted_deliveries = {
        effect: n for effect, n in delivered.items() if n and effect not in committed and effect not in held
    }
    return verdict


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


def verify(
    settings: Settings,
    run_ids: Sequence[str],
    provider_stats: Mapping[str, Mapping[str, Any]],
    side_effects: Mapping[str, set[str]],
) -> Verdict:
    """Read the event log and the ledger topic and judge them with the providers' stats.

    `provider_stats`: GET /_stats of every provider that carries side effects, by name (e.g.
    {"email": ..., "crm": ...}); `side_effects`: workflow -> its side-effect steps.
    """
    return judge(Evidence(run_ids, run_logs(settings), ledger(settings), provider_stats, side_effects))
