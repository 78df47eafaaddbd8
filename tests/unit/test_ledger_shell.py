"""The ledger's shell without a broker: one record per key, and keys leave memory past the horizon."""

from __future__ import annotations

from typing import Any

from test_ledger_core import KEY, succeeded

from keel import events as ev
from keel.settings import Settings
from keel.topics import LEDGER, RUN_EVENTS
from keel.txloop import Record
from services.ledger.service import LedgerProcessor


class FakeSerde:
    def encode(self, topic: str, value: Any) -> bytes:
        return repr(value).encode()

    def decode(self, topic: str, raw: bytes) -> Any:
        raise AssertionError("nothing is restored in these tests")


def record(event: Any, offset: int) -> Record:
    return Record(RUN_EVENTS, 0, offset, event.run_id, event, 0)


def test_keys_leave_memory_after_the_horizon_and_the_adapters_answer_keeps_one_record() -> None:
    ledger = LedgerProcessor(Settings(), FakeSerde(), horizon_s=3600)  # type: ignore[arg-type]
    first = ledger.handle(record(succeeded(1), 1))
    assert [o.topic for o in first] == [LEDGER, RUN_EVENTS]
    ledger.on_commit()
    assert ledger.commits.get(KEY) is not None

    ledger._forget(ev.now_ms() + 3599 * 1000)
    assert ledger.commits.get(KEY) is not None  # within the horizon: still answered from memory
    again = ledger.handle(record(succeeded(2), 2))
    assert [o.topic for o in again] == [RUN_EVENTS] and again[0].value.commit.duplicate  # type: ignore[union-attr]

    ledger._forget(ev.now_ms() + 3601 * 1000)
    assert ledger.commits.get(KEY) is None  # past it: gone from memory (the topic keeps the record)
    late = ledger.handle(record(succeeded(3, already=True), 3))
    assert [o.topic for o in late] == [RUN_EVENTS] and late[0].value.commit.duplicate  # type: ignore[union-attr]
