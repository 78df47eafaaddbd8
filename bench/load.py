"""Offering runs to Keel: paced or flat out, a share through the HTTP API and the rest on the topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import httpx

from bench.plan import lead
from keel.contracts import RunRequested
from keel.idempotency import canonical_json, content_ref
from keel.producer import make_producer
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import RUN_REQUESTS
from services.api.submit import run_id_of_client

WORKFLOW = "outbound_email"
TENANT = "acme"


def via_api(i: int, share: float) -> bool:
    """Whether the i-th run of a phase goes through the API: spread evenly, `share` of them in all."""
    return int((i + 1) * share) > int(i * share)


def schedule(count: int, rate: float | None) -> list[float]:
    """Offsets (s) from the phase start at which each run is offered; all at 0 when flat out."""
    return [i / rate if rate else 0.0 for i in range(count)]


class Submitter:
    def __init__(self, settings: Settings, api_share: float, api_workers: int = 8) -> None:
        self.settings, self.api_share = settings, api_share
        self.serde = Serde(registry_client(settings.schema_registry_url))
        self.producer = make_producer(settings, **{"socket.nagle.disable": True, "linger.ms": 1})
        self.http = httpx.Client(
            base_url=settings.api_url,
            headers={"Authorization": f"Bearer {settings.api_key}"},
            timeout=30,
            trust_env=False,
            limits=httpx.Limits(max_connections=api_workers),
        )
        self.pool = ThreadPoolExecutor(api_workers, thread_name_prefix="bench-api")
        self.api_errors: list[str] = []

    def _to_topic(self, run_id: str) -> None:
        body = lead(run_id)
        request = RunRequested(
            request_id=f"req-{uuid.uuid4().hex}",
            run_id=run_id,
            tenant_id=TENANT,
            workflow=WORKFLOW,
            input_json=canonical_json(body),
            input_ref=content_ref(body),
            requested_at=datetime.now(UTC),
            requested_by="bench",
        )
        value = self.serde.encode(RUN_REQUESTS, request)
        while True:
            try:
                self.producer.produce(RUN_REQUESTS, value, run_id.encode())
                break
            except BufferError:
                self.producer.poll(0.01)
        self.producer.poll(0)

    def _to_api(self, run_id: str) -> None:
        body = {"workflow": WORKFLOW, "input": lead(run_id), "run_id": run_id}
        reply = self.http.post("/v1/runs", json=body)
        if reply.status_code != 202:
            self.api_errors.append(f"{reply.status_code} {reply.text[:200]}")

    def offer(
        self, prefix: str, count: int, rate: float | None, tick: Callable[[int], None] | None = None
    ) -> dict[str, float]:
        """Offer `count` runs (ids `prefix-<i>`) at `rate` per second (None: flat out).
        Returns run id -> submit time (epoch seconds, taken just before the hand-over)."""
        submitted: dict[str, float] = {}
        futures: list[Future[None]] = []
        start = time.monotonic()
        for i, offset in enumerate(schedule(count, rate)):
            wait = start + offset - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # pacing, not waiting on a condition
            run_id = f"{prefix}-{i}"
            if via_api(i, self.api_share):
                # A run id a client chooses is scoped by its tenant: on the topics the run has Keel's id.
                submitted[run_id_of_client(TENANT, run_id)] = time.time()
                futures.append(self.pool.submit(self._to_api, run_id))
            else:
                submitted[run_id] = time.time()
                self._to_topic(run_id)
            if tick is not None:
                tick(i)
        self.producer.flush(60)
        for f in futures:
            f.result()
        return submitted

    def close(self) -> None:
        self.producer.flush(30)
        self.pool.shutdown()
        self.http.close()
