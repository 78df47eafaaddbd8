"""A service run exactly as `python -m services.NAME` runs one (keel.service: logs, lease, /metrics, the
transactional loop), with a processor that publishes a paid tool attempt per run request:
    python tests/integration/metrics_svc.py NAME IN OUT --instance N
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from keel.contracts import RunEvent, RunRequested, ToolDetail
from keel.serde import Serde
from keel.service import run_service
from keel.settings import Settings
from keel.txloop import Output, Processor, Record

FEE_MICROS = 1_500  # what each tool_called costs
LATENCY_MS = 42  # how long each call took


class PaidCalls(Processor):
    def __init__(self, out_topic: str) -> None:
        self.out_topic = out_topic

    def handle(self, record: Record) -> Sequence[Output]:
        req: RunRequested = record.value

        def fact(kind: str, **fields: object) -> Output:
            event = RunEvent(
                event_id=f"{req.run_id}:{kind}",
                run_id=req.run_id,
                tenant_id=req.tenant_id,
                workflow=req.workflow,
                step="send",
                attempt=1,
                event=kind,
                ts=req.requested_at,
                source="metrics-svc",
                trace_id=req.trace_id,
                **fields,  # type: ignore[arg-type]
            )
            return Output(self.out_topic, req.run_id, event)

        return [
            fact("tool_called", cost_micros=FEE_MICROS),
            fact("tool_succeeded", tool=ToolDetail(tool="email@1", latency_ms=LATENCY_MS)),
        ]


if __name__ == "__main__":
    name, in_topic, out_topic = sys.argv[1:4]

    def make(_settings: Settings, serde: Serde) -> PaidCalls:
        serde.envelopes.update({in_topic: "run_request", out_topic: "run_event"})
        return PaidCalls(out_topic)

    run_service(name, [in_topic], make, "paid tool calls as a service", sys.argv[4:])
