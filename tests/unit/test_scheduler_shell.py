"""The scheduler's shell without a broker: state and timers roll back with an aborted transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from keel.contracts import RunRequested, StepCommand
from keel.settings import Settings
from keel.txloop import Record
from keel.workflows import Catalog
from services.scheduler.service import SchedulerProcessor

REQUEST = RunRequested(
    request_id="req",
    run_id="run-1",
    tenant_id="acme",
    workflow="outbound_email",
    input_json=json.dumps({"lead_email": "a@b.test", "lead_name": "A", "product": "K"}),
    requested_at=datetime.now(UTC),
)


def commands(outputs) -> list[StepCommand]:
    return [o.value for o in outputs if isinstance(o.value, StepCommand)]


def test_a_timer_fired_in_an_aborted_batch_fires_again():
    processor = SchedulerProcessor(Settings(), Catalog.load(), {"email@1": "provider_key"}.get)
    [first] = commands(processor.handle(Record("keel.run-requests", 0, 0, "run-1", REQUEST, 0)))
    processor.on_commit()
    deadline = int(first.deadline.timestamp() * 1000)

    assert processor.tick(deadline - 1) == []
    fired = processor.tick(deadline)  # the attempt timed out: a retry is scheduled ...
    assert any(getattr(o.value, "event", None) == "retry_scheduled" for o in fired)
    processor.on_abort()  # ... but that batch's transaction was aborted

    again = processor.tick(deadline + 1)  # so the committed timer is still due, and fires again
    assert any(getattr(o.value, "event", None) == "retry_scheduled" for o in again)
    processor.on_commit()
    assert processor.tick(deadline + 2) == []  # and once committed, not a third time
