"""A service process (keel.service) serves /metrics that follow its real work, and logs JSON lines.

The process runs the service shell exactly as `python -m services.NAME` does, on per-test topics, with
KEEL_METRICS_PORT and KEEL_LOG_FORMAT=json; the test scrapes it over HTTP and parses its stderr.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from helpers import make_topics, read_topic, unique, wait_for
from prometheus_client.parser import text_string_to_metric_families

from keel.contracts import RunRequested
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings

pytestmark = pytest.mark.integration
SVC = Path(__file__).with_name("metrics_svc.py")
RUNS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Stderr:
    """The child's stderr lines, read on a thread so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._thread = threading.Thread(target=lambda: self.lines.extend(proc.stderr or []), daemon=True)
        self._thread.start()

    def has(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))


def test_a_service_serves_metrics_that_follow_its_work_and_logs_json_lines(stack: Settings):
    name, in_t, out_t = unique("msvc"), unique("test.in"), unique("test.out")
    make_topics(stack, in_t, out_t)
    envelopes = {in_t: "run_request", out_t: "run_event"}
    register_contracts(registry_client(stack.schema_registry_url), envelopes)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "KEEL_METRICS_PORT": str(port),
        "KEEL_METRICS_LAG_INTERVAL_S": "0.2",
        "KEEL_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, str(SVC), name, in_t, out_t, "--instance", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    err = Stderr(proc)
    try:
        wait_for(lambda: err.has("assigned 1 partitions"), 60, "the service to be assigned its partition")
        before = scrape(port)
        assert sample(before, "keel_run_events_total", service=name, event="tool_called") == 0

        serde = Serde(registry_client(stack.schema_registry_url), envelopes)
        runs = [unique("run") for _ in range(RUNS)]
        traces = {r: os.urandom(16).hex() for r in runs}
        producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
        for r in runs:
            req = RunRequested(
                request_id=f"req-{r}",
                run_id=r,
                tenant_id="acme",
                workflow="wf",
                requested_at=datetime.now(UTC),
                trace_id=traces[r],
            )
            producer.produce(in_t, key=r, value=serde.encode(in_t, req))
        assert producer.flush(10) == 0
        wait_for(lambda: len(read_topic(stack, out_t)) == 2 * RUNS, 30, "the service's facts")

        def counted() -> bool:
            now = scrape(port)
            return sample(now, "keel_run_events_total", service=name, event="tool_succeeded") == RUNS

        wait_for(counted, 10, "the committed facts to be counted")
        after = scrape(port)
        assert sample(after, "keel_run_events_total", service=name, event="tool_called") == RUNS
        assert sample(after, "keel_spend_dollars_total", tenant="acme") == pytest.approx(RUNS * 0.0015)
        hist = "keel_step_attempt_duration_seconds"
        assert sample(after, f"{hist}_count", kind="tool", outcome="succeeded") == RUNS
        assert sample(after, f"{hist}_sum", kind="tool", outcome="succeeded") == pytest.approx(RUNS * 0.042)
        assert sample(after, "keel_transactions_total", service=name) >= 1
        assert sample(after, "keel_transaction_aborts_total", service=name) == 0
        # Lag: sampled from the group's committed offset. The input here was written without a
        # transaction, so no commit marker sits at its end: caught up is exactly 0.
        lag = ("keel_consumer_lag_messages", {"group": f"keel-{name}", "topic": in_t, "partition": "0"})

        def caught_up() -> bool:
            got = scrape(port).get((lag[0], tuple(sorted(lag[1].items()))))
            return got == 0

        wait_for(caught_up, 15, "the sampled lag to show the group caught up")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        err._thread.join(5)
    assert proc.returncode == 0

    lines = [json.loads(line) for line in err.lines if line.strip()]  # every line is one JSON object
    facts = [line for line in lines if line["logger"] == "keel.events"]
    assert len(facts) == 2 * RUNS
    for line in facts:
        assert line["tenant"] == "acme" and line["run"] in traces and line["step"] == "send"
        assert line["attempt"] == 1 and line["trace_id"] == traces[line["run"]]
        assert line["service"] == name and line["instance"] == "0"
    assert {line["event"] for line in facts} == {"tool_called", "tool_succeeded"}
    assert any("metrics on http://127.0.0.1:" in line["message"] for line in lines)
