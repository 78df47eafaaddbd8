"""A minimal service for bus tests: RunRequested in, RunEvent(created) out, on per-test topics.

Run as a script it is a real child process the tests can SIGKILL or SIGTERM:
    python tests/integration/echo.py IN OUT DLQ GROUP TXID [--hang-before-commit] [--lease]

Workflow names steer it: `reject-me` is rejected (dead-lettered), `echo-input` copies the run input into
the event (an output as large as the input).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from keel.contracts import RunEvent, RunRequested
from keel.lease import hold_or_exit
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.txloop import Output, Processor, Record, Reject, TransactionalLoop


class Echo(Processor):
    def __init__(self, out_topic: str) -> None:
        self.out_topic = out_topic

    def handle(self, record: Record) -> Sequence[Output]:
        req: RunRequested = record.value
        if req.workflow == "reject-me":
            raise Reject(f"unknown workflow {req.workflow!r}", "unknown_workflow")
        event = RunEvent(
            event_id=f"{req.run_id}:created",
            run_id=req.run_id,
            tenant_id=req.tenant_id,
            workflow=req.workflow,
            event="created",
            ts=req.requested_at,
            source="echo",
            error=req.input_json if req.workflow == "echo-input" else None,
        )
        return [Output(self.out_topic, req.run_id, event)]


def envelopes(in_topic: str, out_topic: str, dlq: str) -> dict[str, str]:
    return {in_topic: "run_request", out_topic: "run_event", dlq: "dead_letter"}


def make_loop(
    settings: Settings, in_topic: str, out_topic: str, dlq: str, group: str, txid: str, **kwargs: object
) -> TransactionalLoop:
    serde = Serde(registry_client(settings.schema_registry_url), envelopes(in_topic, out_topic, dlq))
    return TransactionalLoop(
        settings,
        serde,
        Echo(out_topic),
        group_id=group,
        topics=[in_topic],
        transactional_id=txid,
        instance_id=txid,
        dead_letter_topic=dlq,
        **kwargs,
    )  # type: ignore[arg-type]


def _hang() -> None:
    # Outputs are produced (inside the open transaction), the commit has not happened: wait to be killed.
    print("HANGING-BEFORE-COMMIT", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    in_topic, out_topic, dlq, group, txid = sys.argv[1:6]
    hang = "--hang-before-commit" in sys.argv
    # As a service does: one live process per instance id (here the transactional id).
    lease = hold_or_exit(Settings(), txid) if "--lease" in sys.argv else None
    loop = make_loop(Settings(), in_topic, out_topic, dlq, group, txid, before_commit=_hang if hang else None)
    print("STARTED", flush=True)
    loop.run()
    if lease is not None:
        lease.release()
    print(f"STOPPED committed_batches={loop.committed_batches}", flush=True)
