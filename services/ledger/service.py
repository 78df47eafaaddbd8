"""Ledger shell: tool results in; ledger records and step_committed out, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import TopicPartition

from keel import events as ev
from keel.contracts import LedgerRecord, RunEvent
from keel.serde import Serde
from keel.settings import Settings
from keel.statestore import ChangelogState
from keel.topics import LEDGER, RUN_EVENTS
from keel.txloop import Output, Processor, Record
from services.ledger.core import commit

TOPICS = [RUN_EVENTS]


class LedgerProcessor(Processor):
    def __init__(self, settings: Settings, serde: Serde) -> None:
        # The ledger topic is its own changelog: record i of run partition p lives in ledger partition p.
        self.commits: ChangelogState[LedgerRecord] = ChangelogState(
            settings,
            LEDGER,
            lambda r: serde.encode(LEDGER, r),
            lambda b: serde.decode(LEDGER, b),
            group="keel-ledger-restore",
        )

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.commits.load({tp.partition for tp in partitions})

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.commits.drop({tp.partition for tp in partitions})

    def on_abort(self) -> None:
        self.commits.abort()

    def on_commit(self) -> None:
        self.commits.commit()

    def handle(self, record: Record) -> Sequence[Output]:
        result: RunEvent = record.value
        if result.event != ev.TOOL_SUCCEEDED or not result.idempotency_key:
            return []
        new, facts = commit(result, self.commits.get(result.idempotency_key), ev.now_ms())
        if new is None:
            return []
        return [
            self.commits.put(new.idempotency_key, new, record.partition),
            *(Output(RUN_EVENTS, f.run_id, f) for f in facts),
        ]


def make_processor(settings: Settings, serde: Serde) -> LedgerProcessor:
    return LedgerProcessor(settings, serde)
