"""Submitting runs: the request body, Keel's run ids for keys and client ids, publishing (with a wait)."""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from confluent_kafka import KafkaError, Message
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from keel import intake
from keel.blobs import BlobStoreUnavailable, store_for
from keel.claimcheck import offload
from keel.contracts import RunRequested
from keel.idempotency import canonical_json, content_ref
from keel.producer import make_producer
from keel.serde import Contract, Serde
from keel.settings import Settings

# Run ids Keel assigns look like this; a client may not choose one (it would shadow a Keel-assigned id).
KEEL_RUN_ID = re.compile(r"^run-[0-9a-f]{32}$")


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _as_float(value: Any) -> Any:
    # JSON has one number type: a budget of 1 is 1.0 (booleans are not numbers here).
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class RunSubmission(BaseModel):
    """The body of POST /v1/runs. The field rules are the intake's (keel.intake), shared with the
    scheduler, so the API refuses exactly what the scheduler would dead-letter."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workflow: str = Field(min_length=1, max_length=128, pattern=intake.WORKFLOW_PATTERN)
    input: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = Field(
        default=None,
        pattern=intake.RUN_ID_PATTERN,
        description="Your own id for the run, unique among your tenant's runs. Keel runs it under an id "
        "derived from your tenant and this id (keel_run_id); the API answers to both.",
    )
    task_id: str | None = Field(default=None, min_length=1, max_length=intake.TASK_ID_MAX)
    # JSON has one number type: 2.0 is the integer 2 (as JSON Schema says), 2.5 is not an integer.
    workflow_version: Annotated[int | None, BeforeValidator(_integral)] = Field(
        default=None, ge=1, le=2**31 - 1
    )
    budget_usd: Annotated[float | None, BeforeValidator(_as_float)] = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="The run's hard spend limit in USD (docs/budgets.md): it may lower the workflow's "
        "budget_usd, never raise it.",
    )

    @field_validator("run_id")
    @classmethod
    def _not_keel_assigned(cls, run_id: str | None) -> str | None:
        if run_id is not None and KEEL_RUN_ID.match(run_id):
            raise ValueError("ids of the form run-<32 hex digits> are the ones Keel assigns; choose another")
        return run_id

    @field_validator("task_id")
    @classmethod
    def _no_nul(cls, task_id: str | None) -> str | None:
        if task_id is not None and "\x00" in task_id:
            raise ValueError("task_id holds a NUL character (U+0000), which Keel refuses rather than alters")
        return task_id

    def fingerprint(self) -> str:
        """What makes two requests the same request: the body as the client sent it (the requested
        version, not the resolved one, so a retry after a new version is published is still the same)."""
        body = self.model_dump(mode="json")
        if body.get("budget_usd") is None:  # absent as before the field existed: old retries still match
            body.pop("budget_usd", None)
        return content_ref(body)


def run_id_for(tenant: str, idempotency_key: str) -> str:
    # FROZEN FORMAT: a client that retries with the same Idempotency-Key must get the same run back,
    # across restarts and upgrades of the API. Scoped by tenant, so two tenants' keys never collide.
    return "run-" + hashlib.sha256(f"{tenant}\n{idempotency_key}".encode()).hexdigest()[:32]


def run_id_of_client(tenant: str, client_run_id: str) -> str:
    # FROZEN FORMAT: Keel's run id for a run id the client chose. Scoped by tenant, so one tenant can
    # never take (or learn of) another's id. "run_id:" cannot begin a tenant slug (no ':'), so these
    # never collide with run_id_for's.
    return "run-" + hashlib.sha256(f"run_id:{tenant}\n{client_run_id}".encode()).hexdigest()[:32]


def new_run_id() -> str:
    return "run-" + uuid.uuid4().hex


def run_request(
    tenant: str,
    run_id: str,
    body: RunSubmission,
    version: int,
    repeatable: bool,
    requested_by: str | None = None,
) -> RunRequested:
    # A request named by a key or a client's run id gets a deterministic request id too: a retried POST
    # repeats the same request.
    request_id = f"{run_id}:request" if repeatable else f"req-{uuid.uuid4().hex}"
    return RunRequested(
        request_id=request_id,
        run_id=run_id,
        tenant_id=tenant,
        workflow=body.workflow,
        workflow_version=version,
        task_id=body.task_id,
        input_json=canonical_json(body.input),
        input_ref=content_ref(body.input),
        requested_at=datetime.now(UTC),
        requested_by=requested_by,  # the principal id (services.api.apikeys.Principal)
        budget_usd=body.budget_usd,
    )


class DeliveryFailed(Exception):
    """The broker did not acknowledge the request (in time)."""


class Publisher:
    """An idempotent producer whose delivery reports are served by a background thread, so each
    request can wait for its own report without polling for everyone else's."""

    def __init__(self, settings: Settings, topic: str, serde: Serde, timeout_s: float) -> None:
        self.topic, self.serde, self.timeout_s = topic, serde, timeout_s
        self.blobs = store_for(settings)
        # librdkafka gives up when the caller does: a 503 then means "not sent", not "maybe later".
        self.producer = make_producer(settings, **{"message.timeout.ms": int(timeout_s * 1000)})
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="run-request-deliveries", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    def publish(self, request: RunRequested) -> None:
        try:
            request = offload(request, self.blobs)  # a large input goes by reference (input_ref)
        except BlobStoreUnavailable as exc:
            raise DeliveryFailed(str(exc)) from None
        self.send(self.topic, request.run_id, request)

    def send(self, topic: str, key: str, record: Contract) -> None:
        """Produce `record` to `topic` under `key` and wait for the broker's acknowledgement."""
        done = threading.Event()
        outcome: list[KafkaError | None] = []

        def delivered(err: KafkaError | None, _: Message) -> None:
            outcome.append(err)
            done.set()

        try:
            value = self.serde.encode(topic, record)
        except Exception as exc:  # the registry is away or the contract is not registered
            raise DeliveryFailed(f"cannot encode the request: {exc}") from None
        try:
            self.producer.produce(topic, key=key, value=value, on_delivery=delivered)
        except BufferError:
            raise DeliveryFailed("the producer queue is full") from None
        if not done.wait(self.timeout_s + 1.0):
            raise DeliveryFailed(f"no acknowledgement from the broker within {self.timeout_s:.0f}s")
        if outcome[0] is not None:
            raise DeliveryFailed(outcome[0].str())

    def healthy(self, timeout_s: float) -> None:
        """Raises when the broker does not answer a metadata request in time."""
        self.producer.list_topics(self.topic, timeout=timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._poller.join(2)
        self.producer.flush(5)
