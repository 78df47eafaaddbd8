"""Ledger shell: tool results in; ledger records and step_committed out, in one transaction.

Retention: the ledger's memory holds a key only within KEEL_RETENTION_HORIZON_S of its commit (default
7 days); the compacted keel.ledger topic keeps every record. Within the horizon a repeated result for a
key is answered from memory (the commit fact is re-issued, nothing new is recorded). Beyond it the ledger
no longer knows the key: the scheduler no longer holds a terminal run past the same horizon, so no retry
of it is issued, and "was key K committed?" is answered from the ledger topic (`keel.ledger`, keyed by
the idempotency key) or from the projections (`keel.steps`: idempotency_key, external_id, committed_at).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import TopicPartition

from keel import events as ev
from keel import provenance
from keel.claimcheck import offload
from keel.contracts import LedgerRecord, RunEvent
from keel.serde import Serde
from keel.settings import Settings
from keel.statestore import ChangelogState
from keel.topics import LEDGER, RUN_EVENTS
from keel.txloop import Output, Processor, Record, Reject
from services.ledger.core import commit, expired

TOPICS = [RUN_EVENTS]
log = logging.getLogger(__name__)
_SWEEP_EVERY_S = 60.0  # expired keys are looked for at most this often (a scan of the ledger's memory)


class Commits(ChangelogState[LedgerRecord]):
    """The ledger's committed keys, restored from the ledger topic, forgetting keys past the horizon."""

    def forget_expired(self, now_ms: int, horizon_s: float) -> int:
        # Memory only: the topic keeps the record (no tombstone), so the commit stays on the record.
        gone = [k for k, (_, r) in self._committed.items() if expired(r, now_ms, horizon_s)]
        for key in gone:
            del self._committed[key]
        return len(gone)


class LedgerProcessor(Processor):
    def __init__(self, settings: Settings, serde: Serde, horizon_s: float | None = None) -> None:
        # The ledger topic is its own changelog: record i of run partition p lives in ledger partition p.
        self.commits = Commits(
            settings,
            LEDGER,
            lambda r: serde.encode(LEDGER, offload(r)),  # a large output by reference
            lambda b: serde.decode(LEDGER, b),
            group="keel-ledger-restore",
        )
        self.horizon_s = horizon_s or settings.retention_horizon_s
        self._swept = time.monotonic()

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.commits.load({tp.partition for tp in partitions})
        self._forget(ev.now_ms())

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.commits.drop({tp.partition for tp in partitions})

    def on_abort(self) -> None:
        self.commits.abort()

    def on_commit(self) -> None:
        self.commits.commit()

    def tick(self, now_ms: int) -> Sequence[Output]:
        if time.monotonic() - self._swept >= _SWEEP_EVERY_S:
            self._forget(now_ms)
        return ()

    def _forget(self, now_ms: int) -> None:
        self._swept = time.monotonic()
        gone = self.commits.forget_expired(now_ms, self.horizon_s)
        if gone:
            log.info("%d committed keys past the %.0fs retention horizon left memory", gone, self.horizon_s)

    def handle(self, record: Record) -> Sequence[Output]:
        result: RunEvent = record.value
        if result.event != ev.TOOL_SUCCEEDED or not result.idempotency_key:
            return []
        problem = provenance.command_problem(result.tenant_id, result.idempotency_key, "tool result")
        if problem:  # another tenant's commit must never answer, or be answered by, this key
            raise Reject(problem, provenance.TENANT_MISMATCH)
        held = self.commits.get(result.idempotency_key)
        new, facts = commit(result, held, ev.now_ms())
        if held is not None and not facts:
            raise Reject(
                f"tool_succeeded of {result.tenant_id}/{result.run_id}/{result.step} for a key committed by "
                f"{held.tenant_id}/{held.run_id}/{held.step}",
                "invalid",
            )
        outputs = [Output(RUN_EVENTS, f.run_id, f) for f in facts]
        if new is not None:
            outputs.insert(0, self.commits.put(new.idempotency_key, new, record.partition))
        return outputs


def make_processor(settings: Settings, serde: Serde) -> LedgerProcessor:
    return LedgerProcessor(settings, serde)
