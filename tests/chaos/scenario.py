"""One chaos scenario: submit runs three ways while the monkey kills things, wait, then judge.

Runs go in three ways, as real clients would send them: a producer keyed by run_id (murmur2, like
Keel's own), foreign producers that key by request id or not at all with librdkafka's default
partitioner, and the HTTP API with an Idempotency-Key, retried with the same key until accepted.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from confluent_kafka import Producer
from helpers import unique, wait_for

from keel.contracts import RunRequested
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import RUN_REQUESTS

ENDED = ("completed", "failed", "canceled", "quarantined")


@dataclass
class Submitted:
    accepted: list[str] = field(default_factory=list)
    by_way: dict[str, int] = field(default_factory=lambda: {"keyed": 0, "foreign": 0, "api": 0})
    api_retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, run_id: str, way: str) -> None:
        with self.lock:
            self.accepted.append(run_id)
            self.by_way[way] += 1


def workflow_input(i: int) -> tuple[str, dict[str, str]]:
    if i % 3 == 2:
        return "chaos_fanout", {
            "lead_email": f"lead{i}@acme.test",
            "lead_name": f"Lead {i}",
            "company": f"Company {i}",
        }
    return "chaos_email", {"lead_email": f"lead{i}@acme.test", "lead_name": f"Lead {i}", "product": "Keel"}


def _request(i: int) -> RunRequested:
    workflow, data = workflow_input(i)
    return RunRequested(
        request_id=unique("req"),
        run_id=unique(f"chaos-{i}"),
        tenant_id="acme",
        workflow=workflow,
        input_json=json.dumps(data),
        requested_at=datetime.now(UTC),
    )


def _producer(settings: Settings, partitioner: str | None) -> Producer:
    conf = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": 120_000,
    }
    if partitioner:
        conf["partitioner"] = partitioner
    return Producer(conf)


def _via_api(api_url: str, i: int, submitted: Submitted, stop: threading.Event) -> None:
    """POST with an Idempotency-Key; on any failure retry with the same key, as a careful client does."""
    workflow, data = workflow_input(i)
    key = f"chaos-key-{uuid.uuid4().hex}"
    headers = {"Authorization": "Bearer acme-dev-key", "Idempotency-Key": key}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not stop.is_set():
        try:
            response = httpx.post(
                f"{api_url}/v1/runs", json={"workflow": workflow, "input": data}, headers=headers, timeout=10
            )
            if response.status_code == 202:
                body = response.json()
                submitted.add(body.get("keel_run_id") or body["run_id"], "api")
                return
        except httpx.HTTPError:
            pass
        with submitted.lock:
            submitted.api_retries += 1
        time.sleep(0.5)


def submit(
    settings: Settings, api_url: str, runs: int, seconds: float, seed: int, done: threading.Event
) -> Submitted:
    """Spread `runs` requests over `seconds`; a run counts once the broker or the API acknowledged it."""
    rng = random.Random(seed)
    submitted = Submitted()
    serde = Serde(registry_client(settings.schema_registry_url))
    keyed = _producer(settings, "murmur2_random")
    foreign = _producer(settings, None)  # librdkafka's default partitioner (consistent_random)
    api_threads: list[threading.Thread] = []

    def worker() -> None:
        for i in range(runs):
            way = rng.choices(("keyed", "foreign", "api"), weights=(6, 2, 2))[0]
            if way == "api":
                t = threading.Thread(target=_via_api, args=(api_url, i, submitted, done), daemon=True)
                t.start()
                api_threads.append(t)
            else:
                req = _request(i)
                producer = keyed if way == "keyed" else foreign
                # A foreign service keys by its own request id, or not at all.
                key = req.run_id if way == "keyed" else rng.choice([req.request_id, None])
                while True:
                    try:
                        producer.produce(
                            RUN_REQUESTS,
                            key=key,
                            value=serde.encode(RUN_REQUESTS, req),
                            on_delivery=lambda err, msg, rid=req.run_id, w=way: (
                                err is None and submitted.add(rid, w)
                            ),
                        )
                        break
                    except Exception:  # the registry is being killed: encode again in a moment
                        time.sleep(0.5)
                producer.poll(0)
            time.sleep(seconds / runs)
        keyed.flush(120)
        foreign.flush(120)
        for t in api_threads:
            t.join(130)
        done.set()

    threading.Thread(target=worker, daemon=True).start()
    return submitted


def wait_all_ended(events, run_ids: list[str], timeout: float) -> None:  # noqa: ANN001 - harness EventLog
    def open_runs() -> list[str]:
        return [r for r in run_ids if not any(k in ENDED for k in events.kinds(r))]

    try:
        wait_for(lambda: not open_runs(), timeout, "every accepted run to end")
    except AssertionError:
        for run_id in open_runs()[:5]:  # what the stuck ones were waiting for
            print(run_id, [(e.event, e.step, e.attempt, e.source) for e in events.of(run_id)][-6:])
        raise
