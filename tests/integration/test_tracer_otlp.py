"""`python -m services.tracer` as a process, pointed by OTEL_EXPORTER_OTLP_ENDPOINT at an OTLP/HTTP
collector in this test: a run's events on a topic arrive there as its trace, over the real wire format."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers import unique, wait_for
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from tracer_topic import events_topic, produce  # noqa: F401 - the fixture is used by name
from unit.agent_stories import AGENT, support_triage

from keel.serde import Serde
from keel.settings import Settings
from keel.tracing import spans_of

pytestmark = pytest.mark.integration


class Collector(ThreadingHTTPServer):
    """Just enough of an OTLP/HTTP traces receiver: decodes each export and keeps its spans."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.spans: list[tuple[Any, Any]] = []  # (resource, span) protobufs
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    self.server.spans += [(rs.resource, s) for s in ss.spans]
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        field = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, field) if field else None
    return out


def test_the_tracer_process_sends_a_runs_trace_over_otlp(
    stack: Settings,
    events_topic: tuple[str, Serde],  # noqa: F811 - the imported fixture
    collector: Collector,
) -> None:
    topic, serde = events_topic
    events = support_triage(unique("run-otlp")).events
    produce(stack, topic, serde, events)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_SERVICE_NAME": "keel-test",
        "KEEL_TRACER_GROUP": unique("test-tracer-otlp"),
        "KEEL_TRACER_START": "earliest",
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.tracer", "--topic", topic], env=env)
    try:
        want = spans_of(events)
        wait_for(
            lambda: len(collector.spans) >= len(want), timeout=30, what="the run's spans at the collector"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    got = {(s.name, int.from_bytes(s.span_id, "big")): (r, s) for r, s in collector.spans}
    assert set(got) == {(s.name, s.span_id) for s in want}
    for mine in want:
        resource, span = got[(mine.name, mine.span_id)]
        assert int.from_bytes(span.trace_id, "big") == mine.trace_id
        parent = int.from_bytes(span.parent_span_id, "big") if span.parent_span_id else None
        assert parent == mine.parent_span_id
        assert attrs(span) == dict(mine.attributes)
        assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "keel-test"
    agent = next(s for _, s in collector.spans if s.name == f"invoke_agent {AGENT}")
    assert attrs(agent)["gen_ai.agent.name"] == AGENT
    chats = [attrs(s) for _, s in collector.spans if s.name == "chat sim-medium"]
    assert sorted(c["gen_ai.usage.input_tokens"] for c in chats) == [412, 520, 700, 800]
